"""Read a message file (CSV or JSON Lines) into drafts: one result per data row.

The file is streamed line by line in binary, never held whole. Each bad row becomes a
:class:`Rejected` naming its line and field and never stops the rows after it; a file that
cannot be read at all (missing, UTF-16, a header without the required columns) raises
:class:`~delivery.errors.InputError` before any row. Pure: the caller stores the drafts
(and decides duplicates by source and external id) and writes the rejects.
"""

from __future__ import annotations

import csv
import enum
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from email_validator import EmailNotValidError, validate_email

from delivery.campaign import LANGUAGE_RE, is_country
from delivery.config import IntakeSettings
from delivery.errors import InputError
from delivery.models import MESSAGE_COLUMNS, Campaign, MessageDraft, MessageKind, Recipient

COLUMNS = MESSAGE_COLUMNS
REQUIRED_COLUMNS = (
    "external_id",
    "case",
    "to",
    "supporter_name",
    "supporter_country",
    "kind",
    "submitted_at",
)
REJECT_COLUMNS = ("line", "field", "reason")

_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc
_BODY_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # Cc but tab, LF, CR
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_LINE_BREAK = re.compile(r"\r\n?")
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_KINDS = ", ".join(kind.value for kind in MessageKind)


@dataclass(frozen=True, kw_only=True)
class Rejected:
    """A data row that was not imported, and why."""

    line: int  # 1-based physical line where the row starts (CSV header is line 1)
    field: str  # the offending column, or "row" when the row as a whole is bad
    reason: str
    raw: dict[str, str]  # what could be read of the row, for the fix-and-reimport file
    external_id: str


def read_messages(
    path: Path, *, source: str, campaign: Campaign, settings: IntakeSettings
) -> Iterator[MessageDraft | Rejected]:
    """Yield a draft or a :class:`Rejected` for each data row of the file at ``path``.

    The file is opened and its header checked now, so a missing file or a bad header
    raises :class:`InputError` at the call; the rows are read as the result is iterated.
    """
    context = _Context(name=path.name, source=source, campaign=campaign, settings=settings)
    with _open(path) as stream:
        kind = _detect_format(path, stream)
        if kind is _Format.CSV:
            feed = _LineFeed(stream, context.record_cap)
            _read_header(feed, csv.reader(feed), context)
    return _rows(path, kind, context)


def recipients_for(campaign: Campaign, case: str, to: str) -> tuple[Recipient, ...]:
    """The recipients ``to`` names in ``case``: one by slug, or all of a kind."""
    found = campaign.case(case)
    if found is None:
        return ()
    by_slug = tuple(r for r in found.recipients if r.slug == to)
    return by_slug or tuple(r for r in found.recipients if r.kind == to)


def write_rejects(path: Path, rejected: Iterable[Rejected]) -> int:
    """Write rejects as CSV (line, field, reason, then the row's columns); return the count.

    Cells that a spreadsheet would run as a formula get a leading single quote. Raw columns
    named like the reject columns are left out: they come from an earlier reject file. The
    rejects are gathered before writing, since the header needs every row's columns.
    """
    rows = list(rejected)
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(k for k in row.raw if k not in REJECT_COLUMNS))
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([_cell(name) for name in (*REJECT_COLUMNS, *columns)])
        for row in rows:
            cells = (str(row.line), row.field, row.reason, *(row.raw.get(c, "") for c in columns))
            writer.writerow([_cell(value) for value in cells])
    return len(rows)


def _cell(value: str) -> str:
    value = _SURROGATE.sub("\ufffd", value)
    return f"'{value}" if value.startswith(_FORMULA_STARTS) else value


class _Format(enum.Enum):
    CSV = "csv"
    JSONL = "jsonl"


@dataclass(frozen=True, kw_only=True)
class _Context:
    name: str
    source: str
    campaign: Campaign
    settings: IntakeSettings

    @property
    def record_cap(self) -> int:
        """Bytes beyond which a record cannot be a valid row (8 bytes a character is ample)."""
        chars = self.settings.max_body_chars + 64 * self.settings.max_field_chars
        return 8 * chars + 65_536


class _TooLongError(Exception):
    def __init__(self, cap: int) -> None:
        super().__init__(f"the row is longer than {cap} bytes (an unclosed quote?)")


