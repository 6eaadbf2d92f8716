"""Post status files → envelope parts moved, with the file kept as evidence.

A print job's ``status.csv`` (see :mod:`delivery.channels.post`) comes back from the
mailroom or a print-and-post service with one row per envelope: posted, delivered or
returned. A row with only its envelope filled in (as the template is written) has
nothing to say yet and is skipped. The whole file is checked before anything is recorded;
a file with one bad row is refused with every problem named by file, line and field, and
nothing is applied, so the mailroom fixes the file and marks it again.

Each row then becomes a provider report about one envelope (a part of its delivery):
posted → accepted, delivered → delivered, returned → returned, and the recipient's postal
address is marked suspect with the reason. A report never moves an envelope backwards: a
late "posted" after "delivered" is only noted. The file, rewritten spreadsheet-safe, is
kept under ``evidence/post/`` by its hash, so marking the same file twice changes nothing
the second time; a row the first marking did not get to (it stopped half way) is still
applied.
"""

from __future__ import annotations

import csv
import enum
import hashlib
import io
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from delivery.channels.post import STATUS_COLUMNS, csv_document, spreadsheet_safe
from delivery.errors import InputError
from delivery.models import TRANSITIONS, ChannelName, DeliveryState, ProofLevel
from delivery.outbox import Artefact, Outbox
from delivery.store import Store
from delivery.store.tracking import Report

if TYPE_CHECKING:
    from _csv import Reader

REQUIRED_COLUMNS = ("envelope", "status")
MAX_FILE_BYTES = 10 * 1024 * 1024  # a status file has one short row per envelope
MAX_CELL_CHARS = 500
LISTED_PROBLEMS = 50  # problems one error lists; the rest are counted

_BOM = "\ufeff"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_DELIMITERS = (",", ";")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class PostStatus(enum.StrEnum):
    POSTED = "posted"  # handed to the post office
    DELIVERED = "delivered"  # the post office says it arrived
    RETURNED = "returned"  # it came back to the sender

    @property
    def state(self) -> DeliveryState:
        return _STATES[self]


_STATES = {
    PostStatus.POSTED: DeliveryState.ACCEPTED,
    PostStatus.DELIVERED: DeliveryState.DELIVERED,
    PostStatus.RETURNED: DeliveryState.RETURNED,
}
_STATUSES = ", ".join(s.value for s in PostStatus)


@dataclass(frozen=True, kw_only=True)
class Problem:
    """Why one row (or the header) of a status file cannot be marked."""

    line: int  # 1-based physical line where the row starts; the header is line 1
    field: str  # the column, "header" or "row"
    reason: str


@dataclass(frozen=True, kw_only=True)
class StatusRow:
    """One filled-in row: what the mailroom says about one envelope."""

    line: int
    envelope: str
    status: PostStatus | None  # None: the row is not filled in yet
    date: str = ""
    tracking_number: str = ""
    reason: str = ""
    signed_by: str = ""

    @property
    def proof(self) -> ProofLevel:
        """Posted with a tracking number or delivered: scanned; signed for: a receipt."""
        if self.status is PostStatus.DELIVERED:
            return ProofLevel.SIGNED_RECEIPT if self.signed_by else ProofLevel.CARRIER_SCAN
        if self.status is PostStatus.POSTED and self.tracking_number:
            return ProofLevel.CARRIER_SCAN
        return ProofLevel.NONE

    @property
    def detail(self) -> str:
        """The row in words, for the ledger: ``returned on 2024-05-31; reason: moved``."""
        said = [f"{self.status} on {self.date}" if self.date else str(self.status)]
        if self.tracking_number:
            said.append(f"tracking number {self.tracking_number}")
        if self.signed_by:
            said.append(f"signed for by {self.signed_by}")
        if self.reason:
            said.append(f"reason: {self.reason}")
        said.append(f"status file line {self.line}")
        return "; ".join(said)

    def report(self, evidence: Artefact) -> Report:
        state = self.status.state if self.status is not None else None
        return Report(
            ref=self.envelope,
            state=state,
            proof=self.proof,
            detail=self.detail,
            provider_ref=self.tracking_number,
            artefacts=(evidence,),
        )


@dataclass(frozen=True, kw_only=True)
class StatusFile:
    """A status file read: its rows, its problems, and every cell for the evidence copy."""

    rows: tuple[StatusRow, ...]
    problems: tuple[Problem, ...]
    named: tuple[tuple[int, str], ...]  # (line, envelope) of each row that says something
    table: tuple[tuple[str, ...], ...]  # header and rows as read, blank rows included

    def evidence(self) -> bytes:
        """The file as the project writes CSV: UTF-8 with BOM, commas, CRLF, no formulas."""
        return csv_document([[spreadsheet_safe(cell) for cell in row] for row in self.table])


@dataclass(kw_only=True)
class MarkReport:
    rows: int = 0  # envelope rows read, filled in or not
    outcomes: Counter[str] = field(default_factory=Counter)  # "accepted", "noted", ...
    suspect: list[str] = field(default_factory=list)  # "case/slug" whose address is now suspect
    evidence: str = ""  # the outbox path of the file kept as evidence

    def as_dict(self) -> dict[str, object]:
        return {
            "rows": self.rows,
            "outcomes": dict(self.outcomes),
            "suspect": self.suspect,
            "evidence": self.evidence,
        }


