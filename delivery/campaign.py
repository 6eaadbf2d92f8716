"""Load a campaign file (TOML) into the frozen campaign model.

The file names the organisation, its cases and, for each case, the recipients messages are
delivered to (see ``tests/fixtures/campaign_reference.toml``). Every problem in the file is
collected and reported together in one :class:`CampaignFileError`, one line per problem,
each naming the file, the case, the recipient and the field. Pure: no database.
"""

from __future__ import annotations

import difflib
import enum
import functools
import re
import tomllib
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time
from pathlib import Path
from typing import TypeVar

import pycountry
from email_validator import EmailNotValidError, validate_email

from delivery.errors import CampaignError
from delivery.models import (
    Address,
    Cadence,
    Campaign,
    Case,
    ChannelName,
    Fallback,
    Format,
    MessageKind,
    Organisation,
    Recipient,
    RecipientKind,
)

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
E164_RE = re.compile(r"^\+[1-9][0-9]{7,14}$")
LANGUAGE_RE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")

_ORGANISATION_KEYS = frozenset({"name", "email", "reply_to", "bounce_domain", "address"})
_ADDRESS_KEYS = frozenset({"name", "street", "city", "postal_code", "country", "region"})
_CASE_KEYS = frozenset(
    {
        "slug",
        "name",
        "country",
        "summary",
        "demand",
        "auto_approve",
        "danger_words",
        "fallback",
        "recipient",
    }
)
_RECIPIENT_KEYS = frozenset(
    {
        "slug",
        "kind",
        "name",
        "language",
        "email",
        "fax",
        "channels",
        "format",
        "cadence",
        "address",
        "prisoner_number",
        "facility",
        "page_limit",
    }
)
_CHANNEL_NEEDS = {ChannelName.EMAIL: "email", ChannelName.FAX: "fax", ChannelName.POST: "address"}

_E = TypeVar("_E", bound=enum.StrEnum)


class CampaignFileError(CampaignError):
    """A campaign file with problems; ``problems`` holds one line per problem."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            text = self.problems[0]
        else:
            lines = "\n".join(f"  {p}" for p in self.problems)
            text = f"{source}: {len(self.problems)} problems:\n{lines}"
        super().__init__(text)


def load_campaign(path: Path) -> Campaign:
    """Read and validate the campaign file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CampaignError(f"{path}: campaign file not found") from None
    except UnicodeDecodeError as exc:
        raise CampaignError(f"{path}: not UTF-8 text (byte offset {exc.start})") from None
    except OSError as exc:
        raise CampaignError(f"{path}: cannot read the campaign file: {exc.strerror}") from None
    return parse_campaign(text, source=path.name)


