"""Keep supporters' data no longer than needed: plan, record, then erase.

``retention.days`` after the last delivery of a bundle ended (see
:mod:`delivery.store.retention` for what "ended" means), the bundle's rendered files and
its messages' personal data go; import reject files (whole rows as supporters sent them)
go that long after they were written. The ledger records every erased file with its
hash before the file is deleted, so ``audit verify`` still passes and tells an erased
file from a lost one. Erasing a message's link key makes its keyed references in the
ledger point at nobody (crypto-shredding). Sizes and ages come from the outbox, so a local
folder and an S3 bucket are purged alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from delivery.outbox import Outbox
from delivery.store import Store
from delivery.store.retention import ErasedFile, Erasure

REJECTS_FOLDER = "rejected"


@dataclass(kw_only=True)
class PurgeReport:
    days: int
    before: datetime
    dry_run: bool
    bundles: int = 0
    messages: int = 0
    files: int = 0
    bytes: int = 0
    reject_files: int = 0
    leftovers: int = 0  # files an earlier, interrupted run recorded and left behind
    by_case: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "days": self.days,
            "before": self.before.isoformat(),
            "bundles": self.bundles,
            "messages": self.messages,
            "files": self.files,
            "bytes": self.bytes,
            "reject_files": self.reject_files,
            "leftovers": self.leftovers,
            "by_case": self.by_case,
        }


def purge(
    store: Store,
    outbox: Outbox,
    *,
    days: int,
    now: datetime,
    actor: str,
    dry_run: bool = False,
    progress: Callable[[str], None] | None = None,
) -> PurgeReport:
    """Erase what is older than ``days`` (or, with ``dry_run``, only say what would go)."""
    before = now - timedelta(days=days)
    erasure = store.plan_erasure(before)
    rejects = _old_rejects(outbox, before)
    report = _describe(erasure, rejects, days=days, dry_run=dry_run, outbox=outbox)
    if dry_run:
        return report
    if erasure.bundles or erasure.message_ids or rejects:
        if progress:
            progress(
                f"erasing {len(erasure.bundles)} bundles' files and"
                f" {len(erasure.message_ids)} messages' personal data"
            )
        store.erase(erasure, days=days, actor=actor, extra_files=rejects)
        for item in (*erasure.files, *rejects):
            outbox.delete(item.path)
    report.leftovers = sum(outbox.delete(f.path) for f in store.leftover_files())
    return report


def _describe(
    erasure: Erasure,
    rejects: list[ErasedFile],
    *,
    days: int,
    dry_run: bool,
    outbox: Outbox,
) -> PurgeReport:
    report = PurgeReport(days=days, before=erasure.before, dry_run=dry_run)
    report.bundles = len(erasure.bundles)
    report.messages = len(erasure.message_ids)
    report.reject_files = len(rejects)
    for bundle in erasure.bundles:
        sizes = [_size(outbox, f) for f in bundle.files]
        case = report.by_case.setdefault(bundle.case, {"bundles": 0, "files": 0, "bytes": 0})
        case["bundles"] += 1
        case["files"] += len(bundle.files)
        case["bytes"] += sum(sizes)
        report.files += len(bundle.files)
        report.bytes += sum(sizes)
    report.files += len(rejects)
    report.bytes += sum(f.size for f in rejects)
    return report


def _size(outbox: Outbox, item: ErasedFile) -> int:
    stored = outbox.stat(item.path)
    return stored.size if stored else 0


def _old_rejects(outbox: Outbox, before: datetime) -> list[ErasedFile]:
    """The import reject files (``rejected/*.csv``) last written before ``before``."""
    found: list[ErasedFile] = []
    for path in outbox.walk(REJECTS_FOLDER):
        name = path.removeprefix(f"{REJECTS_FOLDER}/")
        if "/" in name or not name.endswith(".csv"):
            continue
        stored = outbox.stat(path)
        if stored is None or stored.modified >= before:
            continue
        digest = outbox.sha256(path)
        if digest is not None:  # None: deleted since it was listed
            found.append(ErasedFile(path=path, sha256=digest, size=stored.size))
    return found
