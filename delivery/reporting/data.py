"""What a report says, read from the store: messages, countries, bundles, deliveries, ledger.

Every function here takes a :class:`~delivery.store.Store` and runs SQLAlchemy Core
selects over its tables; nothing is written. A :class:`Scope` narrows the report to one
case and a period of UTC days:

- messages (and their countries) count when they were imported in the period;
- bundles count when they were collected in the period;
- a delivery is shown when it was alive in the period: created before its end and last
  changed after its start, with the state it is in now;
- the timeline counts, per UTC day, the deliveries that reached each state that day, from
  the ledger's ``delivery.*`` events;
- what still waits (deliveries and messages) is what waits now.

The ledger head is always the whole ledger's, so a reader can tie the report to
``solidarity audit verify``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, func, literal, select, true
from sqlalchemy import case as when

from delivery.errors import NotFoundError
from delivery.models import DeliveryState, ProofLevel, ReviewState
from delivery.render.text import country_name, safe_label
from delivery.store import Store
from delivery.store.schema import bundles, cases, deliveries, ledger, messages, recipients

_S = DeliveryState
# Deliveries still on their way, with what each state means when no reason was recorded.
WAITING: Mapping[DeliveryState, str] = {
    _S.QUEUED: "waiting for its channel",
    _S.DEFERRED: "a transient failure; tried again with backoff",
    _S.HELD: "stopped by a caseworker",
    _S.UNKNOWN: "the provider may have it; a person settles it",
    _S.SPOOLED: "written to the outbox for a person or a later transport",
}
# Deliveries that did not arrive: they wait for a person until a decision is recorded.
NOT_ARRIVED = frozenset({_S.FAILED, _S.BOUNCED, _S.RETURNED})
# States the timeline leaves out: a hand-over under way lasts seconds.
TRANSIENT = frozenset({_S.SENDING})
PENDING_SHOWN = 500  # messages pending review listed one by one; the rest are counted
NO_DELIVERY = "no delivery"
UNFLAGGED = "(no rule: its kind waits for a caseworker)"


@dataclass(frozen=True, kw_only=True)
class Scope:
    """One case or all of them, and a period of whole UTC days (both ends included)."""

    case: str | None = None
    since: date | None = None
    until: date | None = None

    @property
    def start(self) -> datetime | None:
        return datetime.combine(self.since, time(), UTC) if self.since else None

    @property
    def end(self) -> datetime | None:
        """The first moment after the period (exclusive)."""
        return datetime.combine(self.until + timedelta(days=1), time(), UTC) if self.until else None

    def within(self, column: Any) -> ColumnElement[bool]:
        """``column`` (a UTC time) inside the period."""
        bounds = []
        if self.start is not None:
            bounds.append(column >= self.start)
        if self.end is not None:
            bounds.append(column < self.end)
        return and_(true(), *bounds)

    def as_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }


@dataclass(frozen=True, kw_only=True)
class MessageCounts:
    """Messages of one case (or all) by review state."""

    case: str
    name: str
    approved: int = 0
    rejected: int = 0
    held: int = 0
    pending: int = 0

    @property
    def received(self) -> int:
        return self.approved + self.rejected + self.held + self.pending

    def counts(self) -> dict[str, int]:
        return {
            "received": self.received,
            "approved": self.approved,
            "rejected": self.rejected,
            "held": self.held,
            "pending": self.pending,
        }

    def as_dict(self) -> dict[str, Any]:
        return {"case": self.case, "name": self.name, **self.counts()}


@dataclass(frozen=True, kw_only=True)
class CountryCount:
    code: str  # ISO 3166-1 alpha-2, as imported
    name: str  # English
    count: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class RecipientRef:
    case: str
    slug: str
    name: str

    @property
    def label(self) -> str:
        return f"{self.case}/{self.slug}"


@dataclass(frozen=True, kw_only=True)
class BundleTotals:
    """One recipient's bundles in the period."""

    recipient: RecipientRef
    bundles: int
    failed: int
    pages: int
    messages: int

    def as_dict(self) -> dict[str, Any]:
        return {
            **_recipient_dict(self.recipient),
            "bundles": self.bundles,
            "failed": self.failed,
            "pages": self.pages,
            "messages": self.messages,
        }


