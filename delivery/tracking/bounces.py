"""Bounce reports → delivery events, with the scrubbed report kept as evidence.

Each report is classified. An auto-reply is not a bounce and is skipped. A report that
cannot be read, or that names no delivery of ours, is quarantined with its raw file for a
person — never guessed. A report about one of our deliveries moves it through the state
machine (bounced, delivered) or, for a delay or a temporary failure, is noted without
changing its state. A state never moves backwards: a late "delayed" after "delivered" is
only noted. Reading the same report twice changes nothing the second time.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from delivery.errors import InvalidTransitionError
from delivery.models import TRANSITIONS, DeliveryState
from delivery.outbox import LocalOutbox, Outbox
from delivery.store import Store
from delivery.tracking.dsn import BounceReport, NotABounce, Unparseable, classify, outcome, scrub
from delivery.tracking.mailboxes import quarantine, quarantine_files


@dataclass(kw_only=True)
class TrackReport:
    read: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # "bounced", "noted", "auto-reply", ...
    quarantined: list[str] = field(default_factory=list)  # paths or s3:// URLs, for a person

    def as_dict(self) -> dict[str, object]:
        return {"read": self.read, "outcomes": dict(self.outcomes), "quarantined": self.quarantined}


@dataclass(frozen=True, kw_only=True)
class BounceTracker:
    store: Store
    outbox: Outbox
    bounce_domain: str
    keep_addresses: tuple[str, ...]  # the organisation's own addresses and domains, not scrubbed
    actor: str

    def track(
        self, reports: Iterable[tuple[str, bytes]], *, done: Callable[[str], None] | None = None
    ) -> TrackReport:
        """Apply every report; ``done(key)`` is called once a report is safely recorded."""
        report = TrackReport()
        for key, raw in reports:
            report.read += 1
            report.outcomes[self._one(raw, report)] += 1
            if done is not None:
                done(key)
        return report

    def _one(self, raw: bytes, report: TrackReport) -> str:
        found = classify(raw, bounce_domain=self.bounce_domain)
        if isinstance(found, NotABounce):
            return "auto-reply"
        if isinstance(found, Unparseable):
            return self._quarantine(raw, f"cannot read this report: {found.reason}", report)
        delivery = self.store.find_delivery(found.delivery_id) if found.delivery_id else None
        if delivery is None:
            return self._quarantine(raw, f"names no delivery of ours ({found.delivery_id})", report)
        return self._apply(delivery.id, delivery.state, found, raw)

    def _apply(
        self, delivery_id: str, current: DeliveryState, found: BounceReport, raw: bytes
    ) -> str:
        target, proof = outcome(found)
        detail = f"{found.action} {found.status} {found.diagnostic}".strip()
        cleaned = scrub(raw, self.keep_addresses)
        path = f"evidence/bounces/{hashlib.sha256(cleaned).hexdigest()[:32]}.eml"
        if target == current or self.store.evidence_recorded(f"delivery:{delivery_id}", path):
            return "already recorded"  # the same report, read again
        evidence = self.outbox.write(path, cleaned)
        if target is None or target not in TRANSITIONS[current]:
            what = "delay" if target is None else "late-report"
            self.store.note(
                delivery_id,
                what=what,
                detail=detail,
                actor=self.actor,
                provider_ref=found.source_id,
                artefacts=[evidence],
            )
            return "noted"
        try:
            self.store.transition(
                delivery_id,
                target,
                actor=self.actor,
                proof=proof,
                provider_ref=found.source_id,
                detail=detail,
                artefacts=[evidence],
            )
        except InvalidTransitionError:  # moved by someone else meanwhile
            return "noted"
        return str(target)

    def _quarantine(self, raw: bytes, reason: str, report: TrackReport) -> str:
        report.quarantined.append(quarantine_in(self.outbox, "quarantine/bounces", raw, reason))
        return "quarantined"


def quarantine_in(outbox: Outbox, folder: str, raw: bytes, reason: str) -> str:
    """Keep a report for a person under ``folder`` of the outbox; where they find it.

    A local outbox keeps it in a folder only its owner may open (:func:`quarantine`), and
    gives the report's full path; an S3 outbox keeps the same two files as objects, the
    reason first, and gives the report's s3:// URL.
    """
    if isinstance(outbox, LocalOutbox):
        return str(quarantine(raw, outbox.local_path(folder), reason).resolve())
    (reason_name, text), (name, _) = quarantine_files(raw, reason)
    outbox.write(f"{folder}/{reason_name}", text)
    outbox.write(f"{folder}/{name}", raw)
    return outbox.where(f"{folder}/{name}")
