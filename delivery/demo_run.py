"""`solidarity demo`: a sample campaign run through the whole pipeline on the defaults."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from delivery import campaign as campaign_file
from delivery import demo, importer
from delivery.config import Settings
from delivery.models import ReviewState
from delivery.outbox import Outbox, open_outbox
from delivery.store import Store
from delivery.worker import Worker


def run_demo(
    settings: Settings, store: Store, *, count: int, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Write the demo files into the outbox, then load, import, approve, collect, merge, deliver."""
    outbox = open_outbox(settings)
    campaign_path, messages_path = _demo_files(settings, outbox, count)
    progress(f"wrote {campaign_path} and {messages_path} ({count} messages)")

    loaded = campaign_file.load_campaign(campaign_path)
    digest = hashlib.sha256(campaign_path.read_bytes()).hexdigest()
    store.save_campaign(loaded, actor="demo", source=str(campaign_path), sha256=digest)
    report = importer.import_messages(
        store, messages_path, source="demo", settings=settings, progress=progress
    )
    progress(
        f"imported {report.imported}, duplicates {report.duplicates},"
        f" rejected {report.rejected_total}"
    )

    clean = store.clean_pending(case=None)
    approved = store.decide(
        clean, ReviewState.APPROVED, actor="demo caseworker", note="demo: clean"
    )
    progress(
        f"a caseworker approved {approved} clean messages;"
        " flagged ones wait in `solidarity review list`"
    )

    summary = asyncio.run(Worker(settings, store, progress=progress).run_once(on_demand=True))
    files = Counter(kind for path in outbox.walk() if (kind := _file_kind(path)))
    return {
        "import": report.as_dict(),
        "approved_by_caseworker": approved,
        "run": summary.as_dict(),
        "status": store.status(case=None, recipient=None),
        "files": dict(sorted(files.items())),
    }


def _demo_files(settings: Settings, outbox: Outbox, count: int) -> tuple[Path, Path]:
    """The campaign and message files, in the outbox's demo/ folder and on this disk.

    With a local outbox they are written in it; with an S3 outbox they are written to the
    local scratch folder, which the import reads, and stored in the bucket as well.
    """
    folder = settings.outbox_path / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    campaign_path = folder / "campaign.toml"
    campaign_path.write_bytes(demo.DEMO_CAMPAIGN_TOML.encode("utf-8"))
    messages_path = folder / f"messages-{count}.csv"
    demo.write_messages_csv(messages_path, count)
    if settings.outbox_location is not None:
        for path in (campaign_path, messages_path):
            outbox.write(f"demo/{path.name}", path.read_bytes())
    return campaign_path, messages_path


def _file_kind(path: str) -> str | None:
    top = path.split("/", 1)[0]
    name = path.rsplit("/", 1)[-1]
    if "/" not in path and name != "solidarity.db":
        return None  # the outbox README, the database's WAL files
    if top == "bundles":
        return "bundles/ manifests" if name.endswith(".manifest.json") else "bundles/ PDF bundles"
    if top == "email":
        return "email/ .eml messages"
    if top == "fax":
        return "fax/ job files" if name.endswith(".job.json") else "fax/ fax-ready PDFs"
    if top == "post":
        if name == "manifest.csv":
            return "post/ mailroom manifests"
        if name == "status.csv":
            return "post/ status forms"
        return "post/ envelope PDFs" if name.endswith(".pdf") else "post/ job notes"
    if name == "solidarity.db":
        return "solidarity.db (SQLite)"
    return f"{top}/ files"
