"""One pace per destination domain for every worker on a database, by the database's clock."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

from delivery.config import LimitSettings, Settings
from delivery.limits import DomainLimiter
from delivery.store import Store
from delivery.worker import Worker

DOMAIN = "justice.example.org"


def test_starts_booked_through_two_stores_are_one_interval_apart(
    store: Store, settings: Settings
) -> None:
    other = Store.connect(settings.database_url)  # a second worker on the same database
    try:
        started = time.monotonic()
        waits = [(store if n % 2 else other).reserve_start(DOMAIN, 2.0) for n in range(4)]
        elapsed = time.monotonic() - started
    finally:
        other.close()
    assert waits[0] == 0.0
    for n, wait in enumerate(waits):
        assert 2.0 * n - elapsed - 0.05 <= wait <= 2.0 * n + 0.05


def test_another_domain_is_not_slowed_and_case_does_not_make_a_new_domain(store: Store) -> None:
    assert store.reserve_start(DOMAIN, 30.0) == 0.0
    assert store.reserve_start("interior.example.org", 30.0) == 0.0
    assert 29.0 < store.reserve_start("JUSTICE.Example.ORG", 30.0) <= 30.0


def test_concurrent_bookings_never_share_a_start(store: Store, settings: Settings) -> None:
    other = Store.connect(settings.database_url)
    waits: list[float] = []
    lock = threading.Lock()

    def book(into: Store) -> None:
        for _ in range(5):
            wait = into.reserve_start(DOMAIN, 10.0)
            with lock:
                waits.append(wait)

    try:
        threads = [threading.Thread(target=book, args=(s,)) for s in (store, other) * 2]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        other.close()
    # Twenty bookings, 10 s apart: the waits fall in twenty different 10-second steps.
    assert sorted(round(w / 10.0) for w in waits) == list(range(20))


def test_two_workers_limiters_pace_one_domain_together(store: Store, settings: Settings) -> None:
    other = Store.connect(settings.database_url)
    starts: list[float] = []

    def limiter(of: Store) -> DomainLimiter:
        async def book(domain: str, interval: float) -> float:
            return await asyncio.to_thread(of.reserve_start, domain, interval)

        return DomainLimiter(concurrency=4, per_minute=120, book=book)  # 0.5 s apart

    async def send(through: DomainLimiter) -> None:
        async with through.slot(DOMAIN):
            starts.append(time.monotonic())

    async def run() -> None:
        first, second = limiter(store), limiter(other)
        await asyncio.gather(*(send(first) for _ in range(2)), *(send(second) for _ in range(2)))

    try:
        asyncio.run(run())
    finally:
        other.close()
    gaps = [b - a for a, b in itertools.pairwise(sorted(starts))]
    assert len(gaps) == 3
    # one pace for both limiters, not one each (which would start two at once); the
    # margin is for a busy machine waking a sleeper late
    assert min(gaps) > 0.35


def test_two_workers_on_one_database_share_the_pace(store: Store, settings: Settings) -> None:
    paced = settings.model_copy(update={"limits": LimitSettings(per_domain_per_minute=120)})
    other = Store.connect(settings.database_url)
    workers = [Worker(paced, store), Worker(paced, other)]
    starts: list[float] = []

    async def send(worker: Worker) -> None:
        async with worker.domains.slot(DOMAIN):
            starts.append(time.monotonic())

    async def run() -> None:
        await asyncio.gather(*(send(w) for w in workers for _ in range(2)))

    try:
        asyncio.run(run())
    finally:
        other.close()
    gaps = [b - a for a, b in itertools.pairwise(sorted(starts))]
    assert len(gaps) == 3
    assert min(gaps) > 0.35  # 0.5 s apart across both workers