@dataclass(frozen=True, kw_only=True)
class DeliveryLine:
    """One delivery as it stands now."""

    id: str
    recipient: RecipientRef
    channel: str
    state: DeliveryState
    proof: ProofLevel
    provider_ref: str
    last_error: str
    resolution: str
    created_at: datetime
    updated_at: datetime

    @property
    def waiting(self) -> bool:
        """Still on its way, or did not arrive and nobody decided yet."""
        return self.state in WAITING or (self.state in NOT_ARRIVED and not self.resolution)

    @property
    def reason(self) -> str:
        """Why it waits: the recorded error, else what its state means."""
        if self.last_error:
            return self.last_error
        if self.state in NOT_ARRIVED:
            return "did not arrive; a person decides what next"
        return WAITING.get(self.state, "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            **_recipient_dict(self.recipient),
            "channel": self.channel,
            "state": str(self.state),
            "proof": self.proof.label,
            "proof_level": int(self.proof),
            "provider_ref": self.provider_ref,
            "last_error": self.last_error,
            "resolution": self.resolution,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True, kw_only=True)
class RecipientProof:
    """The strongest proof any delivery to one recipient has, and that delivery's state."""

    recipient: RecipientRef
    proof: ProofLevel
    state: str  # a delivery state, or NO_DELIVERY
    channel: str

    def as_dict(self) -> dict[str, Any]:
        return {
            **_recipient_dict(self.recipient),
            "proof": self.proof.label,
            "proof_level": int(self.proof),
            "state": self.state,
            "channel": self.channel,
        }


@dataclass(frozen=True, kw_only=True)
class PendingMessage:
    """A message waiting for a caseworker, with the rules that flagged it (no supporter text)."""

    id: int
    source: str
    external_id: str
    case: str
    kind: str
    rules: tuple[str, ...]
    imported_at: datetime

    def as_dict(self) -> dict[str, Any]:
        when_imported = self.imported_at.isoformat()
        return {**asdict(self), "rules": list(self.rules), "imported_at": when_imported}


@dataclass(frozen=True, kw_only=True)
class LedgerHead:
    events: int
    last_seq: int
    last_hash: str
    last_at: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class Report:
    """Everything the formats show; :meth:`as_dict` is the JSON report."""

    organisation: str
    scope: Scope
    generated_at: datetime
    cases: tuple[tuple[str, str], ...]  # (slug, name) of the cases reported on
    messages: tuple[MessageCounts, ...]  # one per case
    countries: tuple[CountryCount, ...]  # most messages first
    bundles: tuple[BundleTotals, ...]
    deliveries: tuple[DeliveryLine, ...]
    timeline: Mapping[str, Mapping[str, int]]  # UTC day → state → deliveries that reached it
    proof: tuple[RecipientProof, ...]
    pending_messages: tuple[PendingMessage, ...]  # the first PENDING_SHOWN
    pending_rules: Mapping[str, int]  # rule → pending messages it flagged
    ledger: LedgerHead

    @property
    def totals(self) -> MessageCounts:
        return MessageCounts(
            case="all",
            name="All cases",
            approved=sum(m.approved for m in self.messages),
            rejected=sum(m.rejected for m in self.messages),
            held=sum(m.held for m in self.messages),
            pending=sum(m.pending for m in self.messages),
        )

    @property
    def waiting(self) -> tuple[DeliveryLine, ...]:
        return tuple(d for d in self.deliveries if d.waiting)

    def as_dict(self) -> dict[str, Any]:
        return {
            "organisation": self.organisation,
            "scope": self.scope.as_dict(),
            "generated_at": self.generated_at.isoformat(),
            "cases": [{"slug": slug, "name": name} for slug, name in self.cases],
            "messages": {
                "total": self.totals.counts(),
                "by_case": {m.case: m.as_dict() for m in self.messages},
            },
            "countries": [c.as_dict() for c in self.countries],
            "bundles": [b.as_dict() for b in self.bundles],
            "deliveries": [d.as_dict() for d in self.deliveries],
            "timeline": {day: dict(states) for day, states in self.timeline.items()},
            "proof": [p.as_dict() for p in self.proof],
            "waiting": {
                "deliveries": [{**d.as_dict(), "reason": d.reason} for d in self.waiting],
                "review": {
                    "total": self.totals.pending,
                    "by_rule": dict(self.pending_rules),
                    "messages": [m.as_dict() for m in self.pending_messages],
                },
            },
            "ledger": self.ledger.as_dict(),
        }


def _recipient_dict(recipient: RecipientRef) -> dict[str, str]:
    return {"case": recipient.case, "recipient": recipient.slug, "recipient_name": recipient.name}


# -- queries ------------------------------------------------------------------------------


def build_report(store: Store, scope: Scope, *, now: datetime | None = None) -> Report:
    """Read everything the report shows; NotFoundError for a case that is not loaded."""
    organisation = store.campaign().organisation.name
    with store.engine.connect() as conn:
        case_names = _cases(conn, scope)
        people = _recipients(conn, scope)
        lines = _deliveries(conn, scope, people)
        return Report(
            organisation=organisation,
            scope=scope,
            generated_at=(now or datetime.now(UTC)).astimezone(UTC),
            cases=tuple(case_names.items()),
            messages=_message_counts(conn, scope, case_names),
            countries=_countries(conn, scope),
            bundles=_bundles(conn, scope, people),
            deliveries=lines,
            timeline=_timeline(conn, scope),
            proof=_proof(people, lines),
            pending_messages=_pending(conn, scope),
            pending_rules=_pending_rules(conn, scope),
            ledger=_ledger_head(conn),
        )