def parse_campaign(text: str, *, source: str) -> Campaign:
    """Validate campaign TOML ``text``; ``source`` names the file in problem messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CampaignFileError(source, [f"{source}: not valid TOML: {exc}"]) from None
    problems = _Problems(source)
    top = _Table(problems, data, "")
    organisation = _organisation(top)
    cases = _cases(top)
    top.reject_unknown(frozenset({"organisation", "case"}))
    _check_unique_slugs(problems, cases)
    if problems.lines or organisation is None:  # no organisation is a problem recorded
        raise CampaignFileError(source, problems.lines)
    return Campaign(organisation=organisation, cases=tuple(cases))


def is_country(code: str) -> bool:
    """True when ``code`` is an ISO 3166-1 alpha-2 country code (upper-case)."""
    return code in _country_codes()


@functools.cache
def _country_codes() -> frozenset[str]:
    return frozenset(str(country.alpha_2) for country in pycountry.countries)


class _Problems:
    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: list[str] = []

    def add(self, where: str, field: str, text: str) -> None:
        place = f"{where}, field '{field}'" if where else f"field '{field}'"
        self.lines.append(f"{self.source}: {place}: {text}")


class _Table:
    """One TOML table being read, and where it sits in the file, for problem messages."""

    def __init__(
        self, problems: _Problems, data: Mapping[str, object], where: str, prefix: str = ""
    ) -> None:
        self.problems = problems
        self.data = data
        self.where = where
        self.prefix = prefix

    def problem(self, key: str, text: str) -> None:
        self.problems.add(self.where, self.prefix + key, text)

    def has(self, key: str) -> bool:
        return self.data.get(key) not in (None, "", [])

    def reject_unknown(self, known: frozenset[str]) -> None:
        """Extra fields are allowed; one that looks like a misspelt field is not."""
        for key in self.data:
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.85)
            if key not in known and close:
                self.problem(key, f"is not a field of this table; did you mean {close[0]!r}?")

    def text(self, key: str, *, required: bool = True) -> str:
        value = self.data.get(key)
        if value is None or value == "":
            if required:
                self.problem(key, "is required")
            return ""
        if not isinstance(value, str):
            self.problem(key, f"must be text, not {_toml_type(value)}")
            return ""
        return value.strip()

    def slug(self) -> str:
        value = self.text("slug")
        if value and not SLUG_RE.fullmatch(value):
            self.problem(
                "slug",
                f"'{value}' is not a slug (lower-case letters, digits and '-', "
                "at most 63 characters, not starting with '-')",
            )
        return value

    def email(self, key: str, *, required: bool = True) -> str:
        value = self.text(key, required=required)
        if not value:
            return ""
        try:
            return validate_email(value, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            self.problem(key, f"'{value}' is not a valid e-mail address: {exc}")
            return ""

    def country(self, key: str) -> str:
        value = self.text(key)
        if value and not is_country(value.upper()):
            self.problem(key, f"'{value}' is not an ISO 3166-1 alpha-2 country code")
        return value.upper()

    def language(self, key: str) -> str:
        value = self.text(key)
        if value and not LANGUAGE_RE.fullmatch(value):
            self.problem(key, f"'{value}' is not a BCP 47 language tag (e.g. 'ru', 'pt-BR')")
        return value

    def fax(self, key: str) -> str:
        value = self.text(key, required=False)
        if value and not E164_RE.fullmatch(value):
            self.problem(key, f"'{value}' is not an E.164 number (+ and 8 to 15 digits)")
        return value

    def choice(self, key: str, kind: type[_E], default: _E | None = None) -> _E:
        value = self.text(key, required=default is None)
        if not value:
            return default if default is not None else _placeholder(kind)
        member = self._member(key, value, kind)
        return _placeholder(kind) if member is None else member

    def choices(self, key: str, kind: type[_E], *, allow_empty: bool = False) -> tuple[_E, ...]:
        members: list[_E] = []
        seen: set[str] = set()
        for value in self.strings(key, required=not allow_empty):
            if value in seen:
                self.problem(key, f"'{value}' is listed more than once")
                continue
            seen.add(value)
            member = self._member(key, value, kind)
            if member is not None:
                members.append(member)
        return tuple(members)

    def strings(self, key: str, *, required: bool = False) -> tuple[str, ...]:
        value = self.data.get(key)
        if value is None:
            if required:
                self.problem(key, "is required (a list)")
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            self.problem(key, f"must be a list of non-empty text values, not {value!r}")
            return ()
        if required and not value:
            self.problem(key, "must not be empty")
        return tuple(str(v).strip() for v in value)

    def positive_int(self, key: str) -> int | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.problem(key, f"{_show(value)} is not a positive integer")
            return None
        return value

    def subtable(self, key: str, *, required: bool) -> _Table | None:
        value = self.data.get(key)
        if value is None:
            if required:
                self.problem(key, "is required (a table)")
            return None
        if not isinstance(value, dict):
            self.problem(key, f"must be a table, not {_toml_type(value)}")
            return None
        return _Table(self.problems, value, self.where, f"{self.prefix}{key}.")

    def _member(self, key: str, value: str, kind: type[_E]) -> _E | None:
        try:
            return kind(value)
        except ValueError:
            allowed = ", ".join(m.value for m in kind)
            noun = _ENUM_NOUNS.get(kind, "value")
            self.problem(key, f"'{value}' is not a {noun} ({allowed})")
            return None


_ENUM_NOUNS: Mapping[type[enum.StrEnum], str] = {
    RecipientKind: "recipient kind",
    ChannelName: "channel",
    Format: "format",
    Cadence: "cadence",
    MessageKind: "message kind",
}


def _placeholder(kind: type[_E]) -> _E:
    """A stand-in for a bad value; a problem is already recorded, so it is never returned."""
    return next(iter(kind))


def _toml_type(value: object) -> str:
    names: list[tuple[type, str]] = [
        (bool, "true/false"),
        (int, "a number"),
        (float, "a number"),
        (str, "text"),
        (list, "a list"),
        (dict, "a table"),
        (datetime, "a date-time"),
        (date, "a date"),
        (time, "a time"),
    ]
    return next((name for cls, name in names if isinstance(value, cls)), type(value).__name__)


def _show(value: object) -> str:
    return f"'{value}'" if isinstance(value, str) else repr(value)


def _organisation(top: _Table) -> Organisation | None:
    found = top.subtable("organisation", required=True)
    if found is None:
        return None
    table = _Table(found.problems, found.data, "organisation")
    name = table.text("name")
    email = table.email("email")
    reply_to = table.email("reply_to", required=False) or email
    organisation = Organisation(
        name=name,
        email=email,
        reply_to=reply_to,
        bounce_domain=_bounce_domain(table),
        address=_address(table, required=True) or _NO_ADDRESS,
    )
    table.reject_unknown(_ORGANISATION_KEYS)
    return organisation


def _bounce_domain(table: _Table) -> str:
    domain = table.text("bounce_domain")
    if not domain:
        return ""
    try:
        validate_email(f"bounces@{domain}", check_deliverability=False)
    except EmailNotValidError as exc:
        table.problem("bounce_domain", f"'{domain}' is not a mail domain: {exc}")
    return domain.lower()


_NO_ADDRESS = Address(name="", street="", city="", postal_code="", country="")


def _address(parent: _Table, *, required: bool) -> Address | None:
    table = parent.subtable("address", required=required)
    if table is None:
        return None
    address = Address(
        name=table.text("name"),
        street=table.text("street"),
        city=table.text("city"),
        postal_code=table.text("postal_code"),
        country=table.country("country"),
        region=table.text("region", required=False),
    )
    table.reject_unknown(_ADDRESS_KEYS)
    return address


def _array_of_tables(parent: _Table, key: str, shown: str) -> list[Mapping[str, object]]:
    value = parent.data.get(key)
    if value is None:
        parent.problem(key, f"is required: add at least one [[{shown}]] table")
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        parent.problem(key, f"must be an array of tables ([[{shown}]])")
        return []
    return value


def _label(data: Mapping[str, object], index: int) -> str:
    slug = data.get("slug")
    return f"'{slug}'" if isinstance(slug, str) and slug else f"#{index} (no slug)"


def _cases(top: _Table) -> list[Case]:
    cases = []
    for number, data in enumerate(_array_of_tables(top, "case", "case"), start=1):
        cases.append(_case(_Table(top.problems, data, f"case {_label(data, number)}")))
    return cases


def _case(table: _Table) -> Case:
    slug = table.slug()
    name = table.text("name")
    country = table.country("country")
    summary = table.text("summary")
    demand = table.text("demand")
    if "auto_approve" not in table.data:
        table.problem("auto_approve", "is required (a list of message kinds, may be empty)")
    auto_approve = frozenset(table.choices("auto_approve", MessageKind, allow_empty=True))
    danger_words = table.strings("danger_words")
    fallback = table.choice("fallback", Fallback, Fallback.REVIEW)
    recipients = []
    for number, data in enumerate(_array_of_tables(table, "recipient", "case.recipient"), 1):
        where = f"{table.where}, recipient {_label(data, number)}"
        recipients.append(_recipient(_Table(table.problems, data, where), slug))
    table.reject_unknown(_CASE_KEYS)
    return Case(
        slug=slug,
        name=name,
        country=country,
        summary=summary,
        demand=demand,
        auto_approve=auto_approve,
        danger_words=danger_words,
        recipients=tuple(recipients),
        fallback=fallback,
    )


def _recipient(table: _Table, case: str) -> Recipient:
    recipient = Recipient(
        case=case,
        slug=table.slug(),
        kind=table.choice("kind", RecipientKind),
        name=table.text("name"),
        language=table.language("language"),
        email=table.email("email", required=False),
        fax=table.fax("fax"),
        channels=table.choices("channels", ChannelName),
        format=table.choice("format", Format, Format.BUNDLE),
        cadence=table.choice("cadence", Cadence, Cadence.WEEKLY),
        address=_address(table, required=False),
        prisoner_number=table.text("prisoner_number", required=False),
        facility=table.text("facility", required=False),
        page_limit=table.positive_int("page_limit"),
        extra={key: value for key, value in table.data.items() if key not in _RECIPIENT_KEYS},
    )
    _check_channels(table, recipient)
    return recipient


def _check_channels(table: _Table, recipient: Recipient) -> None:
    for channel in recipient.channels:
        needed = _CHANNEL_NEEDS[channel]
        if not table.has(needed):
            table.problem("channels", f"'{channel}' is listed but the recipient has no {needed}")
    if recipient.format is Format.DIGEST and ChannelName.EMAIL not in recipient.channels:
        table.problem("format", "'digest' is sent by e-mail, but 'email' is not in channels")


def _check_unique_slugs(problems: _Problems, cases: list[Case]) -> None:
    case_seen: set[str] = set()
    recipient_seen: dict[str, str] = {}
    for case in cases:
        if case.slug and case.slug in case_seen:
            problems.add(f"case '{case.slug}'", "slug", "is used by more than one case")
        case_seen.add(case.slug)
        for recipient in case.recipients:
            if not recipient.slug:
                continue
            first = recipient_seen.get(recipient.slug)
            if first is None:
                recipient_seen[recipient.slug] = case.slug
            else:
                problems.add(
                    f"case '{case.slug}', recipient '{recipient.slug}'",
                    "slug",
                    f"is already used by another recipient (of case '{first}')",
                )
