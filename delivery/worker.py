"""The async worker: collect → merge → deliver, once or in a loop until stopped.

Rendering runs in a process pool, off the event loop. Every step is committed before the
next, so a run that stops anywhere is resumed by the next one, and nothing is planned,
rendered or sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError

from delivery import collect, faults
from delivery.channels.base import Channel, Parcel
from delivery.channels.email import EmailSpool
from delivery.channels.fax import FaxSpool
from delivery.channels.fax_phaxio import PhaxioFax
from delivery.channels.post import PostSpool
from delivery.channels.smtp import SmtpChannel
from delivery.config import FaxGateway, Settings
from delivery.errors import (
    AmbiguousDeliveryError,
    ChannelError,
    ChannelSetupError,
    DeliveryError,
    PermanentError,
    TransientError,
)
from delivery.ledger import Entry
from delivery.limits import DomainLimiter, domain_of
from delivery.models import (
    Campaign,
    ChannelName,
    DeliveryState,
    Fallback,
    Format,
    Part,
    Recipient,
)
from delivery.outbox import Artefact, open_outbox
from delivery.render.bundle import BundleDocument, RenderedBundle
from delivery.render.email import compose_email
from delivery.render.merge import Merged, Merger
from delivery.render.pool import RenderPool
from delivery.render.volumes import manifest_bytes
from delivery.retention import purge
from delivery.retry import RetryPolicy
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


RETENTION_LAST_RUN = "retention_last_run"


async def _together(work: Sequence[Coroutine[Any, Any, None]]) -> None:
    """Run ``work`` side by side; when one fails, stop the others before raising its error."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class _Solo:
    """Renders share the pool; a suspect one waits for the others and runs alone.

    Waiting suspects go first: no new shared render starts while one waits.
    """

    def __init__(self) -> None:
        self._changed = asyncio.Condition()
        self._shared = 0
        self._alone = False
        self._waiting = 0

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._alone and not self._waiting)
            self._shared += 1
        try:
            yield
        finally:
            async with self._changed:
                self._shared -= 1
                self._changed.notify_all()

    @contextlib.asynccontextmanager
    async def alone(self) -> AsyncIterator[None]:
        async with self._changed:
            self._waiting += 1
            await self._changed.wait_for(lambda: not self._alone and not self._shared)
            self._waiting -= 1
            self._alone = True
        try:
            yield
        finally:
            async with self._changed:
                self._alone = False
                self._changed.notify_all()


@dataclass(frozen=True)
class _Deferred:
    """A bundle rendered but not stored (the outbox failed for now): planned again."""

    reason: str


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' * (count != 1)}"


def _quiet(_: str) -> None:
    return None