def _cases(conn: Connection, scope: Scope) -> dict[str, str]:
    query = select(cases.c.slug, cases.c.data)
    if scope.case is not None:
        query = query.where(cases.c.slug == scope.case)
    # sorted here, by code point as SQLite does: a PostgreSQL collation may differ
    rows = sorted(conn.execute(query).all(), key=lambda r: str(r[0]))
    found = {str(slug): str(data.get("name", slug)) for slug, data in rows}
    if scope.case is not None and not found:
        raise NotFoundError(f"case {scope.case!r}: not in the loaded campaign")
    return found


def _recipients(conn: Connection, scope: Scope) -> dict[int, RecipientRef]:
    query = select(recipients.c.id, recipients.c.case_slug, recipients.c.slug, recipients.c.data)
    if scope.case is not None:
        query = query.where(recipients.c.case_slug == scope.case)
    return {
        int(rid): RecipientRef(
            case=str(case), slug=str(slug), name=safe_label(str(data.get("name", slug)))
        )
        for rid, case, slug, data in conn.execute(query.order_by(recipients.c.id))
    }


def _message_scope(scope: Scope) -> ColumnElement[bool]:
    where = scope.within(messages.c.imported_at)
    if scope.case is not None:
        where = and_(where, messages.c.case_slug == scope.case)
    return where


def _message_counts(
    conn: Connection, scope: Scope, case_names: Mapping[str, str]
) -> tuple[MessageCounts, ...]:
    counts: dict[str, dict[str, int]] = {slug: {} for slug in case_names}
    query = (
        select(messages.c.case_slug, messages.c.review_state, func.count())
        .where(_message_scope(scope))
        .group_by(messages.c.case_slug, messages.c.review_state)
    )
    for case, state, count in conn.execute(query):
        counts.setdefault(str(case), {})[str(state)] = int(count)
    return tuple(
        MessageCounts(
            case=case,
            name=case_names.get(case, case),
            approved=by_state.get(ReviewState.APPROVED, 0),
            rejected=by_state.get(ReviewState.REJECTED, 0),
            held=by_state.get(ReviewState.HELD, 0),
            pending=by_state.get(ReviewState.PENDING, 0),
        )
        for case, by_state in sorted(counts.items())
    )


def _countries(conn: Connection, scope: Scope) -> tuple[CountryCount, ...]:
    query = (
        select(messages.c.supporter_country, func.count())
        .where(_message_scope(scope))
        .group_by(messages.c.supporter_country)
    )
    found = [
        CountryCount(
            code=str(code).upper() or "—",
            name=country_name(str(code)) or "unknown",
            count=int(count),
        )
        for code, count in conn.execute(query)
    ]
    return tuple(sorted(found, key=lambda c: (-c.count, c.name)))


def _bundles(
    conn: Connection, scope: Scope, people: Mapping[int, RecipientRef]
) -> tuple[BundleTotals, ...]:
    failed = func.sum(when((bundles.c.state == "failed", 1), else_=0))
    query = (
        select(
            bundles.c.recipient_id,
            func.count(),
            failed,
            func.sum(bundles.c.pages),
            func.sum(bundles.c.message_count),
        )
        .where(scope.within(bundles.c.created_at), bundles.c.recipient_id.in_(list(people)))
        .group_by(bundles.c.recipient_id)
    )
    rows = {int(r[0]): r for r in conn.execute(query)}
    return tuple(
        BundleTotals(
            recipient=ref,
            bundles=int(rows[rid][1]) if rid in rows else 0,
            failed=int(rows[rid][2] or 0) if rid in rows else 0,
            pages=int(rows[rid][3] or 0) if rid in rows else 0,
            messages=int(rows[rid][4] or 0) if rid in rows else 0,
        )
        for rid, ref in people.items()
    )