def _open(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise InputError(f"{path}: message file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a message file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the message file: {exc.strerror}") from None


def _detect_format(path: Path, stream: BinaryIO) -> _Format:
    if stream.read(2) in _UTF16_BOMS:
        raise InputError(f"{path.name}: the file is UTF-16 text; save it as UTF-8")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        kind = _Format.CSV
    elif suffix in (".jsonl", ".ndjson"):
        kind = _Format.JSONL
    else:
        kind = _Format.JSONL if _first_non_blank(stream) == b"{" else _Format.CSV
    stream.seek(0)
    return kind


def _first_non_blank(stream: BinaryIO) -> bytes:
    stream.seek(0)
    first = True
    while chunk := stream.read(65_536):
        if first:
            chunk, first = chunk.removeprefix(_BOM), False
        rest = chunk.lstrip(b" \t\r\n")
        if rest:
            return rest[:1]
    return b""


def _rows(path: Path, kind: _Format, context: _Context) -> Iterator[MessageDraft | Rejected]:
    with _open(path) as stream:
        if kind is _Format.CSV:
            yield from _csv_rows(stream, context)
        else:
            yield from _jsonl_rows(stream, context)


# --- CSV -------------------------------------------------------------------------------


class _LineFeed:
    """Physical lines of a binary stream, decoded for the csv module, one record at a time.

    Remembers where the current record starts, its lines (for a strict re-read) and the
    first byte that is not UTF-8; a record longer than ``cap`` bytes is cut off.
    """

    def __init__(self, stream: BinaryIO, cap: int) -> None:
        self._stream = stream
        self._cap = cap
        self._size = 0
        self.line = 0
        self.start = 1
        self.lines: list[str] = []
        self.bad_utf8 = ""

    def begin(self) -> None:
        self.start = self.line + 1
        self.lines = []
        self._size = 0
        self.bad_utf8 = ""

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        raw = self._stream.readline(self._cap + 1)
        if not raw:
            raise StopIteration
        self.line += 1
        if self.line == 1:
            raw = raw.removeprefix(_BOM)
        self._size += len(raw)
        if self._size > self._cap:
            _skip_rest_of_line(self._stream, raw)
            raise _TooLongError(self._cap)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            if not self.bad_utf8:
                self.bad_utf8 = _utf8_problem(raw, exc, self.line)
            text = raw.decode("utf-8", "surrogateescape")
        self.lines.append(text)
        return text


def _skip_rest_of_line(stream: BinaryIO, read: bytes) -> None:
    while read and not read.endswith(b"\n"):
        read = stream.readline(65_536)


def _utf8_problem(raw: bytes, exc: UnicodeDecodeError, line: int) -> str:
    return f"byte 0x{raw[exc.start]:02x} at byte offset {exc.start} of line {line}"


def _read_header(feed: _LineFeed, reader: Iterator[list[str]], context: _Context) -> list[str]:
    try:
        cells: list[str] = []
        while not any(cell.strip() for cell in cells):
            feed.begin()
            cells = next(reader)
    except StopIteration:
        raise InputError(f"{context.name}: the file is empty (no header line)") from None
    except (csv.Error, _TooLongError) as exc:
        raise InputError(f"{context.name}: the header line cannot be read: {exc}") from None
    if feed.bad_utf8:
        raise InputError(f"{context.name}: the header is not UTF-8 ({feed.bad_utf8})")
    names = [_column_name(cell, index) for index, cell in enumerate(cells)]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        listed = ", ".join(f"'{name}'" for name in repeated)
        raise InputError(f"{context.name}: header repeats column(s) {listed}")
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        listed = ", ".join(f"'{name}'" for name in missing)
        raise InputError(f"{context.name}: header lacks column(s) {listed}")
    return names


def _column_name(label: str, index: int) -> str:
    name = unicodedata.normalize("NFC", label.strip())
    if name.lower() in COLUMNS:
        return name.lower()
    return name or f"column_{index + 1}"


def _csv_rows(stream: BinaryIO, context: _Context) -> Iterator[MessageDraft | Rejected]:
    feed = _LineFeed(stream, context.record_cap)
    reader = csv.reader(feed)
    header = _read_header(feed, reader, context)
    while True:
        feed.begin()
        try:
            cells = next(reader)
        except StopIteration:
            return
        except (csv.Error, _TooLongError) as exc:
            span = f"lines {feed.start}-{feed.line}" if feed.line > feed.start else "the line"
            reason = f"{span} cannot be read as a CSV row: {exc}"
            yield Rejected(line=feed.start, field="row", reason=reason, raw={}, external_id="")
            continue
        if any(cell.strip() for cell in cells):
            yield _csv_result(header, cells, feed, context)


def _csv_result(
    header: list[str], cells: list[str], feed: _LineFeed, context: _Context
) -> MessageDraft | Rejected:
    raw = {
        header[i] if i < len(header) else f"column_{i + 1}": _SURROGATE.sub("\ufffd", cell)
        for i, cell in enumerate(cells)
    }
    problem = ""
    if feed.bad_utf8:
        column = next((h for h, c in zip(header, cells, strict=False) if _SURROGATE.search(c)), "")
        where = f" in column '{column}'" if column else ""
        problem = f"invalid UTF-8{where} ({feed.bad_utf8})"
    elif any('"' in line for line in feed.lines) and (error := _quoting_error(feed.lines)):
        span = f"lines {feed.start}-{feed.line}" if feed.line > feed.start else "the line"
        problem = f"badly quoted CSV ({span} read as one row): {error}"
    elif len(cells) > len(header):
        problem = f"row has {len(cells)} cells, header has {len(header)}"
    if problem:
        external_id = raw.get("external_id", "").strip()
        return Rejected(
            line=feed.start, field="row", reason=problem, raw=raw, external_id=external_id
        )
    fields = dict.fromkeys(header, "") | dict(zip(header, cells, strict=False))
    return _draft(fields, feed.start, context)


def _quoting_error(lines: list[str]) -> str:
    """Re-read a record strictly: catches an unclosed quote and text after a closing one."""
    try:
        for _ in csv.reader(lines, strict=True):
            pass
    except csv.Error as exc:
        return str(exc)
    return ""


# --- JSON Lines ------------------------------------------------------------------------


def _jsonl_rows(stream: BinaryIO, context: _Context) -> Iterator[MessageDraft | Rejected]:
    cap = context.record_cap
    line = 0
    while raw := stream.readline(cap + 1):
        line += 1
        if line == 1:
            raw = raw.removeprefix(_BOM)
        if len(raw) > cap:
            _skip_rest_of_line(stream, raw)
            yield _rejected_row(line, str(_TooLongError(cap)), {})
        elif raw.strip():
            yield _json_result(raw, line, context)


def _rejected_row(line: int, reason: str, raw: dict[str, str]) -> Rejected:
    external_id = raw.get("external_id", "").strip()
    return Rejected(line=line, field="row", reason=reason, raw=raw, external_id=external_id)


def _json_result(raw: bytes, line: int, context: _Context) -> MessageDraft | Rejected:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        readable = _json_fields(_parse_json(raw.decode("utf-8", "replace")))[0]
        return _rejected_row(line, f"invalid UTF-8 ({_utf8_problem(raw, exc, line)})", readable)
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except ValueError as exc:
        return _rejected_row(line, f"not valid JSON: {exc}", {})
    if not isinstance(value, dict):
        return _rejected_row(line, f"the line is {_json_type(value)}, not a JSON object", {})
    fields, problems = _json_fields(value)
    if problems:
        return _rejection(problems, fields, line)
    return _draft(fields, line, context)


def _parse_json(text: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key '{key}' appears twice")
        result[key] = value
    return result


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number JSON allows")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, str):
        return "text"
    if isinstance(value, int | float):
        return "a number"
    return "an array" if isinstance(value, list) else "an object"


def _json_fields(value: dict[str, object]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    fields: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    for index, (key, item) in enumerate(value.items()):
        name = _column_name(key, index)
        if name in fields:
            problems.append((name, "appears twice (keys differ only in case or spaces)"))
        if item is None:
            fields[name] = ""
        elif isinstance(item, str):
            fields[name] = item
        elif isinstance(item, int | float) and not isinstance(item, bool):
            fields[name] = str(item)
        else:
            fields[name] = json.dumps(item, ensure_ascii=False)
            problems.append((name, f"must be text or a number, not {_json_type(item)}"))
    return fields, problems


# --- one row -----------------------------------------------------------------------------


def _rejection(problems: list[tuple[str, str]], fields: Mapping[str, str], line: int) -> Rejected:
    (field, reason), rest = problems[0], problems[1:]
    if rest:
        reason += "; also " + "; ".join(f"{name}: {text}" for name, text in rest)
    raw = {name: _SURROGATE.sub("\ufffd", value) for name, value in fields.items()}
    external_id = raw.get("external_id", "").strip()
    return Rejected(line=line, field=field, reason=reason, raw=raw, external_id=external_id)


def _draft(fields: Mapping[str, str], line: int, context: _Context) -> MessageDraft | Rejected:
    row = _Row(fields, context.settings)
    external_id = row.text("external_id", required=True)
    case = row.text("case", required=True).lower()
    to = row.text("to", required=True).lower()
    row.check_target(context.campaign, case, to)
    supporter_name = row.text("supporter_name", required=True)
    supporter_email = row.email("supporter_email")
    supporter_city = row.text("supporter_city")
    supporter_country = row.country("supporter_country")
    language = row.language("language")
    kind = row.kind("kind")
    body = row.body(kind)
    submitted_at = row.timestamp("submitted_at")
    event = row.text("event")
    metadata = {name: row.text(name) for name in fields if name not in COLUMNS}
    if row.problems or kind is None or submitted_at is None:
        return _rejection(row.problems, fields, line)
    return MessageDraft(
        source=context.source,
        external_id=external_id,
        line=line,
        case=case,
        to=to,
        supporter_name=supporter_name,
        supporter_email=supporter_email,
        supporter_city=supporter_city,
        supporter_country=supporter_country,
        language=language,
        kind=kind,
        body=body,
        submitted_at=submitted_at,
        event=event,
        metadata=metadata,
    )


# Fields stored in columns of a fixed width (PostgreSQL enforces it, SQLite would not):
# longer values are refused here, whatever intake.max_field_chars allows.
STORED_CHARS = {"external_id": 200, "language": 35}
SOURCE_CHARS = 200


class _Row:
    """Checks and cleans the fields of one row, collecting (field, reason) problems."""

    def __init__(self, fields: Mapping[str, str], settings: IntakeSettings) -> None:
        self.fields = fields
        self.settings = settings
        self.problems: list[tuple[str, str]] = []

    def problem(self, field: str, reason: str) -> None:
        self.problems.append((field, reason))

    def _clean(self, name: str, control: re.Pattern[str]) -> str | None:
        value = self.fields.get(name, "")
        bad = control.search(value) or _SURROGATE.search(value)
        if bad is not None:
            code = ord(bad.group())
            what = "a NUL character" if code == 0 else "a control character"
            if _SURROGATE.match(bad.group()):
                what = "a lone surrogate (not Unicode text)"
            self.problem(name, f"contains {what} (U+{code:04X}) at character {bad.start() + 1}")
            return None
        return unicodedata.normalize("NFC", value).strip()

    def text(self, name: str, *, required: bool = False) -> str:
        value = self._clean(name, _CONTROL)
        if value is None:
            return ""
        if required and not value:
            self.problem(name, "is required")
        limit = self.settings.max_field_chars
        if name in STORED_CHARS:
            limit = min(limit, STORED_CHARS[name])
        if len(value) > limit:
            self.problem(name, f"has {len(value)} characters, the limit is {limit}")
        return value

    def check_target(self, campaign: Campaign, case: str, to: str) -> None:
        if case and campaign.case(case) is None:
            self.problem("case", f"unknown case '{case}'")
        elif case and to and not recipients_for(campaign, case, to):
            self.problem("to", f"'{to}' names no recipient of case '{case}'")

    def email(self, name: str) -> str:
        value = self.text(name)
        if not value:
            return ""
        try:
            return validate_email(value, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            self.problem(name, f"'{value}' is not a valid e-mail address: {exc}")
            return value

    def country(self, name: str) -> str:
        value = self.text(name, required=True).upper()
        if value and not is_country(value):
            self.problem(name, f"'{value}' is not an ISO 3166-1 alpha-2 country code")
        return value

    def language(self, name: str) -> str:
        value = self.text(name)
        if value and not LANGUAGE_RE.fullmatch(value):
            self.problem(name, f"'{value}' is not a BCP 47 language tag (e.g. 'pl', 'pt-BR')")
        return value or "und"

    def kind(self, name: str) -> MessageKind | None:
        value = self.text(name, required=True).lower()
        if not value:
            return None
        try:
            return MessageKind(value)
        except ValueError:
            self.problem(name, f"'{value}' is not a message kind ({_KINDS})")
            return None

    def body(self, kind: MessageKind | None) -> str:
        value = self._clean("body", _BODY_CONTROL)
        if value is None:
            return ""
        value = _LINE_BREAK.sub("\n", value)
        if kind is MessageKind.SIGNATURE and value:
            self.problem("body", "a signature has no body")
        elif kind is not None and kind.needs_body and not value:
            self.problem("body", f"is required for a {kind}")
        limit = self.settings.max_body_chars
        if len(value) > limit:
            self.problem("body", f"has {len(value)} characters, the limit is {limit}")
        return value

    def timestamp(self, name: str) -> datetime | None:
        value = self.text(name, required=True)
        if not value:
            return None
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            self.problem(name, f"'{value}' is not an ISO 8601 date-time (2026-12-14T10:02:00Z)")
            return None
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
