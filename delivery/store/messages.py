"""Messages: intake batches and review decisions."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, func, insert, or_, select, update

from delivery import ledger as chain
from delivery.errors import InputError, NotFoundError
from delivery.models import (
    Flag,
    MessageDraft,
    ReviewState,
    body_mac,
    erased_tag,
    message_ref,
    sha256_hex,
)
from delivery.store.base import STATISTICS_FIRST, StoreBase, in_chunks, now
from delivery.store.schema import import_batches, message_recipients, messages

# A caseworker may change a decision until the message is in a bundle.
REVIEW_MOVES: dict[ReviewState, frozenset[ReviewState]] = {
    ReviewState.PENDING: frozenset({ReviewState.APPROVED, ReviewState.REJECTED, ReviewState.HELD}),
    ReviewState.HELD: frozenset({ReviewState.APPROVED, ReviewState.REJECTED}),
    ReviewState.APPROVED: frozenset({ReviewState.REJECTED, ReviewState.HELD}),
    ReviewState.REJECTED: frozenset(),
}


@dataclass(frozen=True, kw_only=True)
class Screened:
    """A draft with the review outcome decided at intake."""

    draft: MessageDraft
    state: ReviewState
    flags: tuple[Flag, ...]
    recipient_ids: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class ReviewItem:
    id: int
    source: str
    external_id: str
    case: str
    target: str
    kind: str
    supporter_name: str
    supporter_country: str
    state: str
    flags: tuple[str, ...]
    body: str
    note: str


GROWN_BY_IMPORT = ("messages", "message_recipients", "ledger")


class MessageStore(StoreBase):
    def start_batch(self, *, source: str, filename: str, sha256: str) -> int:
        with self.transaction() as conn:
            result = conn.execute(
                insert(import_batches).values(
                    source=source,
                    filename=filename,
                    file_sha256=sha256,
                    started_at=now(),
                    imported=0,
                    duplicates=0,
                    rejected=0,
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def add_messages(
        self, batch_id: int, items: Sequence[Screened], *, actor: str
    ) -> tuple[int, int]:
        """Store a chunk of screened drafts; returns (imported, duplicates)."""
        with self.transaction() as conn:
            fresh = self._drop_duplicates(conn, items)
            if not fresh:
                return 0, len(items)
            stamp = now()
            rows = [_message_row(batch_id, s, stamp) for s in fresh]
            ids = conn.execute(
                insert(messages).returning(messages.c.id, sort_by_parameter_order=True), rows
            )
            new_ids = [int(r[0]) for r in ids]
            links = [
                {"message_id": mid, "recipient_id": rid, "bundle_id": None}
                for mid, s in zip(new_ids, fresh, strict=True)
                for rid in s.recipient_ids
            ]
            conn.execute(insert(message_recipients), links)
            self.append(
                conn,
                [
                    _intake_entry(mid, s, row, actor)
                    for mid, s, row in zip(new_ids, fresh, rows, strict=True)
                ],
            )
        self._grown(len(fresh), *GROWN_BY_IMPORT)
        return len(fresh), len(items) - len(fresh)

    def _drop_duplicates(self, conn: Connection, items: Sequence[Screened]) -> list[Screened]:
        """The items not stored before, erased ones included (found by their erased tag)."""
        keys = {(s.draft.source, s.draft.external_id) for s in items}
        existing: set[tuple[str, str]] = set()
        for source in {k[0] for k in keys}:
            wanted = {k[1]: k[1] for k in keys if k[0] == source}
            wanted.update({erased_tag(self.id_key, source, k): k for k in list(wanted)})
            found = conn.execute(
                select(messages.c.external_id).where(
                    messages.c.source == source, messages.c.external_id.in_(list(wanted))
                )
            ).scalars()
            existing.update((source, wanted[str(e)]) for e in found)
        fresh: list[Screened] = []
        for item in items:
            key = (item.draft.source, item.draft.external_id)
            if key not in existing:
                existing.add(key)
                fresh.append(item)
        return fresh

    def finish_batch(
        self, batch_id: int, *, imported: int, duplicates: int, rejected: int, actor: str
    ) -> None:
        with self.transaction() as conn:
            conn.execute(
                update(import_batches)
                .where(import_batches.c.id == batch_id)
                .values(
                    finished_at=now(), imported=imported, duplicates=duplicates, rejected=rejected
                )
            )
            row = (
                conn.execute(select(import_batches).where(import_batches.c.id == batch_id))
                .mappings()
                .one()
            )
            payload = {
                "source": row["source"],
                "file": row["filename"],
                "sha256": row["file_sha256"],
                "imported": imported,
                "duplicates": duplicates,
                "rejected": rejected,
            }
            self.record(conn, "import.batch", f"batch:{batch_id}", payload, actor)
        if imported >= STATISTICS_FIRST:
            self.refresh_statistics(*GROWN_BY_IMPORT)  # for the worker's first plans

    # -- review ---------------------------------------------------------------------------

    def resolve(self, refs: Sequence[str]) -> list[int]:
        """Message ids for numeric ids, external ids, or ``source:external_id``."""
        found: list[int] = []
        with self.engine.connect() as conn:
            sources = [str(s) for s in conn.execute(select(messages.c.source).distinct()).scalars()]
            for ref in refs:
                found.append(self._resolve_one(conn, ref, sources))
        return found

    def _resolve_one(self, conn: Connection, ref: str, sources: Sequence[str]) -> int:
        conditions = [messages.c.external_id == ref]
        if ref.isdigit():
            conditions.append(messages.c.id == int(ref))
        if ":" in ref:
            source, _, external = ref.partition(":")
            conditions.append(and_(messages.c.source == source, messages.c.external_id == external))
        # a message erased under retention still answers to its external id, by its tag
        for source in sources:
            tag = erased_tag(self.id_key, source, ref)
            conditions.append(and_(messages.c.source == source, messages.c.external_id == tag))
        rows = conn.execute(select(messages.c.id, messages.c.source).where(or_(*conditions))).all()
        if not rows:
            raise NotFoundError(f"message {ref!r}: no message has this id or external id")
        if len(rows) > 1:
            sources = ", ".join(sorted({str(r[1]) for r in rows}))
            raise InputError(
                f"message {ref!r}: external id used by several sources ({sources});"
                f" write SOURCE:{ref}"
            )
        return int(rows[0][0])

    def review_list(
        self, *, case: str | None, flagged: bool, states: Sequence[ReviewState], limit: int | None
    ) -> list[ReviewItem]:
        query = select(messages).where(messages.c.review_state.in_([str(s) for s in states]))
        if case:
            query = query.where(messages.c.case_slug == case)
        query = query.order_by(messages.c.id).limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        items = [_review_item(r) for r in rows]
        return [i for i in items if i.flags] if flagged else items

    def decide(self, ids: Sequence[int], state: ReviewState, *, actor: str, note: str = "") -> int:
        """Approve, reject or hold messages, all or none; returns how many changed."""
        with self.transaction() as conn:
            touched: list[int] = []
            for chunk in in_chunks(sorted(set(ids))):
                touched += self._decide(conn, chunk, state, actor=actor, note=note)
            return len(touched)

    def _decide(
        self, conn: Connection, ids: Sequence[int], state: ReviewState, *, actor: str, note: str
    ) -> list[int]:
        rows = conn.execute(
            select(messages.c.id, messages.c.review_state).where(messages.c.id.in_(list(ids)))
        ).all()
        bundled = self._bundled(conn, ids)
        entries: list[chain.Entry] = []
        for mid, current in sorted(rows):
            old = ReviewState(current)
            if old == state:
                continue
            if state not in REVIEW_MOVES[old] or int(mid) in bundled:
                why = "already in a bundle" if int(mid) in bundled else f"it is {old}"
                raise InputError(f"message {mid}: cannot be {state} now ({why})")
            entries.append(
                chain.Entry(
                    kind=f"review.{state}",
                    subject=f"message:{mid}",
                    payload={"from": str(old), "note": note},
                    actor=actor,
                )
            )
        touched = [int(e.subject.split(":")[1]) for e in entries]
        if touched:
            conn.execute(
                update(messages)
                .where(messages.c.id.in_(touched))
                .values(
                    review_state=str(state),
                    review_note=note,
                    reviewed_by=actor,
                    reviewed_at=now(),
                )
            )
            self.append(conn, entries)
        return touched

    def _bundled(self, conn: Connection, ids: Sequence[int]) -> set[int]:
        query = select(message_recipients.c.message_id).where(
            message_recipients.c.message_id.in_(list(ids)),
            message_recipients.c.bundle_id.is_not(None),
        )
        return {int(m) for m in conn.execute(query).scalars()}

    def clean_pending(self, *, case: str | None) -> list[int]:
        """Waiting messages no rule flagged."""
        return self.waiting(case=case, clean=True)

    def waiting(
        self,
        *,
        case: str | None = None,
        kind: str | None = None,
        rule: str | None = None,
        clean: bool = False,
    ) -> list[int]:
        """Ids of waiting messages matching a filter: case, kind, a rule that flagged them."""
        query = select(messages.c.id, messages.c.flags).where(
            messages.c.review_state == str(ReviewState.PENDING)
        )
        if case:
            query = query.where(messages.c.case_slug == case)
        if kind:
            query = query.where(messages.c.kind == kind)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(messages.c.id)).all()
        if clean:
            return [int(r[0]) for r in rows if not r[1]]
        if rule:
            return [int(r[0]) for r in rows if any(_flag_rule(f) == rule for f in r[1])]
        return [int(r[0]) for r in rows]

    def count_messages(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(messages)).scalar_one())


def _flag_rule(flag: str) -> str:
    return flag.split(":", 1)[0].strip()


def _message_row(batch_id: int, item: Screened, stamp: Any) -> dict[str, Any]:
    d = item.draft
    link_key = secrets.token_bytes(32)
    return {
        "link_key": link_key.hex(),
        "ref": message_ref(link_key, d.source, d.external_id),
        "body_mac": body_mac(link_key, d.body),
        "batch_id": batch_id,
        "source": d.source,
        "external_id": d.external_id,
        "line": d.line,
        "case_slug": d.case,
        "target": d.to,
        "supporter_name": d.supporter_name,
        "supporter_email": d.supporter_email,
        "supporter_city": d.supporter_city,
        "supporter_country": d.supporter_country,
        "language": d.language,
        "kind": str(d.kind),
        "body": d.body,
        "body_sha256": sha256_hex(d.body.encode("utf-8")),
        "submitted_at": d.submitted_at,
        "event": d.event,
        "extra": dict(d.metadata),
        "review_state": str(item.state),
        "flags": [str(f) for f in item.flags],
        "review_note": "",
        "reviewed_by": "",
        "reviewed_at": stamp if item.state == ReviewState.APPROVED else None,
        "imported_at": stamp,
    }


def _intake_entry(message_id: int, item: Screened, row: dict[str, Any], actor: str) -> chain.Entry:
    """The intake event: the supporter's id and words only as HMACs under the message's key."""
    d = item.draft
    payload = {
        "source": d.source,
        "ref": row["ref"],
        "line": d.line,
        "case": d.case,
        "to": d.to,
        "body_mac": row["body_mac"],
        "flags": [f.rule for f in item.flags],
        "state": str(item.state),
    }
    kind = "review.approved" if item.state == ReviewState.APPROVED else "review.flagged"
    if item.state == ReviewState.PENDING and not item.flags:
        kind = "review.waiting"
    return chain.Entry(
        kind=kind,
        subject=f"message:{message_id}",
        payload=payload,
        actor="policy" if item.state == ReviewState.APPROVED else actor,
    )


def _review_item(row: Any) -> ReviewItem:
    return ReviewItem(
        id=int(row["id"]),
        source=row["source"],
        external_id=row["external_id"],
        case=row["case_slug"],
        target=row["target"],
        kind=row["kind"],
        supporter_name=row["supporter_name"],
        supporter_country=row["supporter_country"],
        state=row["review_state"],
        flags=tuple(row["flags"]),
        body=row["body"],
        note=row["review_note"],
    )
