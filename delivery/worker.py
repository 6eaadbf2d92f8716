"""The async worker: collect → merge → deliver, once or in a loop until stopped.

Rendering runs in a process pool, off the event loop. Every step is committed before the
next, so a run that stops anywhere is resumed by the next one, and nothing is planned,
rendered or sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import signal
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from delivery import collect
from delivery.channels.base import Channel, Parcel
from delivery.channels.email import EmailSpool
from delivery.channels.fax import FaxSpool
from delivery.channels.post import PostSpool
from delivery.config import Settings
from delivery.errors import DeliveryError, PermanentError, TransientError
from delivery.ledger import Entry
from delivery.models import Campaign, ChannelName, DeliveryState, Recipient
from delivery.outbox import Artefact, LocalOutbox
from delivery.render.bundle import BundleDocument, RenderedBundle, render_bundle
from delivery.render.email import compose_email
from delivery.store import Store
from delivery.store.work import BundleRow, DeliveryRow

Progress = Callable[[str], None]


@dataclass(kw_only=True)
class RunSummary:
    bundles_planned: int = 0
    bundles_rendered: int = 0
    bundles_failed: int = 0
    pages: int = 0
    deliveries: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "bundles_planned": self.bundles_planned,
            "bundles_rendered": self.bundles_rendered,
            "bundles_failed": self.bundles_failed,
            "pages": self.pages,
            "deliveries": dict(self.deliveries),
            "errors": self.errors,
        }


def _quiet(_: str) -> None:
    return None


class Worker:
    """One worker: holds the settings, the store and the outbox it was given."""

    def __init__(self, settings: Settings, store: Store, *, progress: Progress = _quiet) -> None:
        self.settings = settings
        self.store = store
        self.outbox = LocalOutbox(settings.outbox_path)
        self.progress = progress
        self.actor = f"worker@{os.uname().nodename}:{os.getpid()}"

    async def run_once(self, *, on_demand: bool = False) -> RunSummary:
        """Drain everything due now, then return what was done."""
        summary = RunSummary()
        campaign = await asyncio.to_thread(self.store.campaign)
        await self._collect(summary, on_demand=on_demand)
        with _render_pool(self.settings) as pool:
            await self._merge(campaign, pool, summary)
        await self._deliver(campaign, summary)
        return summary

    async def run_forever(self, *, poll_seconds: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            summary = await self.run_once()
            self.progress(f"run done: {json.dumps(summary.as_dict(), sort_keys=True)}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=poll_seconds)

    # -- collect --------------------------------------------------------------------------

    async def _collect(self, summary: RunSummary, *, on_demand: bool) -> None:
        campaign = self.store.campaign()
        cadence = {(r.case, r.slug): r.cadence for c in campaign.cases for r in c.recipients}
        stored = [
            load
            for load in await asyncio.to_thread(self.store.recipient_loads)
            if (load.case, load.slug) in cadence
        ]
        names = {load.recipient_id: f"{load.case}/{load.slug}" for load in stored}
        loads = [
            collect.Load(
                recipient_id=load.recipient_id,
                cadence=cadence[(load.case, load.slug)],
                held=load.held,
                waiting=load.waiting,
                periods=load.periods,
            )
            for load in stored
        ]
        for due in collect.plan(loads, datetime.now(UTC), on_demand=on_demand):
            bundle_id = await asyncio.to_thread(
                self.store.create_bundle, due.recipient_id, due.period, actor=self.actor
            )
            if bundle_id:
                summary.bundles_planned += 1
                self.progress(
                    f"collected {bundle_id} for {names[due.recipient_id]}: {due.waiting} messages"
                )

    # -- merge ----------------------------------------------------------------------------

    async def _merge(self, campaign: Campaign, pool: Executor, summary: RunSummary) -> None:
        planned = await asyncio.to_thread(self.store.bundles_in, "planned")
        loop = asyncio.get_running_loop()
        jobs = []
        for bundle in planned:
            doc = await asyncio.to_thread(self._document, campaign, bundle)
            jobs.append(
                (bundle, loop.run_in_executor(pool, render_bundle, doc, self.settings.templates))
            )
        for done, (bundle, job) in enumerate(jobs, start=1):
            try:
                rendered = await job
            except (DeliveryError, OSError, ValueError, RuntimeError) as exc:
                error = f"bundle {bundle.id} for {bundle.case}/{bundle.slug}: {exc}"
                await asyncio.to_thread(
                    self.store.mark_render_failed, bundle.id, error=error, actor=self.actor
                )
                summary.bundles_failed += 1
                summary.errors.append(error)
                self.progress(f"[{done}/{len(jobs)}] FAILED {error}")
                continue
            await asyncio.to_thread(self._store_rendered, bundle, rendered)
            summary.bundles_rendered += 1
            summary.pages += rendered.pages
            self.progress(
                f"[{done}/{len(jobs)}] rendered {bundle.id}:"
                f" {bundle.message_count} messages, {rendered.pages} pages"
            )

    def _document(self, campaign: Campaign, bundle: BundleRow) -> BundleDocument:
        case = campaign.case(bundle.case)
        assert case is not None, f"bundle {bundle.id}: case {bundle.case} is not loaded"
        recipient = next(r for r in case.recipients if r.slug == bundle.slug)
        return BundleDocument(
            bundle_id=bundle.id,
            organisation=campaign.organisation,
            case=case,
            recipient=recipient,
            messages=self.store.bundle_messages(bundle.id),
            created_at=bundle.created_at,
        )

    def _store_rendered(self, bundle: BundleRow, rendered: RenderedBundle) -> None:
        base = f"bundles/{bundle.case}/{bundle.slug}/{bundle.id}"
        pdf = self.outbox.write(f"{base}.pdf", rendered.pdf)
        manifest_data = {**rendered.manifest, "pdf_sha256": pdf.sha256, "pages": rendered.pages}
        manifest_bytes = (
            json.dumps(manifest_data, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
        ).encode()
        manifest = self.outbox.write(f"{base}.manifest.json", manifest_bytes)
        countries = manifest_data.get("country_count", 0)
        self.store.mark_rendered(
            bundle.id,
            pdf=pdf,
            manifest=manifest,
            pages=rendered.pages,
            countries=int(countries) if isinstance(countries, int) else 0,
            template_version=rendered.template_version,
            actor=self.actor,
        )

    # -- deliver --------------------------------------------------------------------------

    async def _deliver(self, campaign: Campaign, summary: RunSummary) -> None:
        bounce = campaign.organisation.bounce_domain
        for bundle in await asyncio.to_thread(self.store.bundles_in, "rendered"):
            recipient = _recipient(campaign, bundle.case, bundle.slug)
            await asyncio.to_thread(
                self.store.ensure_delivery,
                bundle,
                recipient.channels[0],
                bounce_domain=bounce,
                actor=self.actor,
            )
        channels = self._channels()
        ready = await asyncio.to_thread(
            self.store.deliveries_in, (DeliveryState.QUEUED, DeliveryState.SENDING)
        )
        for delivery in ready:
            state = await self._send(campaign, channels[delivery.channel], delivery, summary)
            summary.deliveries[f"{delivery.channel}:{state}"] += 1
        for channel in channels.values():
            artefacts = await channel.close()
            if artefacts:
                await asyncio.to_thread(self._record_close, channel.name, artefacts)

    def _channels(self) -> dict[ChannelName, Channel]:
        job = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + f"-{os.getpid()}"
        return {
            ChannelName.EMAIL: EmailSpool(self.outbox),
            ChannelName.FAX: FaxSpool(self.outbox),
            ChannelName.POST: PostSpool(self.outbox, job_id=job),
        }

    async def _send(
        self, campaign: Campaign, channel: Channel, delivery: DeliveryRow, summary: RunSummary
    ) -> str:
        if delivery.state == DeliveryState.QUEUED:
            moved = await asyncio.to_thread(
                self.store.transition, delivery.id, DeliveryState.SENDING, actor=self.actor
            )
            if not moved:
                return "skipped"
        try:
            parcel = await asyncio.to_thread(self._parcel, campaign, delivery)
            receipt = await channel.send(parcel)
        except TransientError as exc:
            return await self._settle(delivery, DeliveryState.DEFERRED, str(exc), summary)
        except (PermanentError, OSError) as exc:
            return await self._settle(delivery, DeliveryState.FAILED, str(exc), summary)
        await asyncio.to_thread(
            self.store.transition,
            delivery.id,
            receipt.state,
            actor=self.actor,
            proof=receipt.proof,
            provider_ref=receipt.provider_ref,
            detail=receipt.detail,
            artefacts=receipt.artefacts,
        )
        self.progress(
            f"{delivery.channel} {delivery.id} to {delivery.case}/{delivery.slug}: {receipt.state}"
        )
        return str(receipt.state)

    async def _settle(
        self, delivery: DeliveryRow, state: DeliveryState, error: str, summary: RunSummary
    ) -> str:
        detail = f"delivery {delivery.id} to {delivery.case}/{delivery.slug}: {error}"
        await asyncio.to_thread(
            self.store.transition, delivery.id, state, actor=self.actor, detail=detail
        )
        summary.errors.append(detail)
        self.progress(f"{state.upper()} {detail}")
        return str(state)

    def _parcel(self, campaign: Campaign, delivery: DeliveryRow) -> Parcel:
        bundle = self.store.bundle(delivery.bundle_id)
        recipient = _recipient(campaign, delivery.case, delivery.slug)
        pdf = self.outbox.read(bundle.pdf_path)
        email: bytes | None = None
        if delivery.channel == ChannelName.EMAIL:
            doc = self._document(campaign, bundle)
            manifest = json.loads(
                self.outbox.read(bundle.pdf_path.removesuffix(".pdf") + ".manifest.json")
            )
            rendered = RenderedBundle(
                pdf=pdf,
                pages=bundle.pages,
                manifest=manifest,
                template_version=str(manifest.get("template_version", "")),
            )
            email = compose_email(
                doc, rendered, delivery_id=delivery.id, templates=self.settings.templates
            )
        org = campaign.organisation
        return Parcel(
            delivery_id=delivery.id,
            bundle_id=bundle.id,
            channel=delivery.channel,
            organisation=org,
            recipient=recipient,
            pdf=pdf,
            pages=bundle.pages,
            message_count=bundle.message_count,
            email=email,
            envelope_from=f"bounces+{delivery.id}@{org.bounce_domain}",
        )

    def _record_close(self, channel: ChannelName, artefacts: tuple[Artefact, ...]) -> None:
        payload = {
            "channel": str(channel),
            "artefacts": [{"path": a.path, "sha256": a.sha256, "size": a.size} for a in artefacts],
        }
        folder = str(Path(artefacts[0].path).parent)
        with self.store.transaction() as conn:
            self.store.append(
                conn,
                [
                    Entry(
                        kind=f"{channel}.job-closed",
                        subject=f"job:{folder}",
                        payload=payload,
                        actor=self.actor,
                    )
                ],
            )


def _recipient(campaign: Campaign, case_slug: str, slug: str) -> Recipient:
    case = campaign.case(case_slug)
    found = next((r for r in case.recipients if r.slug == slug), None) if case else None
    if found is None:
        raise PermanentError(f"recipient {case_slug}/{slug}: no longer in the loaded campaign")
    return found


@contextlib.contextmanager
def _render_pool(settings: Settings) -> Iterator[Executor]:
    workers = settings.render.processes or max(1, os.cpu_count() or 1)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def install_stop_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
