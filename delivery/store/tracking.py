"""What happens after hand-over: parts, provider reports, suspect addresses, people's decisions.

A provider's report (a fax callback, a post office export, an SES notification) is about
one part of a delivery, found by the provider's own reference. It moves that part only
forward through the state machine, and the delivery follows when all its parts agree
(:func:`delivery.models.combined`). A report that would move a part backwards, or says
again what is already recorded, changes nothing: duplicated and late reports are noted,
never applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, select, update

from delivery.errors import InputError, NotFoundError
from delivery.models import (
    TRANSITIONS,
    ChannelName,
    DeliveryState,
    Part,
    ProofLevel,
    combined,
)
from delivery.outbox import Artefact
from delivery.store.base import now
from delivery.store.schema import deliveries, delivery_parts, recipients
from delivery.store.work import (
    DeliveryRow,
    WorkStore,
    _artefact,
    _delivery_query,
    _delivery_row,
    _part,
    save_parts,
)

# States after which a delivery did not arrive and someone has to decide what next.
NOT_ARRIVED = (
    DeliveryState.FAILED,
    DeliveryState.BOUNCED,
    DeliveryState.RETURNED,
    DeliveryState.UNKNOWN,
)


@dataclass(frozen=True, kw_only=True)
class Report:
    """What a provider said about one part, found by its reference."""

    ref: str
    state: DeliveryState | None  # None: still under way, or a delay; noted only
    proof: ProofLevel = ProofLevel.NONE
    detail: str = ""
    provider_ref: str = ""
    artefacts: tuple[Artefact, ...] = ()


class TrackingStore(WorkStore):
    # -- parts ----------------------------------------------------------------------------

    def parts(self, delivery_id: str) -> list[Part]:
        with self.engine.connect() as conn:
            return _parts(conn, delivery_id)

    def sent_parts(self, delivery_id: str) -> frozenset[int]:
        """Part numbers an earlier attempt handed over; a retry sends only the others."""
        done = (DeliveryState.ACCEPTED, DeliveryState.DELIVERED, DeliveryState.SPOOLED)
        return frozenset(p.number for p in self.parts(delivery_id) if p.state in done)

    def find_part(self, ref: str, channel: ChannelName | None = None) -> DeliveryRow | None:
        """The delivery one of whose parts the provider knows as ``ref``."""
        query = (
            _delivery_query()
            .join(delivery_parts, delivery_parts.c.delivery_id == deliveries.c.id)
            .where(delivery_parts.c.ref == ref)
        )
        if channel is not None:
            query = query.where(deliveries.c.channel == str(channel))
        with self.engine.connect() as conn:
            row = conn.execute(query.limit(1)).first()
        return _delivery_row(row) if row is not None else None

    def parts_in(self, channel: ChannelName, states: Sequence[DeliveryState]) -> list[Part]:
        """Parts on ``channel`` whose provider has more to say (for polling)."""
        query = (
            select(delivery_parts)
            .join(deliveries, deliveries.c.id == delivery_parts.c.delivery_id)
            .where(
                deliveries.c.channel == str(channel),
                delivery_parts.c.state.in_([str(s) for s in states]),
            )
            .order_by(delivery_parts.c.updated_at)
        )
        with self.engine.connect() as conn:
            return [_part_row(r) for r in conn.execute(query)]

    def report(self, report: Report, *, actor: str) -> str:
        """Apply one provider report; what happened: the new state, "noted" or "already recorded".

        Raises NotFoundError when no delivery has a part known by ``report.ref``.
        """
        with self.transaction() as conn:
            row = conn.execute(
                select(delivery_parts).where(delivery_parts.c.ref == report.ref).limit(1)
            ).first()
            if row is None:
                raise NotFoundError(f"no delivery part is known as {report.ref!r}")
            part = _part_row(row)
            delivery_id = str(row._mapping["delivery_id"])
            if report.state == part.state and report.proof <= part.proof:
                return "already recorded"
            if report.state is None or report.state not in TRANSITIONS[part.state]:
                what = "progress" if report.state is None else "late-report"
                self._note(conn, delivery_id, what, report, actor)
                return "noted"
            moved = Part(
                number=part.number,
                count=part.count,
                ref=part.ref,
                state=report.state,
                proof=report.proof,
                detail=report.detail,
            )
            save_parts(conn, delivery_id, [moved])
            return self._follow(conn, delivery_id, moved, report, actor)

    def _follow(
        self, conn: Connection, delivery_id: str, moved: Part, report: Report, actor: str
    ) -> str:
        """Move the delivery to what its parts now say together, or note the part's move."""
        current = DeliveryState(
            conn.execute(
                select(deliveries.c.state).where(deliveries.c.id == delivery_id)
            ).scalar_one()
        )
        together = combined(_parts(conn, delivery_id))
        if (
            current == DeliveryState.SENDING  # the worker is handing over other parts: it settles
            or together is None
            or together[0] == current
            or together[0] not in TRANSITIONS[current]
        ):
            self._note(conn, delivery_id, "part", report, actor, part=moved)
            return "noted"
        state, proof = together
        values: dict[str, object] = {"state": str(state), "proof": int(proof), "updated_at": now()}
        if state in (DeliveryState.FAILED, DeliveryState.DEFERRED, DeliveryState.RETURNED):
            values["last_error"] = report.detail
        conn.execute(update(deliveries).where(deliveries.c.id == delivery_id).values(**values))
        payload = {
            "from": str(current),
            "to": str(state),
            "proof": proof.label,
            "provider_ref": report.provider_ref or report.ref,
            "detail": report.detail,
            "artefacts": [_artefact(a) for a in report.artefacts],
            "parts": [_part(moved)],
        }
        self.record(conn, f"delivery.{state}", f"delivery:{delivery_id}", payload, actor)
        return str(state)

    def _note(
        self,
        conn: Connection,
        delivery_id: str,
        what: str,
        report: Report,
        actor: str,
        *,
        part: Part | None = None,
    ) -> None:
        payload: dict[str, object] = {
            "ref": report.ref,
            "reported": str(report.state) if report.state else "",
            "proof": report.proof.label,
            "provider_ref": report.provider_ref or report.ref,
            "detail": report.detail,
            "artefacts": [_artefact(a) for a in report.artefacts],
        }
        if part is not None:
            payload["part"] = _part(part)
        self.record(conn, f"note.{what}", f"delivery:{delivery_id}", payload, actor)

    # -- suspect addresses ----------------------------------------------------------------

    def mark_address_suspect(self, recipient_id: int, reason: str, *, actor: str) -> None:
        with self.transaction() as conn:
            self._set_suspect(conn, recipient_id, reason, actor)

    def clear_address_suspect(self, recipient_id: int, reason: str, *, actor: str) -> bool:
        with self.transaction() as conn:
            was = conn.execute(
                select(recipients.c.address_suspect).where(recipients.c.id == recipient_id)
            ).scalar_one()
            if not was:
                return False
            self._set_suspect(conn, recipient_id, "", actor, cleared=reason)
            return True

    def address_suspect(self, recipient_id: int) -> str:
        with self.engine.connect() as conn:
            return str(
                conn.execute(
                    select(recipients.c.address_suspect).where(recipients.c.id == recipient_id)
                ).scalar_one()
            )

    def _set_suspect(
        self, conn: Connection, recipient_id: int, reason: str, actor: str, *, cleared: str = ""
    ) -> None:
        row = conn.execute(
            select(recipients.c.case_slug, recipients.c.slug).where(recipients.c.id == recipient_id)
        ).one()
        conn.execute(
            update(recipients)
            .where(recipients.c.id == recipient_id)
            .values(address_suspect=reason, updated_at=now())
        )
        kind = "address.cleared" if cleared else "address.suspect"
        self.record(
            conn, kind, f"recipient:{row[0]}/{row[1]}", {"reason": cleared or reason}, actor
        )

    # -- deliveries that did not arrive ---------------------------------------------------

    def not_arrived(self, *, case: str | None = None) -> list[DeliveryRow]:
        """Deliveries that failed, bounced, came back or are unknown, and nobody decided yet."""
        query = (
            _delivery_query()
            .where(
                deliveries.c.state.in_([str(s) for s in NOT_ARRIVED]),
                deliveries.c.resolution == "",
            )
            .order_by(deliveries.c.updated_at)
        )
        if case is not None:
            query = query.where(recipients.c.case_slug == case)
        with self.engine.connect() as conn:
            return [_delivery_row(r) for r in conn.execute(query)]

    def channels_tried(self, bundle_id: str) -> frozenset[ChannelName]:
        """The channels a bundle already has a delivery on."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(deliveries.c.channel).where(deliveries.c.bundle_id == bundle_id)
            ).scalars()
            return frozenset(ChannelName(c) for c in rows)

    def record_resolution(self, delivery_id: str, resolution: str, *, actor: str) -> None:
        """Record what was decided about a delivery that did not arrive."""
        with self.transaction() as conn:
            row = conn.execute(
                select(deliveries.c.state, deliveries.c.resolution).where(
                    deliveries.c.id == delivery_id
                )
            ).first()
            if row is None:
                raise NotFoundError(f"delivery {delivery_id}: not found")
            if DeliveryState(row[0]) not in NOT_ARRIVED:
                raise InputError(f"delivery {delivery_id} is {row[0]}: nothing to decide")
            if row[1]:
                raise InputError(f"delivery {delivery_id}: already decided ({row[1]})")
            conn.execute(
                update(deliveries)
                .where(deliveries.c.id == delivery_id)
                .values(resolution=resolution, updated_at=now())
            )
            self.record(
                conn,
                "resolution.recorded",
                f"delivery:{delivery_id}",
                {"state": str(row[0]), "resolution": resolution},
                actor,
            )

    def requeue_unknown(self, delivery_id: str, *, reason: str, actor: str) -> None:
        """A person chose to send an unknown delivery again, with the same Message-ID."""
        current = self.delivery(delivery_id)
        if current.state != DeliveryState.UNKNOWN:
            raise InputError(
                f"delivery {delivery_id} is {current.state}, not unknown: only a delivery that"
                " may or may not have arrived is sent again this way"
            )
        self.transition(
            delivery_id,
            DeliveryState.QUEUED,
            actor=actor,
            detail=f"sent again by a person's decision, same Message-ID: {reason}",
        )


def _parts(conn: Connection, delivery_id: str) -> list[Part]:
    rows = conn.execute(
        select(delivery_parts)
        .where(delivery_parts.c.delivery_id == delivery_id)
        .order_by(delivery_parts.c.number)
    )
    return [_part_row(r) for r in rows]


def _part_row(r: object) -> Part:
    m = r._mapping  # type: ignore[attr-defined]
    return Part(
        number=int(m["number"]),
        count=int(m["count"]),
        ref=str(m["ref"]),
        state=DeliveryState(m["state"]),
        proof=ProofLevel(int(m["proof"])),
        detail=str(m["detail"]),
    )
