"""Bundles and deliveries: what collect plans, merge fills in and channels move."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from delivery import ledger as chain
from delivery.errors import InputError, NotFoundError
from delivery.models import (
    ChannelName,
    DeliveryState,
    Message,
    MessageKind,
    Part,
    ProofLevel,
    ReviewState,
    check_transition,
    sha256_hex,
    stable_id,
)
from delivery.outbox import Artefact
from delivery.store.base import in_chunks, now
from delivery.store.messages import MessageStore
from delivery.store.schema import (
    bundles,
    cases,
    deliveries,
    delivery_parts,
    message_recipients,
    messages,
    recipients,
)


@dataclass(frozen=True, kw_only=True)
class RecipientLoad:
    """What collect needs to know about one recipient."""

    recipient_id: int
    case: str
    slug: str
    held: bool
    waiting: int  # approved messages not yet in any bundle
    periods: frozenset[str]  # bundle periods already used


@dataclass(frozen=True, kw_only=True)
class BundleRow:
    id: str
    recipient_id: int
    case: str
    slug: str
    period: str
    state: str
    message_count: int
    pages: int
    pdf_path: str
    pdf_sha256: str
    manifest_path: str
    error: str  # why its render failed, when it did
    created_at: datetime


@dataclass(frozen=True, kw_only=True)
class DeliveryRow:
    id: str
    bundle_id: str
    recipient_id: int
    case: str
    slug: str
    channel: ChannelName
    state: DeliveryState
    attempts: int
    message_id_header: str
    created_at: datetime
    updated_at: datetime
    proof: ProofLevel = ProofLevel.NONE
    provider_ref: str = ""
    last_error: str = ""
    resolution: str = ""  # what a person or the fallback policy decided, once it did not arrive


class WorkStore(MessageStore):
    # -- collect --------------------------------------------------------------------------

    def recipient_loads(self) -> list[RecipientLoad]:
        approved = (
            select(message_recipients.c.recipient_id, func.count().label("n"))
            .join(messages, messages.c.id == message_recipients.c.message_id)
            .where(
                message_recipients.c.bundle_id.is_(None),
                messages.c.review_state == str(ReviewState.APPROVED),
            )
            .group_by(message_recipients.c.recipient_id)
            .subquery()
        )
        query = (
            select(
                recipients.c.id,
                recipients.c.case_slug,
                recipients.c.slug,
                recipients.c.held,
                cases.c.held,
                func.coalesce(approved.c.n, 0),
            )
            .join(cases, cases.c.slug == recipients.c.case_slug)
            .outerjoin(approved, approved.c.recipient_id == recipients.c.id)
            .order_by(recipients.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
            used = conn.execute(
                select(bundles.c.recipient_id, bundles.c.period).where(
                    bundles.c.state != "dissolved"
                )
            ).all()
        periods: dict[int, set[str]] = {}
        for rid, period in used:
            periods.setdefault(int(rid), set()).add(str(period))
        return [
            RecipientLoad(
                recipient_id=int(r[0]),
                case=str(r[1]),
                slug=str(r[2]),
                held=bool(r[3] or r[4]),
                waiting=int(r[5]),
                periods=frozenset(periods.get(int(r[0]), ())),
            )
            for r in rows
        ]

    def create_bundle(self, recipient_id: int, period: str, *, actor: str) -> str | None:
        """Claim every approved, unbundled message of a recipient into a new bundle."""
        with self.transaction() as conn:
            # one worker at a time collects a recipient (SQLite: every write is serialised)
            conn.execute(
                select(recipients.c.id).where(recipients.c.id == recipient_id).with_for_update()
            )
            ids = sorted(
                int(m)
                for m in conn.execute(
                    select(message_recipients.c.message_id)
                    .join(messages, messages.c.id == message_recipients.c.message_id)
                    .where(
                        message_recipients.c.recipient_id == recipient_id,
                        message_recipients.c.bundle_id.is_(None),
                        messages.c.review_state == str(ReviewState.APPROVED),
                    )
                ).scalars()
            )
            if not ids:
                return None
            members = sha256_hex(",".join(map(str, ids)).encode())
            earlier = conn.execute(
                select(func.count()).where(
                    bundles.c.recipient_id == recipient_id, bundles.c.period == period
                )
            ).scalar_one()  # dissolved bundles of this period: the same messages get a new id
            parts = (str(recipient_id), period, members) + ((str(earlier),) if earlier else ())
            bundle_id = stable_id("bnd", *parts, key=self.id_key)
            conn.execute(
                insert(bundles).values(
                    id=bundle_id,
                    recipient_id=recipient_id,
                    period=period,
                    state="planned",
                    message_count=len(ids),
                    created_at=now(),
                )
            )
            for chunk in in_chunks(ids):
                conn.execute(
                    update(message_recipients)
                    .where(
                        message_recipients.c.recipient_id == recipient_id,
                        message_recipients.c.message_id.in_(chunk),
                    )
                    .values(bundle_id=bundle_id)
                )
            payload = {
                "recipient_id": recipient_id,
                "period": period,
                "messages": len(ids),
                "members_sha256": members,
            }
            self.record(conn, "bundle.planned", f"bundle:{bundle_id}", payload, actor)
        return bundle_id

    # -- merge ----------------------------------------------------------------------------

    def bundles_in(self, state: str) -> list[BundleRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                _bundle_query().where(bundles.c.state == state).order_by(bundles.c.created_at)
            ).all()
        return [_bundle_row(r) for r in rows]

    def bundles_undelivered(self) -> list[BundleRow]:
        """Rendered bundles that have no delivery yet: what the deliver step must start."""
        query = (
            _bundle_query()
            .outerjoin(deliveries, deliveries.c.bundle_id == bundles.c.id)
            .where(bundles.c.state == "rendered", deliveries.c.id.is_(None))
            .order_by(bundles.c.created_at)
        )
        with self.engine.connect() as conn:
            return [_bundle_row(r) for r in conn.execute(query)]

    def bundle(self, bundle_id: str) -> BundleRow:
        with self.engine.connect() as conn:
            row = conn.execute(_bundle_query().where(bundles.c.id == bundle_id)).first()
        if row is None:
            raise NotFoundError(f"bundle {bundle_id}: not found")
        return _bundle_row(row)

    def bundle_messages(self, bundle_id: str) -> tuple[Message, ...]:
        query = (
            select(messages)
            .join(message_recipients, message_recipients.c.message_id == messages.c.id)
            .where(message_recipients.c.bundle_id == bundle_id)
            .order_by(messages.c.submitted_at, messages.c.id)
        )
        with self.engine.connect() as conn:
            return tuple(_message(r) for r in conn.execute(query).mappings())

    def mark_rendered(
        self,
        bundle_id: str,
        *,
        pdf: Artefact,
        manifest: Artefact,
        pages: int,
        countries: int,
        template_version: str,
        actor: str,
    ) -> bool:
        """Record the render; False (and nothing recorded) when the bundle is no longer planned."""
        with self.transaction() as conn:
            done = conn.execute(
                update(bundles)
                .where(bundles.c.id == bundle_id, bundles.c.state == "planned")
                .values(
                    lease_owner="",
                    lease_expires=0.0,
                    unfinished_renders=0,
                    state="rendered",
                    pages=pages,
                    country_count=countries,
                    pdf_path=pdf.path,
                    pdf_sha256=pdf.sha256,
                    manifest_path=manifest.path,
                    manifest_sha256=manifest.sha256,
                    template_version=template_version,
                    rendered_at=now(),
                    error="",
                )
            )
            if not done.rowcount:
                return False
            payload = {
                "pages": pages,
                "countries": countries,
                "template_version": template_version,
                "pdf_sha256": pdf.sha256,
                "artefacts": [_artefact(pdf), _artefact(manifest)],
            }
            self.record(conn, "bundle.rendered", f"bundle:{bundle_id}", payload, actor)
        return True

    def mark_render_failed(self, bundle_id: str, *, error: str, actor: str) -> bool:
        """Dead-letter the bundle with its reason; False when it is no longer planned."""
        with self.transaction() as conn:
            done = conn.execute(
                update(bundles)
                .where(bundles.c.id == bundle_id, bundles.c.state == "planned")
                .values(
                    state="failed",
                    error=error,
                    lease_owner="",
                    lease_expires=0.0,
                    unfinished_renders=0,
                )
            )
            if not done.rowcount:
                return False
            self.record(conn, "bundle.failed", f"bundle:{bundle_id}", {"error": error}, actor)
        return True

    def retry_bundle(self, bundle_id: str, *, actor: str) -> None:
        """Put a failed bundle back in line for rendering (after the cause was fixed)."""
        with self.transaction() as conn:
            state = conn.execute(select(bundles.c.state).where(bundles.c.id == bundle_id)).scalar()
            if state is None:
                raise NotFoundError(f"bundle {bundle_id}: not found")
            if state != "failed":
                raise InputError(
                    f"bundle {bundle_id}: only a failed bundle can be retried; it is {state}"
                )
            conn.execute(
                update(bundles)
                .where(bundles.c.id == bundle_id)
                .values(state="planned", error="", unfinished_renders=0)
            )
            entry = chain.Entry(kind="bundle.retried", subject=f"bundle:{bundle_id}", actor=actor)
            self.append(conn, [entry])

    def dissolve_bundle(self, bundle_id: str, *, actor: str) -> int:
        """Give a failed bundle's messages back to collect; returns how many.

        A caseworker can then reject or hold the message that made it fail, and the next
        run bundles the others again.
        """
        with self.transaction() as conn:
            state = conn.execute(select(bundles.c.state).where(bundles.c.id == bundle_id)).scalar()
            if state != "failed":
                shown = state or "not found"
                raise InputError(
                    f"bundle {bundle_id}: only a failed bundle can be dissolved ({shown})"
                )
            freed = conn.execute(
                update(message_recipients)
                .where(message_recipients.c.bundle_id == bundle_id)
                .values(bundle_id=None)
            ).rowcount
            conn.execute(update(bundles).where(bundles.c.id == bundle_id).values(state="dissolved"))
            entry = chain.Entry(
                kind="bundle.dissolved",
                subject=f"bundle:{bundle_id}",
                payload={"messages": freed},
                actor=actor,
            )
            self.append(conn, [entry])
        return int(freed)

    def bundles_listed(self, *, state: str | None, case: str | None) -> list[BundleRow]:
        query = _bundle_query().order_by(bundles.c.created_at)
        if state:
            query = query.where(bundles.c.state == state)
        if case:
            query = query.where(recipients.c.case_slug == case)
        with self.engine.connect() as conn:
            return [_bundle_row(r) for r in conn.execute(query)]

    def ensure_delivery(
        self, bundle: BundleRow, channel: ChannelName, *, bounce_domain: str, actor: str
    ) -> str:
        """The bundle's delivery on `channel`, created queued (or held) when new."""
        delivery_id = stable_id("dlv", bundle.id, str(channel), key=self.id_key)
        with self.transaction() as conn:
            conn.execute(select(bundles.c.id).where(bundles.c.id == bundle.id).with_for_update())
            if conn.execute(select(deliveries.c.id).where(deliveries.c.id == delivery_id)).first():
                return delivery_id
            held = self._is_held(conn, bundle.recipient_id)
            state = DeliveryState.HELD if held else DeliveryState.QUEUED
            stamp = now()
            conn.execute(
                insert(deliveries).values(
                    id=delivery_id,
                    bundle_id=bundle.id,
                    recipient_id=bundle.recipient_id,
                    channel=str(channel),
                    state=str(state),
                    proof=0,
                    attempts=0,
                    message_id_header=f"<{delivery_id}@{bounce_domain}>",
                    provider_ref="",
                    last_error="",
                    created_at=stamp,
                    updated_at=stamp,
                )
            )
            payload = {"bundle": bundle.id, "channel": str(channel), "to": str(state)}
            self.record(conn, f"delivery.{state}", f"delivery:{delivery_id}", payload, actor)
        return delivery_id

    def _is_held(self, conn: Connection, recipient_id: int) -> bool:
        row = conn.execute(
            select(recipients.c.held, cases.c.held)
            .join(cases, cases.c.slug == recipients.c.case_slug)
            .where(recipients.c.id == recipient_id)
        ).one()
        return bool(row[0] or row[1])

    def deliveries_in(self, states: Sequence[DeliveryState]) -> list[DeliveryRow]:
        query = (
            _delivery_query()
            .where(deliveries.c.state.in_([str(s) for s in states]))
            .order_by(deliveries.c.created_at)
        )
        with self.engine.connect() as conn:
            return [_delivery_row(r) for r in conn.execute(query)]

    def delivery(self, delivery_id: str) -> DeliveryRow:
        with self.engine.connect() as conn:
            row = conn.execute(_delivery_query().where(deliveries.c.id == delivery_id)).first()
        if row is None:
            raise NotFoundError(f"delivery {delivery_id}: not found")
        return _delivery_row(row)

    def transition(
        self,
        delivery_id: str,
        new: DeliveryState,
        *,
        actor: str,
        proof: ProofLevel = ProofLevel.NONE,
        provider_ref: str = "",
        detail: str = "",
        artefacts: Sequence[Artefact] = (),
        parts: Sequence[Part] = (),
    ) -> bool:
        """Move one delivery through the state machine; False when something else moved it first.

        ``parts`` (the pieces the provider tracks separately) are recorded in the same
        transaction, replacing what an earlier attempt said about the same part numbers.
        """
        with self.transaction() as conn:
            current = conn.execute(
                select(deliveries.c.state, deliveries.c.attempts).where(
                    deliveries.c.id == delivery_id
                )
            ).one()
            old = DeliveryState(current[0])
            check_transition(old, new)
            if new == DeliveryState.SENDING and self._is_held(
                conn, self.delivery_recipient(conn, delivery_id)
            ):
                return False
            values: dict[str, Any] = {"state": str(new), "updated_at": now(), "proof": int(proof)}
            if new == DeliveryState.SENDING:
                values["attempts"] = int(current[1]) + 1
            if provider_ref:
                values["provider_ref"] = provider_ref
            if detail and new in (
                DeliveryState.FAILED,
                DeliveryState.DEFERRED,
                DeliveryState.UNKNOWN,
                DeliveryState.BOUNCED,
                DeliveryState.RETURNED,
                DeliveryState.HELD,
            ):
                values["last_error"] = detail
            done = conn.execute(
                update(deliveries)
                .where(deliveries.c.id == delivery_id, deliveries.c.state == str(old))
                .values(**values)
            )
            if not done.rowcount:
                return False
            save_parts(conn, delivery_id, parts)
            payload = {
                "from": str(old),
                "to": str(new),
                "proof": proof.label,
                "provider_ref": provider_ref,
                "detail": detail,
                "artefacts": [_artefact(a) for a in artefacts],
            }
            if parts:
                payload["parts"] = [_part(p) for p in parts]
            self.record(conn, f"delivery.{new}", f"delivery:{delivery_id}", payload, actor)
            return True

    def find_delivery(self, delivery_id: str) -> DeliveryRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(_delivery_query().where(deliveries.c.id == delivery_id)).first()
        return _delivery_row(row) if row is not None else None

    def note(
        self,
        delivery_id: str,
        *,
        what: str,
        detail: str,
        actor: str,
        provider_ref: str = "",
        artefacts: Sequence[Artefact] = (),
    ) -> None:
        """A ledger event about a delivery that does not change its state (a delay notice)."""
        payload = {
            "detail": detail,
            "provider_ref": provider_ref,
            "artefacts": [_artefact(a) for a in artefacts],
        }
        with self.transaction() as conn:
            self.record(conn, f"note.{what}", f"delivery:{delivery_id}", payload, actor)

    def delivery_recipient(self, conn: Connection, delivery_id: str) -> int:
        return int(
            conn.execute(
                select(deliveries.c.recipient_id).where(deliveries.c.id == delivery_id)
            ).scalar_one()
        )

    # -- hold and release -----------------------------------------------------------------

    def set_held(
        self, case: str, recipient: str | None, held: bool, *, actor: str, reason: str
    ) -> dict[str, int]:
        """Hold (or release) a case or a recipient, and its pending deliveries, at once."""
        with self.transaction() as conn:
            targets = self._hold_targets(conn, case, recipient)
            if recipient is None:
                conn.execute(update(cases).where(cases.c.slug == case).values(held=held))
            else:
                conn.execute(
                    update(recipients).where(recipients.c.id.in_(targets)).values(held=held)
                )
            if not held:
                self._clear_suspect(conn, targets, reason or "released by a person", actor)
            moved = self._move_held_deliveries(conn, targets, held, actor)
            subject = f"recipient:{case}/{recipient}" if recipient else f"case:{case}"
            kind = "hold" if held else "release"
            self.record(conn, kind, subject, {"reason": reason, "deliveries": moved}, actor)
        return {"recipients": len(targets), "deliveries": moved}

    def _clear_suspect(self, conn: Connection, targets: list[int], reason: str, actor: str) -> None:
        """A person released these recipients: their postal addresses count as checked."""
        rows = conn.execute(
            select(recipients.c.id, recipients.c.case_slug, recipients.c.slug).where(
                recipients.c.id.in_(targets), recipients.c.address_suspect != ""
            )
        ).all()
        for rid, case, slug in rows:
            conn.execute(
                update(recipients).where(recipients.c.id == rid).values(address_suspect="")
            )
            entry = chain.Entry(
                kind="address.cleared",
                subject=f"recipient:{case}/{slug}",
                payload={"reason": reason},
                actor=actor,
            )
            self.append(conn, [entry])

    def _hold_targets(self, conn: Connection, case: str, recipient: str | None) -> list[int]:
        if not conn.execute(select(cases.c.slug).where(cases.c.slug == case)).first():
            raise NotFoundError(f"case {case!r}: not in the loaded campaign")
        query = select(recipients.c.id).where(recipients.c.case_slug == case)
        if recipient is not None:
            query = query.where(recipients.c.slug == recipient)
        targets = [int(r) for r in conn.execute(query).scalars()]
        if recipient is not None and not targets:
            raise NotFoundError(f"recipient {recipient!r}: not a recipient of case {case!r}")
        return targets

    def _move_held_deliveries(
        self, conn: Connection, targets: list[int], held: bool, actor: str
    ) -> int:
        sources = (DeliveryState.QUEUED, DeliveryState.DEFERRED) if held else (DeliveryState.HELD,)
        new = DeliveryState.HELD if held else DeliveryState.QUEUED
        rows = conn.execute(
            select(deliveries.c.id, deliveries.c.state, deliveries.c.recipient_id).where(
                deliveries.c.recipient_id.in_(targets),
                deliveries.c.state.in_([str(s) for s in sources]),
            )
        ).all()
        entries = []
        for delivery_id, state, rid in rows:
            if not held and self._is_held(conn, int(rid)):
                continue  # still held by its case or recipient
            check_transition(DeliveryState(state), new)
            conn.execute(
                update(deliveries)
                .where(deliveries.c.id == delivery_id)
                .values(state=str(new), updated_at=now())
            )
            entries.append(
                chain.Entry(
                    kind=f"delivery.{new}",
                    subject=f"delivery:{delivery_id}",
                    payload={"from": str(state), "to": str(new), "proof": "none"},
                    actor=actor,
                )
            )
        self.append(conn, entries)
        return len(entries)


