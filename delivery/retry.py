"""When a deferred delivery is tried again, and when to give up. Pure arithmetic.

Exponential backoff with jitter. The jitter is derived from the delivery id, not drawn at
random, so every worker computes the same due time for the same delivery and a restart
does not bunch retries together.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    base_seconds: float = 60.0  # the wait after the first failure
    factor: float = 2.0  # each further failure multiplies the wait
    max_delay_seconds: float = 6 * 3600.0  # the wait never grows beyond this
    jitter: float = 0.2  # up to this fraction added to a wait, spread by delivery id
    give_up_after_seconds: float = 3 * 86400.0  # after this long since the first try: failed

    def delay(self, attempts: int, key: str) -> timedelta:
        """The wait after the ``attempts``-th failed attempt (1 = the first) of ``key``."""
        raw = self.base_seconds * self.factor ** max(0, attempts - 1)
        capped = min(raw, self.max_delay_seconds)
        spread = int.from_bytes(hashlib.sha256(f"{key}:{attempts}".encode()).digest()[:4], "big")
        return timedelta(seconds=capped * (1 + self.jitter * spread / 0xFFFFFFFF))

    def due(self, *, key: str, attempts: int, last_attempt: datetime, now: datetime) -> bool:
        return now >= last_attempt + self.delay(attempts, key)

    def exhausted(self, *, first_attempt: datetime, now: datetime) -> bool:
        return now - first_attempt >= timedelta(seconds=self.give_up_after_seconds)
