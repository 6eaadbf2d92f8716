"""Retention: what may be erased, and erasing it with the ledger's knowledge.

A bundle is *settled* when every delivery of it is over — delivered, accepted, spooled or
cancelled, or failed, bounced or returned with a person's (or the fallback policy's)
decision recorded — and the last of them changed before the cut-off. Its rendered files
(the bundle PDF, the e-mails, faxes and envelopes made from it) may then go. A message may
go when every bundle it is in was erased, or when it was rejected before the cut-off:
its body, the supporter's name, e-mail and city, its metadata and its link key are
erased; the row keeps ids, country, states and keyed hashes, so counts still add up.

Erasure is recorded before any file is deleted: a ``retention.erased`` event per bundle
lists its files and their hashes, so ``audit verify`` expects them gone rather than
finding them missing; a ``retention.run`` event records the cut-off and the messages.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update

from delivery.models import DeliveryState, erased_tag
from delivery.store.base import now
from delivery.store.schema import bundles, deliveries, ledger, message_recipients, messages
from delivery.store.schema import recipients as recipients_table
from delivery.store.tracking import TrackingStore

_S = DeliveryState
OVER: frozenset[str] = frozenset({_S.DELIVERED, _S.ACCEPTED, _S.SPOOLED, _S.CANCELLED})
OVER_ONCE_DECIDED: frozenset[str] = frozenset({_S.FAILED, _S.BOUNCED, _S.RETURNED})
CHUNK = 2000


@dataclass(frozen=True, kw_only=True)
class ErasedFile:
    path: str
    sha256: str
    size: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256}


@dataclass(frozen=True, kw_only=True)
class SettledBundle:
    id: str
    case: str
    recipient: str
    settled_at: datetime
    files: tuple[ErasedFile, ...]


@dataclass(frozen=True, kw_only=True)
class Erasure:
    """What one retention run erases (or, in a dry run, would erase)."""

    before: datetime
    bundles: tuple[SettledBundle, ...]
    message_ids: tuple[int, ...]

    @property
    def files(self) -> tuple[ErasedFile, ...]:
        return tuple(f for b in self.bundles for f in b.files)


def id_ranges(ids: Iterable[int]) -> list[list[int]]:
    """Sorted ids as [first, last] runs: a million sequential ids fit in a few pairs."""
    runs: list[list[int]] = []
    for value in sorted(set(ids)):
        if runs and value == runs[-1][1] + 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    return runs


class RetentionStore(TrackingStore):
    def settled_bundles(self, before: datetime) -> list[SettledBundle]:
        """Bundles not yet erased whose deliveries were all over before ``before``."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    bundles.c.id,
                    bundles.c.pdf_path,
                    bundles.c.pdf_sha256,
                    recipients_table.c.case_slug,
                    recipients_table.c.slug,
                    deliveries.c.id.label("delivery_id"),
                    deliveries.c.state,
                    deliveries.c.resolution,
                    deliveries.c.updated_at,
                )
                .join(recipients_table, recipients_table.c.id == bundles.c.recipient_id)
                .join(deliveries, deliveries.c.bundle_id == bundles.c.id)
                .where(bundles.c.state == "rendered", bundles.c.erased_at.is_(None))
                .order_by(bundles.c.id)
            ).all()
        grouped: dict[str, list[Any]] = {}
        for row in rows:
            grouped.setdefault(str(row.id), []).append(row)
        settled: list[SettledBundle] = []
        for bundle_id, group in grouped.items():
            if not all(_over(r.state, r.resolution) for r in group):
                continue
            last = max(r.updated_at for r in group)
            if last >= before:
                continue
            first = group[0]
            files = [*self._delivery_files([str(r.delivery_id) for r in group])]
            if first.pdf_path:
                files.append(ErasedFile(path=str(first.pdf_path), sha256=str(first.pdf_sha256)))
            settled.append(
                SettledBundle(
                    id=bundle_id,
                    case=str(first.case_slug),
                    recipient=str(first.slug),
                    settled_at=last,
                    files=tuple(files),
                )
            )
        return settled

    def _delivery_files(self, delivery_ids: Sequence[str]) -> Iterator[ErasedFile]:
        """The rendered files the ledger recorded for these deliveries (not evidence)."""
        seen: set[str] = set()
        subjects = [f"delivery:{d}" for d in delivery_ids]
        for event in self.events(subjects=subjects):
            for item in event.data().get("artefacts", ()):
                path = str(item["path"])
                if path in seen or path.startswith("evidence/"):
                    continue
                if path.endswith((".pdf", ".eml")):
                    seen.add(path)
                    yield ErasedFile(
                        path=path, sha256=str(item["sha256"]), size=int(item.get("size", 0))
                    )

    def erasable_messages(self, before: datetime, bundle_ids: Sequence[str]) -> list[int]:
        """Messages whose every bundle is erased (or in ``bundle_ids``), or rejected early."""
        pending = set(bundle_ids)
        found: list[int] = []
        with self.engine.connect() as conn:
            found += conn.execute(
                select(messages.c.id).where(
                    messages.c.erased_at.is_(None),
                    messages.c.review_state == "rejected",
                    messages.c.reviewed_at < before,
                )
            ).scalars()
            links = message_recipients
            candidates = conn.execute(
                select(messages.c.id, links.c.bundle_id, bundles.c.erased_at)
                .join(links, links.c.message_id == messages.c.id)
                .outerjoin(bundles, bundles.c.id == links.c.bundle_id)
                .where(
                    messages.c.erased_at.is_(None),
                    messages.c.review_state == "approved",
                )
                .order_by(messages.c.id)
            )
            verdict: dict[int, bool] = {}
            for mid, bundle_id, erased_at in candidates:
                done = bundle_id is not None and (erased_at is not None or bundle_id in pending)
                verdict[int(mid)] = verdict.get(int(mid), True) and done
        found += [mid for mid, ok in verdict.items() if ok]
        return sorted(set(found))

    def plan_erasure(self, before: datetime) -> Erasure:
        settled = self.settled_bundles(before)
        ids = self.erasable_messages(before, [b.id for b in settled])
        return Erasure(before=before, bundles=tuple(settled), message_ids=tuple(ids))

    def erase(
        self, erasure: Erasure, *, days: int, actor: str, extra_files: Sequence[ErasedFile] = ()
    ) -> None:
        """Record and apply ``erasure`` to the tables in one transaction; files go after.

        The caller deletes the files once this returns: the ledger already says they were
        erased, so a run stopped in between leaves files that ``audit verify`` names and
        the next run deletes (``leftover_files``).
        """
        stamp = now()
        before = erasure.before.isoformat()
        with self.transaction() as conn:
            for bundle in erasure.bundles:
                done = conn.execute(
                    update(bundles)
                    .where(bundles.c.id == bundle.id, bundles.c.erased_at.is_(None))
                    .values(erased_at=stamp)
                )
                if not done.rowcount:
                    continue  # another worker's run erased it first
                payload = {
                    "days": days,
                    "before": before,
                    "erased": [f.as_dict() for f in bundle.files],
                }
                self.record(conn, "retention.erased", f"bundle:{bundle.id}", payload, actor)
            for start in range(0, len(erasure.message_ids), CHUNK):
                self._erase_messages(conn, erasure.message_ids[start : start + CHUNK], stamp)
            payload = {
                "days": days,
                "before": before,
                "bundles": len(erasure.bundles),
                "messages": len(erasure.message_ids),
                "message_ids": id_ranges(erasure.message_ids),
                "erased": [f.as_dict() for f in extra_files],
            }
            self.record(conn, "retention.run", f"retention:{stamp.isoformat()}", payload, actor)

    def _erase_messages(self, conn: Connection, ids: Sequence[int], stamp: datetime) -> None:
        rows = conn.execute(
            select(messages.c.id, messages.c.source, messages.c.external_id).where(
                messages.c.id.in_(list(ids)), messages.c.erased_at.is_(None)
            )
        ).all()
        values = [
            {
                "mid": int(mid),
                "tag": ext if ext.startswith("erased:") else erased_tag(self.id_key, src, ext),
            }
            for mid, src, ext in rows
        ]
        if not values:
            return
        conn.execute(
            update(messages)
            .where(messages.c.id == bindparam("mid"))
            .values(
                external_id=bindparam("tag"),
                supporter_name="",
                supporter_email="",
                supporter_city="",
                body="",
                body_sha256="",
                extra={},
                link_key="",
                erased_at=stamp,
            ),
            values,
        )

    def leftover_files(self) -> list[ErasedFile]:
        """Files a ``retention.erased`` event lists that are still to be deleted."""
        with self.engine.connect() as conn:
            payloads = conn.execute(
                select(ledger.c.payload).where(ledger.c.kind.in_(["retention.erased"]))
            ).scalars()
            return [
                ErasedFile(path=str(item["path"]), sha256=str(item["sha256"]))
                for payload in payloads
                for item in json.loads(payload).get("erased", ())
            ]

    def erased_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            gone = conn.execute(
                select(func.count()).select_from(messages).where(messages.c.erased_at.isnot(None))
            ).scalar_one()
            bundles_gone = conn.execute(
                select(func.count()).select_from(bundles).where(bundles.c.erased_at.isnot(None))
            ).scalar_one()
        return {"messages": int(gone), "bundles": int(bundles_gone)}


def _over(state: str, resolution: str) -> bool:
    return state in OVER or (state in OVER_ONCE_DECIDED and bool(resolution))
