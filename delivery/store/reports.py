"""Read-side queries: status, one message's trace, and the ledger-against-tables check."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Select, func, select

from delivery import ledger as chain
from delivery.models import ChannelName, ReviewState
from delivery.store.leases import LeaseStore
from delivery.store.schema import bundles, deliveries, message_recipients, messages, recipients


class Store(LeaseStore):
    """The one store interface: SQLite by default, PostgreSQL for scale-out."""

    def status(self, *, case: str | None, recipient: str | None) -> dict[str, Any]:
        with self.engine.connect() as conn:
            review = {str(s): 0 for s in ReviewState}
            query = self._scoped_messages(case, recipient)
            for state, count in conn.execute(query):
                review[str(state)] = int(count)
            by_bundle_state: dict[str, int] = {}
            for state, count in conn.execute(
                self._scoped(bundles, case, recipient, bundles.c.state)
            ):
                by_bundle_state[str(state)] = int(count)
            out: dict[str, dict[str, int]] = {str(c): {} for c in ChannelName}
            rows = conn.execute(
                self._scoped(deliveries, case, recipient, deliveries.c.channel, deliveries.c.state)
            )
            for channel, state, count in rows:
                out.setdefault(str(channel), {})[str(state)] = int(count)
        return {
            "messages": review,
            "bundles": sum(by_bundle_state.values()),
            "bundles_by_state": by_bundle_state,
            "deliveries": out,
        }

    def _scoped_messages(self, case: str | None, recipient: str | None) -> Select[Any]:
        if recipient is None:
            query = select(messages.c.review_state, func.count())
            if case:
                query = query.where(messages.c.case_slug == case)
            return query.group_by(messages.c.review_state)
        link = message_recipients
        query = (
            select(messages.c.review_state, func.count())
            .join(link, link.c.message_id == messages.c.id)
            .join(recipients, recipients.c.id == link.c.recipient_id)
            .where(recipients.c.slug == recipient)
        )
        if case:
            query = query.where(recipients.c.case_slug == case)
        return query.group_by(messages.c.review_state)

    def _scoped(
        self, table: Any, case: str | None, recipient: str | None, *cols: Any
    ) -> Select[Any]:
        query = select(*cols, func.count()).join(
            recipients, recipients.c.id == table.c.recipient_id
        )
        if case:
            query = query.where(recipients.c.case_slug == case)
        if recipient:
            query = query.where(recipients.c.slug == recipient)
        return query.group_by(*cols)

    # -- trace ----------------------------------------------------------------------------

    def trace(self, message_id: int) -> dict[str, Any]:
        """Everything that happened to one message, with the ledger events that prove it."""
        with self.engine.connect() as conn:
            row = conn.execute(select(messages).where(messages.c.id == message_id)).mappings().one()
            links = conn.execute(
                select(
                    recipients.c.case_slug,
                    recipients.c.slug,
                    recipients.c.kind,
                    message_recipients.c.bundle_id,
                )
                .join(recipients, recipients.c.id == message_recipients.c.recipient_id)
                .where(message_recipients.c.message_id == message_id)
                .order_by(recipients.c.id)
            ).all()
            bundle_ids = [str(link[3]) for link in links if link[3]]
            bundle_rows = {
                str(b["id"]): dict(b)
                for b in conn.execute(
                    select(bundles).where(bundles.c.id.in_(bundle_ids))
                ).mappings()
            }
            delivery_rows = [
                dict(d)
                for d in conn.execute(
                    select(deliveries)
                    .where(deliveries.c.bundle_id.in_(bundle_ids))
                    .order_by(deliveries.c.created_at)
                ).mappings()
            ]
        subjects = [f"message:{message_id}"] + [f"bundle:{b}" for b in bundle_ids]
        subjects += [f"delivery:{d['id']}" for d in delivery_rows]
        events = [_event_view(e) for e in self.events(subjects=subjects)]
        return {
            "message": _message_view(row),
            "recipients": [
                {"case": c, "recipient": s, "kind": k, "bundle": b} for c, s, k, b in links
            ],
            "bundles": [_bundle_view(bundle_rows[b]) for b in dict.fromkeys(bundle_ids)],
            "deliveries": [_delivery_view(d) for d in delivery_rows],
            "events": events,
        }

    # -- ledger against tables ------------------------------------------------------------

    def table_mismatches(self) -> Iterator[str]:
        """Rows whose state or hash differs from what the ledger last recorded for them."""
        recorded: dict[str, dict[str, Any]] = {}
        for event in self.events():
            if event.subject.startswith(("message:", "bundle:", "delivery:")):
                recorded.setdefault(event.subject, {}).update(_recorded(event))
        with self.engine.connect() as conn:
            for mid, state in conn.execute(select(messages.c.id, messages.c.review_state)):
                want = recorded.get(f"message:{mid}", {}).get("state")
                if want != state:
                    yield f"message {mid}: table says {state}, ledger says {want}"
            for bid, state, sha in conn.execute(
                select(bundles.c.id, bundles.c.state, bundles.c.pdf_sha256)
            ):
                want = recorded.get(f"bundle:{bid}", {})
                if state == "rendered" and want.get("pdf_sha256") != sha:
                    ledger_sha = str(want.get("pdf_sha256"))
                    yield f"bundle {bid}: table has PDF hash {sha}, ledger has {ledger_sha}"
            for did, state, resolution in conn.execute(
                select(deliveries.c.id, deliveries.c.state, deliveries.c.resolution)
            ):
                seen = recorded.get(f"delivery:{did}", {})
                if seen.get("state") != state:
                    yield f"delivery {did}: table says {state}, ledger says {seen.get('state')}"
                if seen.get("resolution", "") != resolution:
                    yield (
                        f"delivery {did}: table says it was decided {resolution!r},"
                        f" ledger says {seen.get('resolution', '')!r}"
                    )


def _recorded(event: chain.Event) -> dict[str, Any]:
    data = event.data()
    if event.kind.startswith("review."):
        state = event.kind.removeprefix("review.")
        return {"state": "pending" if state in ("flagged", "waiting") else state}
    if event.kind.startswith("delivery."):
        return {"state": event.kind.removeprefix("delivery.")}
    if event.kind == "resolution.recorded":
        return {"resolution": data.get("resolution", "")}
    if event.kind == "bundle.rendered":
        return {"pdf_sha256": data.get("pdf_sha256")}
    return {}


def _event_view(e: chain.Event) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "at": e.at,
        "actor": e.actor,
        "kind": e.kind,
        "subject": e.subject,
        "data": e.data(),
        "hash": e.hash,
    }


def _message_view(row: Any) -> dict[str, Any]:
    keys = (
        "id",
        "source",
        "external_id",
        "line",
        "case_slug",
        "target",
        "kind",
        "supporter_country",
        "language",
        "ref",
        "body_mac",
        "review_state",
        "flags",
        "review_note",
        "reviewed_by",
    )
    view = {k: row[k] for k in keys}
    view["submitted_at"] = row["submitted_at"].isoformat()
    view["erased_at"] = row["erased_at"].isoformat() if row["erased_at"] else None
    return view


def _bundle_view(row: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "id",
        "period",
        "state",
        "message_count",
        "country_count",
        "pages",
        "pdf_path",
        "pdf_sha256",
        "manifest_path",
        "error",
    )
    view = {k: row[k] for k in keys}
    view["erased_at"] = row["erased_at"].isoformat() if row["erased_at"] else None
    return view


def _delivery_view(row: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "id",
        "channel",
        "state",
        "proof",
        "attempts",
        "message_id_header",
        "provider_ref",
        "last_error",
    )
    view = {k: row[k] for k in keys}
    view["updated_at"] = row["updated_at"].isoformat()
    return view
