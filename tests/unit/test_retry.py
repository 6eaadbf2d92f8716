"""Backoff arithmetic: when a deferred delivery is tried again, and when it is given up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from delivery.retry import RetryPolicy

T0 = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)


def test_waits_grow_exponentially_with_bounded_jitter() -> None:
    policy = RetryPolicy(base_seconds=60, factor=2, jitter=0.2)
    waits = [policy.delay(n, "dlv-a").total_seconds() for n in (1, 2, 3, 4)]
    for attempts, wait in enumerate(waits, start=1):
        base = 60 * 2 ** (attempts - 1)
        assert base <= wait <= base * 1.2


def test_the_wait_is_capped() -> None:
    policy = RetryPolicy(base_seconds=60, max_delay_seconds=600, jitter=0.0)
    assert policy.delay(30, "dlv-a") == timedelta(seconds=600)


def test_jitter_is_the_same_for_every_worker_but_differs_between_deliveries() -> None:
    policy = RetryPolicy()
    assert policy.delay(3, "dlv-a") == RetryPolicy().delay(3, "dlv-a")
    spread = {policy.delay(3, f"dlv-{n}") for n in range(20)}
    assert len(spread) > 10


def test_due_only_after_the_wait() -> None:
    policy = RetryPolicy(base_seconds=60, jitter=0.0)
    assert not policy.due(key="dlv-a", attempts=1, last_attempt=T0, now=T0 + timedelta(seconds=59))
    assert policy.due(key="dlv-a", attempts=1, last_attempt=T0, now=T0 + timedelta(seconds=60))


def test_given_up_after_the_configured_time() -> None:
    policy = RetryPolicy(give_up_after_seconds=3600)
    assert not policy.exhausted(first_attempt=T0, now=T0 + timedelta(minutes=59))
    assert policy.exhausted(first_attempt=T0, now=T0 + timedelta(hours=1))
