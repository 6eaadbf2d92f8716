"""Parts that move on their own, the channel a fallback picks, and the pace per domain."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from delivery.limits import DomainLimiter, domain_of
from delivery.models import (
    Address,
    Cadence,
    ChannelName,
    DeliveryState,
    Format,
    Part,
    ProofLevel,
    Recipient,
    RecipientKind,
    combined,
)
from delivery.worker import next_channel

S = DeliveryState


def part(number: int, state: DeliveryState, proof: ProofLevel = ProofLevel.NONE) -> Part:
    return Part(number=number, count=2, ref=f"ref-{number}", state=state, proof=proof)


def test_a_delivery_is_delivered_only_when_every_part_is() -> None:
    assert combined([part(1, S.DELIVERED, ProofLevel.FAX_CONFIRMED)]) is None  # part 2 unknown
    assert combined([part(1, S.DELIVERED), part(2, S.ACCEPTED)]) == (S.ACCEPTED, ProofLevel.NONE)
    both = [
        part(1, S.DELIVERED, ProofLevel.SIGNED_RECEIPT),
        part(2, S.DELIVERED, ProofLevel.CARRIER_SCAN),
    ]
    assert combined(both) == (S.DELIVERED, ProofLevel.CARRIER_SCAN)  # the weakest proof


def test_one_part_that_came_back_or_must_be_retried_decides() -> None:
    assert combined([part(1, S.DELIVERED), part(2, S.RETURNED)]) == (S.RETURNED, ProofLevel.NONE)
    assert combined([part(1, S.ACCEPTED), part(2, S.DEFERRED)]) == (S.DEFERRED, ProofLevel.NONE)
    assert combined([part(1, S.SPOOLED), part(2, S.ACCEPTED)]) == (S.SPOOLED, ProofLevel.NONE)
    assert combined([]) is None


def recipient(**changes: object) -> Recipient:
    values: dict[str, object] = {
        "case": "free-the-poet",
        "slug": "prosecutor",
        "kind": RecipientKind.AUTHORITY,
        "name": "Prosecutor General",
        "language": "en",
        "channels": (ChannelName.EMAIL, ChannelName.FAX, ChannelName.POST),
        "format": Format.DIGEST,
        "cadence": Cadence.DAILY,
        "email": "office@prosecutor.example.org",
        "fax": "+442079460000",
        "address": Address(
            name="Office of the Prosecutor General",
            street="1 Justice Square",
            city="London",
            postal_code="SW1A 1AA",
            country="GB",
        ),
    }
    values.update(changes)
    return Recipient(**values)  # type: ignore[arg-type]


def test_the_next_channel_follows_the_recipients_order_and_skips_what_cannot_reach_them() -> None:
    assert next_channel(recipient(), ChannelName.EMAIL, {ChannelName.EMAIL}) == ChannelName.FAX
    no_fax = recipient(fax="")
    assert next_channel(no_fax, ChannelName.EMAIL, {ChannelName.EMAIL}) == ChannelName.POST
    tried = {ChannelName.EMAIL, ChannelName.FAX}
    assert next_channel(recipient(), ChannelName.FAX, tried) == ChannelName.POST
    assert next_channel(recipient(), ChannelName.POST, set(ChannelName)) is None


def test_domains_are_read_from_addresses() -> None:
    assert domain_of("Office@Prosecutor.Example.ORG") == "prosecutor.example.org"
    assert domain_of("no-at-sign") == ""


class Clock:
    """A clock that moves only when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 100.0
        self.starts: list[tuple[str, float]] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        target = self.now + seconds
        await asyncio.sleep(0)
        self.now = max(self.now, target)


def test_one_domain_is_paced_and_another_is_not_slowed_by_it() -> None:
    clock = Clock()
    limiter = DomainLimiter(concurrency=5, per_minute=30, clock=clock.time, sleep=clock.sleep)

    async def send(domain: str) -> None:
        async with limiter.slot(domain):
            clock.starts.append((domain, clock.now))

    async def run() -> None:
        await asyncio.gather(*(send("justice.example.org") for _ in range(3)))
        await send("interior.example.org")

    asyncio.run(run())
    justice = sorted(t for d, t in clock.starts if d == "justice.example.org")
    assert [round(b - a, 6) for a, b in itertools.pairwise(justice)] == [2.0, 2.0]
    interior = [t for d, t in clock.starts if d == "interior.example.org"]
    assert interior == [clock.now]  # started as soon as it asked


def test_no_more_than_the_allowed_deliveries_are_in_flight_to_one_domain() -> None:
    limiter = DomainLimiter(concurrency=2, per_minute=60_000)
    in_flight = 0
    peak = 0

    async def send() -> None:
        nonlocal in_flight, peak
        async with limiter.slot("justice.example.org"):
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.01)
            in_flight -= 1

    async def run() -> None:
        await asyncio.gather(*(send() for _ in range(8)))

    asyncio.run(run())
    assert peak == 2


def test_a_limiter_needs_a_slot_and_a_pace() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        DomainLimiter(concurrency=0, per_minute=10)
