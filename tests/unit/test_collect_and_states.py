"""Planning what is due, and the one delivery state machine."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from delivery.collect import Load, period_key, plan
from delivery.errors import InvalidTransitionError
from delivery.models import Cadence, DeliveryState, check_transition

MONDAY = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def _load(
    rid: int,
    cadence: Cadence,
    *,
    waiting: int = 3,
    held: bool = False,
    periods: frozenset[str] = frozenset(),
    digest: bool = False,
) -> Load:
    return Load(
        recipient_id=rid,
        cadence=cadence,
        held=held,
        waiting=waiting,
        periods=periods,
        digest=digest,
    )


def test_period_keys_follow_the_cadence() -> None:
    assert period_key(Cadence.DAILY, MONDAY) == "2026-11-23"
    assert period_key(Cadence.WEEKLY, MONDAY) == "2026-W48"
    assert period_key(Cadence.ONCE, MONDAY) == "once"


def test_a_recipient_gets_one_bundle_per_period() -> None:
    loads = [
        _load(1, Cadence.DAILY),
        _load(2, Cadence.DAILY, periods=frozenset({"2026-11-23"})),
        _load(3, Cadence.WEEKLY, periods=frozenset({"2026-W47"})),
        _load(4, Cadence.ONCE, periods=frozenset({"once"})),
    ]
    assert [d.recipient_id for d in plan(loads, MONDAY)] == [1, 3]


def test_held_and_empty_recipients_are_never_due() -> None:
    loads = [_load(1, Cadence.DAILY, held=True), _load(2, Cadence.DAILY, waiting=0)]
    assert plan(loads, MONDAY) == []
    assert plan(loads, MONDAY, on_demand=True) == []


def test_on_demand_ignores_the_cadence() -> None:
    loads = [_load(4, Cadence.ONCE, periods=frozenset({"once"}))]
    (due,) = plan(loads, MONDAY, on_demand=True)
    assert due.period.startswith("on-demand-20261123T0900")


def test_a_daily_or_weekly_digest_comes_once_a_period_even_on_demand() -> None:
    fresh = [_load(5, Cadence.DAILY, digest=True), _load(6, Cadence.WEEKLY, digest=True)]
    assert [d.period for d in plan(fresh, MONDAY, on_demand=True)] == ["2026-11-23", "2026-W48"]
    sent = [
        _load(5, Cadence.DAILY, digest=True, periods=frozenset({"2026-11-23"})),
        _load(6, Cadence.WEEKLY, digest=True, periods=frozenset({"2026-W48"})),
    ]
    assert plan(sent, MONDAY, on_demand=True) == []
    (later,) = plan(sent[:1], datetime(2026, 11, 24, 9, 0, tzinfo=UTC), on_demand=True)
    assert later.period == "2026-11-24"
    once = [_load(7, Cadence.ONCE, digest=True, periods=frozenset({"once"}))]
    (extra,) = plan(once, MONDAY, on_demand=True)  # "once" has no period: on demand it goes
    assert extra.period.startswith("on-demand-")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (DeliveryState.QUEUED, DeliveryState.SENDING),
        (DeliveryState.SENDING, DeliveryState.SPOOLED),
        (DeliveryState.SENDING, DeliveryState.UNKNOWN),
        (DeliveryState.QUEUED, DeliveryState.HELD),
        (DeliveryState.HELD, DeliveryState.QUEUED),
        (DeliveryState.ACCEPTED, DeliveryState.BOUNCED),
    ],
)
def test_allowed_transitions(old: DeliveryState, new: DeliveryState) -> None:
    assert check_transition(old, new) is new


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (DeliveryState.DELIVERED, DeliveryState.SENDING),
        (DeliveryState.UNKNOWN, DeliveryState.SENDING),
        (DeliveryState.FAILED, DeliveryState.QUEUED),
        (DeliveryState.SPOOLED, DeliveryState.SENDING),
        (DeliveryState.CANCELLED, DeliveryState.QUEUED),
    ],
)
def test_forbidden_transitions_raise(old: DeliveryState, new: DeliveryState) -> None:
    with pytest.raises(InvalidTransitionError, match=f"from {old} to {new}"):
        check_transition(old, new)


def test_a_prison_envelope_names_the_prisoner_number_and_facility_once() -> None:
    from delivery.models import Address, Cadence, ChannelName, Format, Recipient, RecipientKind

    prison = Recipient(
        case="c",
        slug="p",
        kind=RecipientKind.PRISON,
        name="Viktor Arkhipov",
        language="ru",
        channels=(ChannelName.POST,),
        format=Format.BUNDLE,
        cadence=Cadence.WEEKLY,
        prisoner_number="A-1047",
        facility="Pre-trial Detention Centre No. 9",
        address=Address(
            name="Pre-trial Detention Centre No. 9",
            street="ul. Tyuremnaya 4",
            city="Moscow",
            postal_code="127055",
            country="RU",
        ),
    )
    assert prison.envelope_lines() == (
        "Viktor Arkhipov, A-1047",
        "Pre-trial Detention Centre No. 9",
        "ul. Tyuremnaya 4",
        "127055 Moscow",
        "RU",
    )
