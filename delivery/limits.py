"""How hard the worker presses on one destination: concurrency and pace per domain.

A ministry's mail server that receives three hundred digests in one second may well
defer them all, or list the sender as a spammer. Each destination domain gets at most
``concurrency`` deliveries in flight and at most ``per_minute`` starts a minute, spread
evenly; other domains are not slowed by it.

The pace is shared by every worker on one database when the limiter is given ``book``
(the store's :meth:`~delivery.store.leases.LeaseStore.reserve_start`): starts are then
booked in the database, by its clock, so N workers still make ``per_minute`` starts a
minute to a domain, not N times as many. Concurrency stays per worker process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager


class DomainLimiter:
    """Per-domain concurrency and pace, for one worker process."""

    def __init__(
        self,
        *,
        concurrency: int,
        per_minute: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        book: Callable[[str, float], Awaitable[float]] | None = None,
    ) -> None:
        if concurrency < 1 or per_minute <= 0:
            raise ValueError("a domain needs at least one slot and a positive pace")
        self._concurrency = concurrency
        self._interval = 60.0 / per_minute
        self._clock = clock
        self._sleep = sleep
        self._book = book  # (domain, interval) -> seconds to wait, booked for all workers
        self._gates: dict[str, asyncio.Semaphore] = {}
        self._next_start: dict[str, float] = {}

    @asynccontextmanager
    async def slot(self, domain: str) -> AsyncIterator[None]:
        """Hold one of ``domain``'s slots, starting no sooner than its pace allows."""
        key = domain.lower()
        gate = self._gates.setdefault(key, asyncio.Semaphore(self._concurrency))
        async with gate:
            await self._pace(key)
            yield

    async def _pace(self, key: str) -> None:
        if self._book is not None:
            wait = await self._book(key, self._interval)
            if wait > 0:
                await self._sleep(wait)
            return
        now = self._clock()
        start = max(now, self._next_start.get(key, now))
        self._next_start[key] = start + self._interval  # reserved before waiting
        if start > now:
            await self._sleep(start - now)


def domain_of(address: str) -> str:
    """The domain part of an e-mail address, lower-cased; "" when there is none."""
    return address.rpartition("@")[2].strip().lower() if "@" in address else ""