def save_parts(conn: Connection, delivery_id: str, parts: Sequence[Part]) -> None:
    """Insert or replace the rows of ``parts`` for one delivery."""
    for part in parts:
        values = {
            "count": part.count,
            "ref": part.ref,
            "state": str(part.state),
            "proof": int(part.proof),
            "detail": part.detail,
            "updated_at": now(),
        }
        key = (delivery_parts.c.delivery_id == delivery_id, delivery_parts.c.number == part.number)
        if conn.execute(update(delivery_parts).where(*key).values(**values)).rowcount == 0:
            conn.execute(
                insert(delivery_parts).values(delivery_id=delivery_id, number=part.number, **values)
            )


def _part(p: Part) -> dict[str, Any]:
    return {
        "number": p.number,
        "count": p.count,
        "ref": p.ref,
        "state": str(p.state),
        "proof": p.proof.label,
        "detail": p.detail,
    }


def _artefact(a: Artefact) -> dict[str, Any]:
    return {"path": a.path, "sha256": a.sha256, "size": a.size}


def _bundle_query() -> Any:
    return select(bundles, recipients.c.case_slug, recipients.c.slug).join(
        recipients, recipients.c.id == bundles.c.recipient_id
    )


def _bundle_row(r: Any) -> BundleRow:
    m = r._mapping
    return BundleRow(
        id=m["id"],
        recipient_id=int(m["recipient_id"]),
        case=m["case_slug"],
        slug=m["slug"],
        period=m["period"],
        state=m["state"],
        message_count=int(m["message_count"]),
        pages=int(m["pages"]),
        pdf_path=m["pdf_path"],
        pdf_sha256=m["pdf_sha256"],
        manifest_path=m["manifest_path"],
        error=m["error"],
        created_at=m["created_at"],
    )


