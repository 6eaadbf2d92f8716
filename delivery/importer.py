"""One import run: read a message file, screen each row, store it, report what happened."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from delivery import review
from delivery.config import Settings
from delivery.errors import InputError
from delivery.intake import (
    SOURCE_CHARS,
    Rejected,
    read_messages,
    recipients_for,
    write_rejects,
)
from delivery.models import Campaign, MessageDraft, ReviewState
from delivery.outbox import LocalOutbox, open_outbox
from delivery.store import Store
from delivery.store.messages import Screened

CHUNK = 2000  # rows per transaction
SHOWN_REJECTS = 10_000  # rejects kept for the report; all of them go to the rejects file


@dataclass(kw_only=True)
class ImportReport:
    file: str
    source: str
    imported: int = 0
    duplicates: int = 0
    approved: int = 0
    flagged: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    rejected_total: int = 0
    rejects_file: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "source": self.source,
            "imported": self.imported,
            "duplicates": self.duplicates,
            "approved": self.approved,
            "flagged": self.flagged,
            "rejected": [
                {"line": r.line, "field": r.field, "reason": r.reason} for r in self.rejected
            ],
            "rejected_total": self.rejected_total,
            "rejects_file": self.rejects_file,
        }


def import_messages(
    store: Store,
    path: Path,
    *,
    source: str,
    settings: Settings,
    progress: Callable[[str], None] | None = None,
) -> ImportReport:
    """Import `path`; bad rows are reported and written to outbox/rejected/, never stop the rest."""
    if not source.strip():
        raise InputError(f"{path}: --source must not be empty")
    if len(source) > SOURCE_CHARS:
        raise InputError(
            f"{path}: --source has {len(source)} characters, the limit is {SOURCE_CHARS}"
        )
    campaign = store.campaign()
    rows = read_messages(path, source=source, campaign=campaign, settings=settings.intake)
    report = ImportReport(file=str(path), source=source)
    batch = store.start_batch(source=source, filename=str(path), sha256=_file_sha256(path))
    ids = store.recipient_ids()
    chunk: list[Screened] = []
    all_rejects: list[Rejected] = []
    for row in rows:
        if isinstance(row, Rejected):
            all_rejects.append(row)
            continue
        chunk.append(_screen(row, campaign, ids, settings))
        if len(chunk) >= CHUNK:
            _flush(store, batch, chunk, report, settings.actor, progress)
    _flush(store, batch, chunk, report, settings.actor, progress)
    _report_rejects(report, all_rejects, settings, source, batch)
    store.finish_batch(
        batch,
        imported=report.imported,
        duplicates=report.duplicates,
        rejected=report.rejected_total,
        actor=settings.actor,
    )
    return report


def _screen(
    draft: MessageDraft, campaign: Campaign, ids: dict[tuple[str, str], int], settings: Settings
) -> Screened:
    case = campaign.case(draft.case)
    assert case is not None, "intake only yields drafts for known cases"
    targets = recipients_for(campaign, draft.case, draft.to)
    flags = review.screen(draft, case, targets, settings.review)
    state = (
        ReviewState.APPROVED if review.auto_approves(draft, case, flags) else ReviewState.PENDING
    )
    return Screened(
        draft=draft,
        state=state,
        flags=flags,
        recipient_ids=tuple(ids[(r.case, r.slug)] for r in targets),
    )


def _flush(
    store: Store,
    batch: int,
    chunk: list[Screened],
    report: ImportReport,
    actor: str,
    progress: Callable[[str], None] | None,
) -> None:
    if not chunk:
        return
    imported, duplicates = store.add_messages(batch, chunk, actor=actor)
    report.imported += imported
    report.duplicates += duplicates
    report.approved += sum(1 for s in chunk if s.state == ReviewState.APPROVED)
    report.flagged += sum(1 for s in chunk if s.flags)
    chunk.clear()
    if progress:
        progress(f"  {report.imported + report.duplicates} rows stored ({report.imported} new)")


def _report_rejects(
    report: ImportReport, rejects: list[Rejected], settings: Settings, source: str, batch: int
) -> None:
    report.rejected_total = len(rejects)
    report.rejected = rejects[:SHOWN_REJECTS]
    if not rejects:
        return
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in source)[:60]
    relpath = f"rejected/{safe}-batch{batch}-{stamp}.csv"
    outbox = open_outbox(settings)
    outbox.workdir.mkdir(parents=True, exist_ok=True)
    scratch = outbox.workdir / f"rejects-batch{batch}-{stamp}.csv"
    write_rejects(scratch, rejects)
    outbox.adopt(relpath, scratch)  # whole or not at all, in the folder or the bucket
    if isinstance(outbox, LocalOutbox):
        report.rejects_file = str(outbox.local_path(relpath).resolve())
    else:
        report.rejects_file = outbox.where(relpath)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from exc
    return digest.hexdigest()