def mark(store: Store, outbox: Outbox, path: Path, *, actor: str) -> MarkReport:
    """Check every row of the status file at ``path``, then apply them all, or none.

    Raises :class:`InputError` listing each problem as ``<file>:<line>: <field>: <reason>``
    (an unknown envelope among them) before anything is recorded.
    """
    status = read_status(_read(path), name=path.name)
    problems = [*status.problems, *_unknown_envelopes(store, status.named)]
    if problems:
        raise InputError(problem_listing(path.name, problems))
    data = status.evidence()
    digest = hashlib.sha256(data).hexdigest()
    relpath = f"evidence/post/{digest[:32]}.csv"
    again = outbox.exists(relpath)  # this very file was marked before
    evidence = (
        Artefact(path=relpath, sha256=digest, size=len(data))
        if again
        else outbox.write(relpath, data)
    )
    result = MarkReport(evidence=relpath)
    for row in status.rows:
        result.rows += 1
        result.outcomes[_apply(store, row, evidence, again=again, actor=actor, result=result)] += 1
    return result


def read_status(data: bytes, *, name: str) -> StatusFile:
    """Read a status file's bytes; problems with its rows are collected, not raised.

    Raises :class:`InputError` when the file as a whole cannot be read: not UTF-8, no
    header, a header without the required columns.
    """
    text = _decode(data, name)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text))
    header, table = _header(reader, name)
    rows: list[StatusRow] = []
    problems: list[Problem] = []
    named: list[tuple[int, str]] = []
    for line, cells in _records(reader, problems):
        table.append(tuple(cells))
        row, checks = _row(header, cells, line)
        problems.extend(checks.problems)
        if checks.envelope:
            named.append((line, checks.envelope))
        if row is not None:
            rows.append(row)
    return StatusFile(
        rows=tuple(rows), problems=tuple(problems), named=tuple(named), table=tuple(table)
    )


def problem_listing(name: str, problems: Sequence[Problem]) -> str:
    """One line per problem, ``<file>:<line>: <field>: <reason>``, under a summary line."""
    count = len(problems)
    lines = [
        f"{name}: {count} problem{'s' if count != 1 else ''}; nothing was marked "
        "(fix the file and mark it again)"
    ]
    ordered = sorted(problems, key=lambda p: p.line)
    lines.extend(f"{name}:{p.line}: {p.field}: {p.reason}" for p in ordered[:LISTED_PROBLEMS])
    if count > LISTED_PROBLEMS:
        lines.append(f"{name}: … and {count - LISTED_PROBLEMS} more")
    return "\n".join(lines)


# --- reading ---------------------------------------------------------------------------


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"{path}: status file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a status file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the status file: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise InputError(f"{path.name}: larger than {MAX_FILE_BYTES} bytes; not a status file")
    return data


def _decode(data: bytes, name: str) -> str:
    if data.startswith(_UTF16_BOMS):
        raise InputError(f"{name}: the file is UTF-16 text; save it as CSV UTF-8")
    try:
        return data.decode("utf-8").removeprefix(_BOM)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(
            f"{name}:{line}: file: byte 0x{data[exc.start]:02x} is not UTF-8; "
            "save the file as CSV UTF-8"
        ) from None


