"""`solidarity demo`: a sample campaign run through the whole pipeline on the defaults."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Callable
from typing import Any

from delivery import campaign as campaign_file
from delivery import demo, importer
from delivery.config import Settings
from delivery.models import ReviewState
from delivery.outbox import LocalOutbox
from delivery.store import Store
from delivery.worker import Worker


def run_demo(
    settings: Settings, store: Store, *, count: int, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Write the demo files into the outbox, then load, import, approve, collect, merge, deliver."""
    outbox = LocalOutbox(settings.outbox_path)
    campaign_path = outbox.local_path("demo/campaign.toml")
    outbox.write("demo/campaign.toml", demo.DEMO_CAMPAIGN_TOML.encode("utf-8"))
    messages_path = outbox.local_path(f"demo/messages-{count}.csv")
    messages_path.parent.mkdir(parents=True, exist_ok=True)
    demo.write_messages_csv(messages_path, count)
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
