"""Claims and leases on a real database: one winner, expiry by the database's clock, heartbeats."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from delivery.config import Settings
from delivery.importer import import_messages
from delivery.models import DeliveryState, ReviewState
from delivery.render.pool import RenderPool
from delivery.store import Store
from delivery.store import base as store_base
from delivery.worker import RunSummary, Worker

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
READY = (DeliveryState.QUEUED, DeliveryState.SENDING, DeliveryState.DEFERRED)


@pytest.fixture
def store(store: Store, settings: Settings) -> Store:
    """The campaign's store with the sample imported and every message approved."""
    opened = store
    import_messages(opened, FIXTURES / "messages_sample.csv", source="web", settings=settings)
    opened.decide(
        opened.resolve(["pl-0001", "pl-0002", "kr-0001"]), ReviewState.APPROVED, actor="t"
    )
    return opened


@pytest.fixture
def queued(store: Store, settings: Settings) -> Store:
    """Bundles rendered and their deliveries queued, nothing sent yet."""
    worker = Worker(settings, store)

    async def without_sending() -> None:
        summary = RunSummary()
        await worker._collect(summary, on_demand=True)
        campaign = store.campaign()
        async with RenderPool(settings.render) as pool:
            await worker._merge(campaign, pool, summary, planned=summary.bundles_planned)
        for bundle in store.bundles_undelivered():
            recipient = next(
                r for c in campaign.cases for r in c.recipients if r.slug == bundle.slug
            )
            store.ensure_delivery(
                bundle,
                recipient.channels[0],
                bounce_domain=campaign.organisation.bounce_domain,
                actor="t",
            )

    asyncio.run(without_sending())
    return store


def test_a_claimed_delivery_is_nobody_elses_until_its_lease_expires(queued: Store) -> None:
    first = queued.claim_deliveries("worker-a", READY, limit=100, ttl=0.5)
    assert len(first) == 4
    assert queued.claim_deliveries("worker-b", READY, limit=100, ttl=0.5) == []
    assert queued.live_leases() == {"worker-a": 4}
    time.sleep(0.7)
    taken_over = queued.claim_deliveries("worker-b", READY, limit=100, ttl=30)
    assert sorted(d.id for d in taken_over) == sorted(d.id for d in first)
    assert queued.live_leases() == {"worker-b": 4}


def test_a_heartbeat_keeps_a_claim_alive(queued: Store) -> None:
    claimed = queued.claim_deliveries("worker-a", READY, limit=2, ttl=0.6)
    assert len(claimed) == 2
    for _ in range(4):
        time.sleep(0.3)
        assert queued.renew("worker-a", 0.6) == 2
    assert [d.id for d in queued.claim_deliveries("worker-b", READY, limit=100, ttl=1)] == [
        d.id for d in queued.deliveries_in(READY) if d.id not in {c.id for c in claimed}
    ]


def test_expiry_is_by_the_database_clock_not_the_workers(
    queued: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    queued.claim_deliveries("worker-a", READY, limit=100, ttl=300)
    ahead = store_base.now() + timedelta(days=2)
    monkeypatch.setattr(store_base, "now", lambda: ahead)  # a worker whose clock runs fast
    monkeypatch.setattr(time, "time", lambda: ahead.timestamp())
    assert queued.claim_deliveries("worker-b", READY, limit=100, ttl=300) == []


def test_a_hundred_workers_claiming_one_row_make_one_winner(queued: Store) -> None:
    held = queued.claim_deliveries("holder", READY, limit=100, ttl=300)
    target = held[-1]
    queued.release("holder", delivery_ids=[target.id])  # one row free, the rest held
    start = threading.Barrier(100)
    won: list[str] = []

    def claim(n: int) -> None:
        start.wait()
        for row in queued.claim_deliveries(f"w{n}", READY, limit=1, ttl=300):
            won.append(f"w{n}:{row.id}")

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1
    assert won[0].endswith(target.id)


def test_releasing_gives_back_only_what_was_named_or_everything(queued: Store) -> None:
    claimed = queued.claim_deliveries("worker-a", READY, limit=100, ttl=300)
    queued.release("worker-a", delivery_ids=[claimed[0].id])
    assert [d.id for d in queued.claim_deliveries("worker-b", READY, limit=100, ttl=300)] == [
        claimed[0].id
    ]
    queued.release("worker-a")
    assert len(queued.claim_deliveries("worker-c", READY, limit=100, ttl=300)) == 3
    assert queued.live_leases() == {"worker-b": 1, "worker-c": 3}


def test_a_bundle_whose_render_never_finishes_is_set_aside(
    store: Store, settings: Settings
) -> None:
    worker = Worker(settings, store)
    asyncio.run(worker._collect(RunSummary(), on_demand=True))
    planned = store.bundles_in("planned")
    poison = planned[0]
    for attempt in range(3):  # three workers died rendering it
        assert [b.id for b in store.claim_bundles(f"dead-{attempt}", limit=1, ttl=0.01)] == [
            poison.id
        ]
        store.render_started(poison.id)
        time.sleep(0.05)
    assert store.unfinished_renders(poison.id) == 3
    summary = asyncio.run(worker.run_once())
    failed = store.bundles_in("failed")
    assert [b.id for b in failed] == [poison.id]
    assert "started 3 times and never finished" in failed[0].error
    assert summary.bundles_rendered == len(planned) - 1  # the others keep flowing
    assert store.live_leases() == {}
    store.retry_bundle(poison.id, actor="caseworker")  # after the cause was fixed
    assert store.unfinished_renders(poison.id) == 0
    asyncio.run(worker.run_once())
    assert store.bundles_in("failed") == []