def _delimiter(text: str) -> str:
    """Comma or semicolon: the one that splits the header into the required columns."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    best, cells = _DELIMITERS[0], 0
    for delimiter in _DELIMITERS:
        names = [_column(c) for c in next(csv.reader([first], delimiter=delimiter), [])]
        if all(column in names for column in REQUIRED_COLUMNS):
            return delimiter
        if len(names) > cells:
            best, cells = delimiter, len(names)
    return best


def _column(label: str) -> str:
    return unicodedata.normalize("NFC", label).strip().lower()


def _header(reader: Reader, name: str) -> tuple[list[str], list[tuple[str, ...]]]:
    """The column names, and the table so far: any blank lines, then the header."""
    table: list[tuple[str, ...]] = []
    for line, cells in _records(reader, []):
        table.append(tuple(cells))
        if any(cell.strip() for cell in cells):
            return _columns(cells, name, line), table
    raise InputError(f"{name}: the file is empty (no header line)")


def _columns(cells: list[str], name: str, line: int) -> list[str]:
    names = [_column(cell) for cell in cells]
    repeated = sorted({n for n in names if n in STATUS_COLUMNS and names.count(n) > 1})
    missing = [column for column in REQUIRED_COLUMNS if column not in names]
    problems = [
        *(
            Problem(line=line, field="header", reason=f"column '{n}' appears twice")
            for n in repeated
        ),
        *(Problem(line=line, field="header", reason=f"lacks column '{n}'") for n in missing),
    ]
    if problems:
        raise InputError(problem_listing(name, problems))
    return names


def _records(reader: Reader, problems: list[Problem]) -> Iterator[tuple[int, list[str]]]:
    """(first line, cells) of each record; a record the csv module cannot read ends the file."""
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            problems.append(Problem(line=start, field="row", reason=f"not CSV: {exc}"))
            return
        yield start, cells


def _row(header: list[str], cells: list[str], line: int) -> tuple[StatusRow | None, _Checks]:
    """The row read (None when it has nothing to mark, or problems), and what was checked."""
    fields = dict(zip(header, cells, strict=False))
    known = {column: fields.get(column, "") for column in STATUS_COLUMNS}
    checks = _Checks(line)
    if not any(value.strip() for value in known.values()):
        return None, checks  # a blank row, or one with only columns this file does not know
    if len(cells) > len(header) and any(c.strip() for c in cells[len(header) :]):
        checks.problem("row", f"has {len(cells)} cells, the header has {len(header)}")
    envelope = _unescaped(checks.text(known, "envelope"))
    if not envelope:
        checks.problem("envelope", "is required")
    rest = {column: checks.text(known, column) for column in STATUS_COLUMNS[2:]}
    status = checks.status(known["status"], filled=any(rest.values()))
    if known["status"].strip() or any(rest.values()):
        checks.envelope = envelope  # to be found in the store, even when the row is bad
    checks.date(rest["date"])
    if status is PostStatus.RETURNED and not rest["reason"]:
        checks.problem("reason", "is required when the envelope was returned (e.g. moved)")
    if rest["signed_by"] and status not in (None, PostStatus.DELIVERED):
        checks.problem("signed_by", "only a delivered envelope is signed for")
    if checks.problems:
        return None, checks
    return StatusRow(line=line, envelope=envelope, status=status, **rest), checks


def _unescaped(envelope: str) -> str:
    """The envelope id without the quote a spreadsheet-safe status template put before it."""
    if envelope.startswith("'") and envelope[1:].startswith(("=", "+", "-", "@")):
        return envelope[1:]
    return envelope


def _shown(value: str) -> str:
    """A cell quoted for an error message: control characters escaped, never a formula."""
    cut = value if len(value) <= 60 else value[:60] + "…"
    return repr(cut)


class _Checks:
    """The problems of one row, and the envelope it speaks of."""

    def __init__(self, line: int) -> None:
        self.line = line
        self.problems: list[Problem] = []
        self.envelope = ""

    def problem(self, field: str, reason: str) -> None:
        self.problems.append(Problem(line=self.line, field=field, reason=reason))

    def text(self, fields: dict[str, str], name: str) -> str:
        value = unicodedata.normalize("NFC", fields[name]).strip()
        bad = _CONTROL.search(value)
        if bad is not None:
            where = bad.start() + 1
            self.problem(
                name, f"contains a control character (U+{ord(bad.group()):04X}) at {where}"
            )
            return ""
        if len(value) > MAX_CELL_CHARS:
            self.problem(name, f"has {len(value)} characters, the limit is {MAX_CELL_CHARS}")
            return ""
        return value

    def status(self, value: str, *, filled: bool) -> PostStatus | None:
        word = value.strip().casefold()
        if not word:
            if filled:
                self.problem("status", f"is required when the row says anything ({_STATUSES})")
            return None
        try:
            return PostStatus(word)
        except ValueError:
            self.problem("status", f"{_shown(value.strip())} is not one of {_STATUSES}")
            return None

    def date(self, value: str) -> None:
        if not value:
            return
        try:
            datetime.fromisoformat(value)  # a date alone, too
        except ValueError:
            self.problem(
                "date",
                f"{_shown(value)} is not an ISO 8601 date (2024-05-31) or date and time "
                "(2024-05-31T14:05)",
            )


# --- applying --------------------------------------------------------------------------


def _unknown_envelopes(store: Store, named: Sequence[tuple[int, str]]) -> list[Problem]:
    return [
        Problem(
            line=line,
            field="envelope",
            reason=f"{_shown(envelope)} is no envelope of any print job",
        )
        for line, envelope in named
        if store.find_part(envelope, ChannelName.POST) is None
    ]


def _apply(
    store: Store,
    row: StatusRow,
    evidence: Artefact,
    *,
    again: bool,
    actor: str,
    result: MarkReport,
) -> str:
    """Report one row; what happened to it, in words."""
    if row.status is None:
        return "not filled in"
    report = row.report(evidence)
    delivery = store.find_part(row.envelope, ChannelName.POST)
    assert delivery is not None, f"envelope {row.envelope} was checked before"
    part = next(p for p in store.parts(delivery.id) if p.ref == row.envelope)
    moves = row.status.state in TRANSITIONS[part.state]
    if again and not moves:  # noted when this file was first marked
        return "already recorded"
    outcome = store.report(report, actor=actor)
    if row.status is PostStatus.RETURNED and outcome != "already recorded":
        if store.address_suspect(delivery.recipient_id) != row.reason:
            store.mark_address_suspect(delivery.recipient_id, row.reason, actor=actor)
        who = f"{delivery.case}/{delivery.slug}"
        if who not in result.suspect:
            result.suspect.append(who)
    if outcome == "noted" and moves:  # one envelope of several moved; the delivery waits
        return f"envelope {row.status.state}"
    return outcome