def _delivery_query() -> Any:
    return select(deliveries, recipients.c.case_slug, recipients.c.slug).join(
        recipients, recipients.c.id == deliveries.c.recipient_id
    )


def _delivery_row(r: Any) -> DeliveryRow:
    m = r._mapping
    return DeliveryRow(
        id=m["id"],
        bundle_id=m["bundle_id"],
        recipient_id=int(m["recipient_id"]),
        case=m["case_slug"],
        slug=m["slug"],
        channel=ChannelName(m["channel"]),
        state=DeliveryState(m["state"]),
        attempts=int(m["attempts"]),
        message_id_header=m["message_id_header"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        proof=ProofLevel(int(m["proof"])),
        provider_ref=m["provider_ref"],
        last_error=m["last_error"],
        resolution=m["resolution"],
    )


def _message(m: Any) -> Message:
    return Message(
        id=int(m["id"]),
        source=m["source"],
        external_id=m["external_id"],
        case=m["case_slug"],
        supporter_name=m["supporter_name"],
        supporter_email=m["supporter_email"],
        supporter_city=m["supporter_city"],
        supporter_country=m["supporter_country"],
        language=m["language"],
        kind=MessageKind(m["kind"]),
        body=m["body"],
        body_sha256=m["body_sha256"],
        submitted_at=m["submitted_at"],
        event=m["event"],
        ref=m["ref"],
        body_mac=m["body_mac"],
    )
