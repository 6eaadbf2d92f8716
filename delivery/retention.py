"""Keep supporters' data no longer than needed: plan, record, then erase.

``retention.days`` after the last delivery of a bundle ended (see
:mod:`delivery.store.retention` for what "ended" means), the bundle's rendered files and
its messages' personal data go; import reject files (whole rows as supporters sent them)
go that long after they were written. The ledger records every erased file with its
hash before the file is deleted, so ``audit verify`` still passes and tells an erased
file from a lost one. Erasing a message's link key makes its keyed references in the
ledger point at nobody (crypto-shredding).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from delivery.outbox import LocalOutbox
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
    outbox: LocalOutbox,
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
    outbox: LocalOutbox,
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


def _size(outbox: LocalOutbox, item: ErasedFile) -> int:
    path = outbox.local_path(item.path)
    return path.stat().st_size if path.is_file() else 0


def _old_rejects(outbox: LocalOutbox, before: datetime) -> list[ErasedFile]:
    folder = outbox.local_path(REJECTS_FOLDER)
    if not folder.is_dir():
        return []
    found: list[ErasedFile] = []
    for path in sorted(folder.glob("*.csv")):
        stat = path.stat()
        if stat.st_mtime < before.timestamp():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            found.append(
                ErasedFile(path=f"{REJECTS_FOLDER}/{path.name}", sha256=digest, size=stat.st_size)
            )
    return found