class Worker:
    """One worker: holds the settings, the store and the outbox it was given."""

    def __init__(self, settings: Settings, store: Store, *, progress: Progress = _quiet) -> None:
        self.settings = settings
        self.store = store
        self.outbox = open_outbox(settings)
        self.progress = progress
        self.actor = f"worker@{os.uname().nodename}:{os.getpid()}"
        self.retry = RetryPolicy()
        self.domains = DomainLimiter(
            concurrency=settings.limits.per_domain_concurrency,
            per_minute=settings.limits.per_domain_per_minute,
            book=self._book_start,  # one pace per domain for every worker on the database
        )
        self._errors: list[str] = []

    async def _book_start(self, domain: str, interval: float) -> float:
        return await asyncio.to_thread(self.store.reserve_start, domain, interval)

    async def run_once(self, *, on_demand: bool = False) -> RunSummary:
        """Drain everything due now, then return what was done.

        What this worker renders or sends it first claims, and a heartbeat keeps its
        claims alive while it works; whatever it still holds at the end (or when it is
        cancelled) it gives back, so other workers never wait for a lease to run out.
        """
        summary = RunSummary()
        campaign = await asyncio.to_thread(self.store.campaign)
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            await self._collect(summary, on_demand=on_demand)
            # The render processes take seconds to start: only when there is a bundle.
            planned = len(await asyncio.to_thread(self.store.bundles_in, "planned"))
            if planned:
                async with RenderPool(self.settings.render) as pool:
                    await self._merge(campaign, pool, summary, planned=planned)
            await self._deliver(campaign, summary)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError, DBAPIError):
                await heartbeat
            with contextlib.suppress(DBAPIError):  # unreachable: the claims expire instead
                await asyncio.to_thread(self.store.release, self.actor)
        return summary

    async def _heartbeat(self) -> None:
        """Renew this worker's leases three times a lease; a missed beat is tried again."""
        lease = self.settings.worker.lease_seconds
        while True:
            await asyncio.sleep(lease / 3)
            with contextlib.suppress(DBAPIError):
                await asyncio.to_thread(self.store.renew, self.actor, lease)

    async def run_forever(self, *, poll_seconds: float, stop: asyncio.Event) -> None:
        """Run, wait ``poll_seconds``, run again, until ``stop``.

        When the database cannot be reached the run is abandoned (its claims expire on
        their own) and the worker waits — 1 s, then twice as long each time, at most
        ``poll_seconds`` — before trying again; it never exits for that.
        """
        backoff = 1.0
        while not stop.is_set():
            wait = poll_seconds
            try:
                summary = await self.run_once()
                self.progress(f"run done: {json.dumps(summary.as_dict(), sort_keys=True)}")
                await asyncio.to_thread(self.retention_if_due, datetime.now(UTC))
                backoff = 1.0
            except DBAPIError as exc:
                if not exc.connection_invalidated and not isinstance(exc, OperationalError):
                    raise
                wait = min(backoff, poll_seconds)
                backoff *= 2
                reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
                self.progress(f"database unavailable ({reason}); trying again in {wait:g} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)

    def retention_if_due(self, now: datetime) -> bool:
        """Erase what the retention period allows, at most once a day; True when it ran."""
        last = self.store.meta_value(RETENTION_LAST_RUN)
        if isinstance(last, str) and now - datetime.fromisoformat(last) < timedelta(days=1):
            return False
        report = purge(
            self.store,
            self.outbox,
            days=self.settings.retention.days,
            now=now,
            actor=self.actor,
            progress=self.progress,
        )
        self.store.set_meta(RETENTION_LAST_RUN, now.isoformat())
        if report.messages or report.files:
            self.progress(
                f"retention: erased {report.messages} messages' personal data, {report.files} files"
            )
        return True

    # -- collect --------------------------------------------------------------------------

    async def _collect(self, summary: RunSummary, *, on_demand: bool) -> None:
        campaign = self.store.campaign()
        cadence = {(r.case, r.slug): r.cadence for c in campaign.cases for r in c.recipients}
        digest = {
            (r.case, r.slug)
            for c in campaign.cases
            for r in c.recipients
            if r.format is Format.DIGEST
        }
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
                digest=(load.case, load.slug) in digest,
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
                    f"collected {bundle_id} for {names[due.recipient_id]}:"
                    f" {_counted(due.waiting, 'message')}"
                )

    # -- merge ----------------------------------------------------------------------------

    async def _merge(
        self, campaign: Campaign, pool: RenderPool, summary: RunSummary, *, planned: int
    ) -> None:
        """Render planned bundles, each claimed just before it is rendered.

        A few lanes work side by side (bundles held in memory at once); each claims one
        bundle at a time, so other workers on the same database get their share and a
        slow bundle never holds up the rest.
        """
        merger = Merger(pool, self.settings.templates, self.settings.render, self.outbox.workdir)
        solo = _Solo()
        done = 0
        deferred: set[str] = set()  # given back this run: the next run tries them again

        async def lane() -> None:
            nonlocal done
            while True:
                claimed = await asyncio.to_thread(
                    self.store.claim_bundles,
                    self.actor,
                    limit=1,
                    ttl=self.settings.worker.lease_seconds,
                    skip=frozenset(deferred),
                )
                if not claimed:
                    return
                (bundle,) = claimed
                faults.point("bundle-claimed")
                died = await asyncio.to_thread(self.store.unfinished_renders, bundle.id)
                if not await self._not_poison(bundle, died, summary):
                    continue
                # A bundle being rendered when a worker died renders alone from then on: a
                # crash then tells which bundle caused it, and no other bundle pays for it.
                async with solo.alone() if died else solo.shared():
                    await asyncio.to_thread(self.store.render_started, bundle.id)
                    faults.point("render-begun", bundle.id)
                    outcome = await self._merge_one(campaign, merger, bundle)
                done += 1
                shown = f"[{done}/{max(planned, done)}]"
                if isinstance(outcome, _Deferred):
                    deferred.add(bundle.id)  # before it is given back: no lane takes it again
                    await asyncio.to_thread(self.store.render_deferred, bundle.id, self.actor)
                    summary.errors.append(outcome.reason)
                    self.progress(f"{shown} not stored, left for the next run: {outcome.reason}")
                    continue
                if isinstance(outcome, str):
                    summary.bundles_failed += 1
                    summary.errors.append(outcome)
                    self.progress(f"{shown} FAILED {outcome}")
                    continue
                summary.bundles_rendered += 1
                summary.pages += outcome.pages
                volumes = len(outcome.envelopes)
                self.progress(
                    f"{shown} rendered {bundle.id}: {_counted(bundle.message_count, 'message')},"
                    f" {outcome.pages} pages" + (f", in {volumes} envelopes" if volumes > 1 else "")
                )

        await _together([lane() for _ in range(max(2, pool.size * 2))])

    async def _not_poison(self, bundle: BundleRow, died: int, summary: RunSummary) -> bool:
        """False, and the bundle dead-lettered, when its renders kill their workers."""
        if died < self.settings.worker.render_attempts:
            return True
        error = (
            f"bundle {bundle.id} for {bundle.case}/{bundle.slug}: its render was started"
            f" {died} times and never finished (the worker stopped each time; out of"
            " memory?); set aside, the other bundles go on. `solidarity bundles retry` after"
            " the cause is fixed"
        )
        await asyncio.to_thread(
            self.store.mark_render_failed, bundle.id, error=error, actor=self.actor
        )
        summary.bundles_failed += 1
        summary.errors.append(error)
        self.progress(f"FAILED {error}")
        return False

    async def _merge_one(
        self, campaign: Campaign, merger: Merger, bundle: BundleRow
    ) -> Merged | str | _Deferred:
        """The merged bundle, stored and recorded; or the error, recorded as its failure.

        A transient failure of the outbox is not the bundle's: the caller gives it back.
        """
        merged: Merged | None = None
        try:
            doc = await asyncio.to_thread(self._document, campaign, bundle)
            merged = await merger.merge(doc)
            await asyncio.to_thread(self._store_rendered, bundle, merged)
            return merged
        except TransientError as exc:
            # The outbox could not take the files this time (S3 answering 5xx, a timeout):
            # the bundle stays planned for the next run, and its render (supporters' words)
            # is not left behind in the scratch folder.
            if merged is not None:
                merged.path.unlink(missing_ok=True)
            return _Deferred(f"bundle {bundle.id} for {bundle.case}/{bundle.slug}: {exc}")
        except (DeliveryError, OSError) as exc:
            error = f"bundle {bundle.id} for {bundle.case}/{bundle.slug}: {exc}"
            await asyncio.to_thread(
                self.store.mark_render_failed, bundle.id, error=error, actor=self.actor
            )
            return error

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

    def _store_rendered(self, bundle: BundleRow, merged: Merged) -> None:
        if not self.store.holds(self.actor, bundle_id=bundle.id):
            # this worker stalled past its lease and another took the bundle over
            merged.path.unlink(missing_ok=True)
            return
        base = f"bundles/{bundle.case}/{bundle.slug}/{bundle.id}"
        pdf = self.outbox.adopt(f"{base}.pdf", merged.path)
        data = {**merged.manifest, "pdf_sha256": pdf.sha256, "pages": merged.pages}
        manifest = self.outbox.write(f"{base}.manifest.json", manifest_bytes(data))
        faults.point("render-published")
        self.store.mark_rendered(
            bundle.id,
            pdf=pdf,
            manifest=manifest,
            pages=merged.pages,
            countries=int(str(data.get("country_count", 0))),
            template_version=merged.template_version,
            actor=self.actor,
        )

    # -- deliver --------------------------------------------------------------------------

    async def _deliver(self, campaign: Campaign, summary: RunSummary) -> None:
        bounce = campaign.organisation.bounce_domain
        for bundle in await asyncio.to_thread(self.store.bundles_undelivered):
            recipient = _recipient(campaign, bundle.case, bundle.slug)
            await asyncio.to_thread(
                self.store.ensure_delivery,
                bundle,
                recipient.channels[0],
                bounce_domain=bounce,
                actor=self.actor,
            )
        channels = self._channels(campaign)
        stopped: set[ChannelName] = set()  # channels that cannot work as configured
        # Fallbacks decided in one round (or since the last run) are sent in the next one.
        for turn in range(1 + len(ChannelName)):
            fallbacks = await self._fall_back(campaign, summary)
            if turn and not fallbacks:
                break
            await self._deliver_ready(campaign, channels, summary, stopped)
        for channel in channels.values():
            artefacts = await channel.close()
            if artefacts:
                await asyncio.to_thread(self._record_close, channel.name, artefacts)
        summary.errors.extend(self._errors)
        self._errors.clear()

    async def _deliver_ready(
        self,
        campaign: Campaign,
        channels: dict[ChannelName, Channel],
        summary: RunSummary,
        stopped: set[ChannelName],
    ) -> None:
        """Send what is due, claiming more as deliveries finish, so workers share the work.

        At most a window of deliveries is claimed at once; each handled one is given back
        at once and its place filled by a new claim. One not due yet stays claimed until
        the end of the run, so the next claims pass over it.
        """
        gate = asyncio.Semaphore(self.settings.limits.connections)
        window = self.settings.limits.connections * 8
        running: set[asyncio.Task[None]] = set()

        async def one(delivery: DeliveryRow) -> None:
            try:
                state = await self._paced(
                    campaign, channels, delivery, datetime.now(UTC), gate, stopped
                )
            except ChannelSetupError as exc:
                if delivery.channel not in stopped:
                    stopped.add(delivery.channel)
                    summary.errors.append(str(exc))
                    self.progress(f"STOPPED {delivery.channel}: {exc}")
                return
            if state:
                summary.deliveries[f"{delivery.channel}:{state}"] += 1
                await asyncio.to_thread(self.store.release, self.actor, delivery_ids=[delivery.id])

        try:
            while True:
                claimed = await self._claim_ready(window - len(running))
                running.update(asyncio.create_task(one(d)) for d in claimed)
                if not running:
                    return
                finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                running.difference_update(finished)
                for task in finished:
                    task.result()  # an unexpected error stops the run, as before
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _claim_ready(self, room: int) -> list[DeliveryRow]:
        if room <= 0:
            return []
        claimed = await asyncio.to_thread(
            self.store.claim_deliveries,
            self.actor,
            (DeliveryState.QUEUED, DeliveryState.SENDING, DeliveryState.DEFERRED),
            limit=room,
            ttl=self.settings.worker.lease_seconds,
        )
        if claimed:
            faults.point("delivery-claimed")
        return claimed

    async def _paced(
        self,
        campaign: Campaign,
        channels: dict[ChannelName, Channel],
        delivery: DeliveryRow,
        now: datetime,
        gate: asyncio.Semaphore,
        stopped: set[ChannelName],
    ) -> str | None:
        """One delivery, within its destination domain's concurrency and pace.

        The wait for a domain's turn comes before taking one of the run's slots, so
        deliveries paced for one busy domain never keep the others waiting.
        """
        channel = channels[delivery.channel]
        domain = ""
        if delivery.channel == ChannelName.EMAIL and not isinstance(channel, SPOOLS):
            domain = domain_of(_recipient(campaign, delivery.case, delivery.slug).email)
        if not domain:
            return await self._gated(campaign, channel, delivery, now, gate, stopped)
        async with self.domains.slot(domain):
            return await self._gated(campaign, channel, delivery, now, gate, stopped)

    async def _gated(
        self,
        campaign: Campaign,
        channel: Channel,
        delivery: DeliveryRow,
        now: datetime,
        gate: asyncio.Semaphore,
        stopped: set[ChannelName],
    ) -> str | None:
        async with gate:
            if delivery.channel in stopped:  # leave the rest of that channel waiting
                return None
            return await self._attempt(campaign, channel, delivery, now)

    def _channels(self, campaign: Campaign) -> dict[ChannelName, Channel]:
        job = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + f"-{os.getpid()}"
        settings = self.settings
        email: Channel
        if settings.ses.region:
            from delivery.channels.ses import SesChannel  # boto3 loads only when it is used

            email = SesChannel(settings.ses)
        elif settings.smtp.host:
            email = SmtpChannel(settings.smtp, connections=settings.limits.connections)
        else:
            email = EmailSpool(self.outbox)
        fax: Channel
        if settings.fax.gateway is FaxGateway.PHAXIO:
            fax = PhaxioFax(settings.fax.phaxio, templates=settings.templates)
        elif settings.fax.gateway is FaxGateway.EMAIL:
            from delivery.channels.fax_email import EmailFax

            fax = EmailFax(settings.smtp, settings.fax, templates=settings.templates)
        else:
            fax = FaxSpool(self.outbox, templates=settings.templates)
        return {
            ChannelName.EMAIL: email,
            ChannelName.FAX: fax,
            ChannelName.POST: PostSpool(
                self.outbox,
                job_id=job,
                templates=settings.templates,
                envelope=settings.post.envelope,
                origin_country=campaign.organisation.address.country,
            ),
        }

    async def _attempt(
        self,
        campaign: Campaign,
        channel: Channel,
        delivery: DeliveryRow,
        now: datetime,
    ) -> str | None:
        """Send, resume or settle one delivery; None when it is not due yet."""
        if delivery.state == DeliveryState.SENDING and not isinstance(channel, SPOOLS):
            # A run stopped after the intent was committed: the provider may have it.
            detail = "interrupted while sending; the provider may have accepted it"
            return await self._settle(delivery, DeliveryState.UNKNOWN, detail)
        if delivery.state == DeliveryState.DEFERRED:
            if self.retry.exhausted(first_attempt=delivery.created_at, now=now):
                detail = f"still failing after {self.retry.give_up_after_seconds:.0f} s; given up"
                return await self._settle(delivery, DeliveryState.FAILED, detail)
            if not self.retry.due(
                key=delivery.id,
                attempts=delivery.attempts,
                last_attempt=delivery.updated_at,
                now=now,
            ):
                return None
        if delivery.state == DeliveryState.QUEUED and delivery.channel == ChannelName.POST:
            suspect = await asyncio.to_thread(self.store.address_suspect, delivery.recipient_id)
            if suspect:
                detail = (
                    f"the postal address is suspect ({suspect}); check it, then "
                    f"`solidarity release --case {delivery.case} --recipient {delivery.slug}`"
                )
                return await self._settle(delivery, DeliveryState.HELD, detail)
        return await self._send(campaign, channel, delivery)

    async def _send(self, campaign: Campaign, channel: Channel, delivery: DeliveryRow) -> str:
        if delivery.state in (DeliveryState.QUEUED, DeliveryState.DEFERRED):
            moved = await asyncio.to_thread(
                self.store.transition, delivery.id, DeliveryState.SENDING, actor=self.actor
            )
            if not moved:
                return "skipped"
        try:
            parcel = await asyncio.to_thread(self._parcel, campaign, delivery)
            receipt = await channel.send(parcel)
            faults.point("delivery-sent", str(delivery.channel))
        except TransientError as exc:
            return await self._settle(delivery, DeliveryState.DEFERRED, str(exc), _parts(exc))
        except AmbiguousDeliveryError as exc:
            return await self._settle(delivery, DeliveryState.UNKNOWN, str(exc), exc.parts)
        except ChannelSetupError as exc:
            await asyncio.to_thread(
                self.store.transition,
                delivery.id,
                DeliveryState.DEFERRED,
                actor=self.actor,
                detail=f"channel not usable as configured; waiting for an operator: {exc}",
            )
            raise
        except (PermanentError, OSError) as exc:
            return await self._settle(delivery, DeliveryState.FAILED, str(exc), _parts(exc))
        await asyncio.to_thread(
            self.store.transition,
            delivery.id,
            receipt.state,
            actor=self.actor,
            proof=receipt.proof,
            provider_ref=receipt.provider_ref,
            detail=receipt.detail,
            artefacts=receipt.artefacts,
            parts=receipt.parts,
        )
        self.progress(
            f"{delivery.channel} {delivery.id} to {delivery.case}/{delivery.slug}: {receipt.state}"
        )
        return str(receipt.state)

    async def _settle(
        self,
        delivery: DeliveryRow,
        state: DeliveryState,
        error: str,
        parts: tuple[Part, ...] = (),
    ) -> str:
        detail = f"delivery {delivery.id} to {delivery.case}/{delivery.slug}: {error}"
        await asyncio.to_thread(
            self.store.transition,
            delivery.id,
            state,
            actor=self.actor,
            detail=detail,
            parts=parts,
        )
        if state != DeliveryState.HELD:
            self._errors.append(detail)
        self.progress(f"{state.upper()} {detail}")
        return str(state)

    # -- fallback -------------------------------------------------------------------------

    async def _fall_back(self, campaign: Campaign, summary: RunSummary) -> int:
        """Deliveries that failed for good go on the next channel, where the case allows it."""
        queued = 0
        for delivery in await asyncio.to_thread(self.store.not_arrived):
            case = campaign.case(delivery.case)
            if case is None or case.fallback is not Fallback.AUTO:
                continue  # waits for a person: `solidarity review deliveries`
            if delivery.state == DeliveryState.UNKNOWN:
                continue  # it may have arrived: a person decides, never the worker
            recipient = _recipient(campaign, delivery.case, delivery.slug)
            used = await asyncio.to_thread(self.store.channels_tried, delivery.bundle_id)
            following = next_channel(recipient, delivery.channel, used)
            if following is None:
                continue
            await asyncio.to_thread(
                fall_back_to,
                self.store,
                campaign,
                delivery,
                following,
                why="automatic, by the case's policy",
                actor=self.actor,
            )
            summary.deliveries[f"{following}:fallback"] += 1
            self.progress(f"{delivery.channel} {delivery.id} {delivery.state}: trying {following}")
            queued += 1
        return queued

    def _parcel(self, campaign: Campaign, delivery: DeliveryRow) -> Parcel:
        bundle = self.store.bundle(delivery.bundle_id)
        recipient = _recipient(campaign, delivery.case, delivery.slug)
        pdf = self.outbox.read(bundle.pdf_path)
        manifest = json.loads(self.outbox.read(bundle.manifest_path))
        emails: tuple[bytes, ...] = ()
        if delivery.channel == ChannelName.EMAIL:
            rendered = RenderedBundle(
                pdf=pdf,
                pages=bundle.pages,
                manifest=manifest,
                template_version=str(manifest.get("template_version", "")),
            )
            emails = compose_email(
                self._document(campaign, bundle),
                rendered,
                delivery_id=delivery.id,
                templates=self.settings.templates,
                limits=self.settings.email,
            )
        org = campaign.organisation
        envelopes = tuple(
            (int(e["pages"][0]), int(e["pages"][1])) for e in manifest.get("envelopes", ())
        )
        return Parcel(
            sent_parts=self.store.sent_parts(delivery.id),
            delivery_id=delivery.id,
            bundle_id=bundle.id,
            channel=delivery.channel,
            organisation=org,
            recipient=recipient,
            pdf=pdf,
            pages=bundle.pages,
            message_count=bundle.message_count,
            emails=emails,
            envelope_from=f"bounces+{delivery.id}@{org.bounce_domain}",
            envelopes=envelopes,
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


SPOOLS = (EmailSpool, FaxSpool, PostSpool)  # writing a spool file again is harmless


def _parts(exc: BaseException) -> tuple[Part, ...]:
    return exc.parts if isinstance(exc, ChannelError) else ()


def fall_back_to(
    store: Store,
    campaign: Campaign,
    delivery: DeliveryRow,
    channel: ChannelName,
    *,
    why: str,
    actor: str,
) -> str:
    """Queue the bundle of ``delivery`` on ``channel``, record the decision; the new id."""
    bundle = store.bundle(delivery.bundle_id)
    new_id = store.ensure_delivery(
        bundle, channel, bounce_domain=campaign.organisation.bounce_domain, actor=actor
    )
    store.record_resolution(delivery.id, f"fallback to {channel} ({new_id}): {why}", actor=actor)
    return new_id


def next_channel(
    recipient: Recipient, failed: ChannelName, tried: Collection[ChannelName]
) -> ChannelName | None:
    """The recipient's next channel after ``failed`` that was not tried and can reach them."""
    order = recipient.channels
    later = order[order.index(failed) + 1 :] if failed in order else order
    for channel in later:
        if channel in tried:
            continue
        if channel == ChannelName.EMAIL and not recipient.email:
            continue
        if channel == ChannelName.FAX and not recipient.fax:
            continue
        if channel == ChannelName.POST and recipient.address is None:
            continue
        return channel
    return None


def _recipient(campaign: Campaign, case_slug: str, slug: str) -> Recipient:
    case = campaign.case(case_slug)
    found = next((r for r in case.recipients if r.slug == slug), None) if case else None
    if found is None:
        raise PermanentError(f"recipient {case_slug}/{slug}: no longer in the loaded campaign")
    return found


async def run_until_stopped(
    runner: Worker, *, once: bool, on_demand: bool, poll_seconds: float
) -> RunSummary | None:
    """Run the worker until it is done (``once``) or told to stop by SIGTERM or SIGINT.

    On the signal no new run starts; what is under way gets ``worker.grace_seconds`` to
    finish, then it is cancelled, and the worker gives its claims back so other workers
    take them at once. Returns the run's summary, or None when it was cut short.
    """
    stop = asyncio.Event()
    install_stop_handlers(stop)
    work: asyncio.Task[Any]
    if once:
        work = asyncio.create_task(runner.run_once(on_demand=on_demand))
    else:
        work = asyncio.create_task(runner.run_forever(poll_seconds=poll_seconds, stop=stop))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not work.done():
        grace = runner.settings.worker.grace_seconds
        runner.progress(f"stopping: finishing what is under way (at most {grace:g} s)")
        finished, _ = await asyncio.wait({work}, timeout=grace)
        if not finished:
            runner.progress("grace over: giving unfinished work back to the other workers")
            work.cancel()
    stopping.cancel()
    try:
        result = await work
    except asyncio.CancelledError:
        return None
    return result if isinstance(result, RunSummary) else None


def install_stop_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
