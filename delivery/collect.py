"""Which recipients are due a bundle now. Pure planning over what the store reports."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from delivery.models import Cadence


@dataclass(frozen=True, kw_only=True)
class Load:
    """A recipient as collect sees it."""

    recipient_id: int
    cadence: Cadence
    held: bool
    waiting: int  # approved messages in no bundle yet
    periods: frozenset[str]  # periods that already have a bundle
    digest: bool = False  # an e-mail digest: never more than one per cadence period


@dataclass(frozen=True, kw_only=True)
class Due:
    recipient_id: int
    period: str
    waiting: int


def period_key(cadence: Cadence, moment: datetime) -> str:
    """The cadence period `moment` falls in: one bundle per recipient per period."""
    if cadence is Cadence.DAILY:
        return moment.strftime("%Y-%m-%d")
    if cadence is Cadence.WEEKLY:
        year, week, _ = moment.isocalendar()
        return f"{year}-W{week:02d}"
    return "once"


def on_demand_key(moment: datetime) -> str:
    return "on-demand-" + moment.strftime("%Y%m%dT%H%M%S%fZ")


def plan(loads: Iterable[Load], moment: datetime, *, on_demand: bool = False) -> list[Due]:
    """Recipients with approved messages waiting whose period has no bundle yet.

    Held recipients are never due. On demand, every recipient with messages waiting is due,
    whatever its cadence — except that a daily or weekly digest still comes at most once a
    period: on demand it is collected now, as its period's one digest, if it has none yet.
    """
    due: list[Due] = []
    for load in loads:
        if load.held or load.waiting == 0:
            continue
        periodic = load.digest and load.cadence is not Cadence.ONCE
        if on_demand and not periodic:
            period = on_demand_key(moment)
        else:
            period = period_key(load.cadence, moment)
        if period in load.periods:
            continue
        due.append(Due(recipient_id=load.recipient_id, period=period, waiting=load.waiting))
    return due