def _deliveries(
    conn: Connection, scope: Scope, people: Mapping[int, RecipientRef]
) -> tuple[DeliveryLine, ...]:
    query = select(deliveries).where(deliveries.c.recipient_id.in_(list(people)))
    if scope.end is not None:
        query = query.where(deliveries.c.created_at < scope.end)
    if scope.start is not None:
        query = query.where(deliveries.c.updated_at >= scope.start)
    lines = [
        DeliveryLine(
            id=str(row["id"]),
            recipient=people[int(row["recipient_id"])],
            channel=str(row["channel"]),
            state=DeliveryState(row["state"]),
            proof=ProofLevel(int(row["proof"])),
            provider_ref=str(row["provider_ref"]),
            last_error=str(row["last_error"]),
            resolution=str(row["resolution"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )
        for row in conn.execute(query).mappings()
    ]
    order = {ref: n for n, ref in enumerate(people.values())}
    lines.sort(key=lambda d: (order[d.recipient], d.created_at, d.channel))
    return tuple(lines)


def _timeline(conn: Connection, scope: Scope) -> dict[str, dict[str, int]]:
    """Per UTC day, how many deliveries reached each state (from the ledger)."""
    query = select(ledger.c.at, ledger.c.kind, ledger.c.subject).where(
        ledger.c.kind.like("delivery.%")
    )
    if scope.since is not None:
        query = query.where(ledger.c.at >= scope.since.isoformat())
    if scope.until is not None:
        query = query.where(ledger.c.at < (scope.until + timedelta(days=1)).isoformat())
    if scope.case is not None:
        subject = literal("delivery:") + deliveries.c.id
        query = (
            query.join(deliveries, ledger.c.subject == subject)
            .join(recipients, recipients.c.id == deliveries.c.recipient_id)
            .where(recipients.c.case_slug == scope.case)
        )
    return bucket_by_day(conn.execute(query.order_by(ledger.c.seq)))


def bucket_by_day(events: Iterable[Any]) -> dict[str, dict[str, int]]:
    """(at, kind, subject) ledger rows → UTC day → state → distinct deliveries."""
    known = {str(s) for s in DeliveryState} - {str(s) for s in TRANSIENT}
    reached: set[tuple[str, str, str]] = set()
    for at, kind, subject in events:
        state = str(kind).removeprefix("delivery.")
        if state in known:
            day = datetime.fromisoformat(str(at)).astimezone(UTC).date().isoformat()
            reached.add((day, state, str(subject)))
    counts = Counter((day, state) for day, state, _ in reached)
    out: dict[str, dict[str, int]] = {}
    for (day, state), count in sorted(counts.items()):
        out.setdefault(day, {})[state] = count
    return out


def _proof(
    people: Mapping[int, RecipientRef], lines: Iterable[DeliveryLine]
) -> tuple[RecipientProof, ...]:
    best: dict[RecipientRef, DeliveryLine] = {}
    for line in lines:
        held = best.get(line.recipient)
        if held is None or (line.proof, line.updated_at) > (held.proof, held.updated_at):
            best[line.recipient] = line
    rows = []
    for ref in people.values():
        top = best.get(ref)
        rows.append(
            RecipientProof(
                recipient=ref,
                proof=top.proof if top else ProofLevel.NONE,
                state=str(top.state) if top else NO_DELIVERY,
                channel=top.channel if top else "",
            )
        )
    return tuple(rows)


def _pending_query(scope: Scope, *cols: Any) -> Any:
    return select(*cols).where(
        _message_scope(scope), messages.c.review_state == str(ReviewState.PENDING)
    )


def _rules(flags: Any) -> tuple[str, ...]:
    """The rule names of stored flags (``"rule: detail"``); the details stay in review."""
    return tuple(dict.fromkeys(str(f).partition(":")[0].strip() for f in flags or ()))


def _pending(conn: Connection, scope: Scope) -> tuple[PendingMessage, ...]:
    cols = (
        messages.c.id,
        messages.c.source,
        messages.c.external_id,
        messages.c.case_slug,
        messages.c.kind,
        messages.c.flags,
        messages.c.imported_at,
    )
    query = _pending_query(scope, *cols).order_by(messages.c.id).limit(PENDING_SHOWN)
    return tuple(
        PendingMessage(
            id=int(mid),
            source=str(source),
            external_id=str(external_id),
            case=str(case),
            kind=str(kind),
            rules=_rules(flags),
            imported_at=imported_at,
        )
        for mid, source, external_id, case, kind, flags, imported_at in conn.execute(query)
    )


def _pending_rules(conn: Connection, scope: Scope) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for (flags,) in conn.execute(_pending_query(scope, messages.c.flags)):
        counts.update(_rules(flags) or (UNFLAGGED,))
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _ledger_head(conn: Connection) -> LedgerHead:
    events = int(conn.execute(select(func.count()).select_from(ledger)).scalar_one())
    last = conn.execute(
        select(ledger.c.seq, ledger.c.hash, ledger.c.at).order_by(ledger.c.seq.desc()).limit(1)
    ).first()
    if last is None:
        return LedgerHead(events=0, last_seq=0, last_hash="", last_at="")
    return LedgerHead(
        events=events, last_seq=int(last[0]), last_hash=str(last[1]), last_at=str(last[2])
    )
