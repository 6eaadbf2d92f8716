"""What retention may erase, decided on a real database of each engine; the worker's daily run."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from delivery.campaign import load_campaign
from delivery.config import Settings
from delivery.importer import import_messages
from delivery.models import ReviewState
from delivery.store import Store
from delivery.store.retention import id_ranges
from delivery.store.schema import deliveries
from delivery.worker import Worker
from tests.postgres import sql

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.fixture
def delivered(settings: Settings) -> tuple[Store, Worker]:
    """Every sample message approved and spooled, a day's work in the past."""
    store = Store.connect(settings.database_url)
    campaign = load_campaign(FIXTURES / "campaign_reference.toml")
    store.save_campaign(campaign, actor="test", source="campaign.toml", sha256="-")
    import_messages(store, FIXTURES / "messages_sample.csv", source="web", settings=settings)
    store.decide(store.resolve(["pl-0001", "pl-0002", "kr-0001"]), ReviewState.APPROVED, actor="t")
    worker = Worker(settings, store)
    asyncio.run(worker.run_once(on_demand=True))
    return store, worker


def age_deliveries(store: Store, days: int) -> None:
    """Every delivery last changed ``days`` earlier than it was."""
    with store.engine.begin() as conn:
        for delivery_id, updated_at in conn.execute(
            select(deliveries.c.id, deliveries.c.updated_at)
        ).all():
            conn.execute(
                update(deliveries)
                .where(deliveries.c.id == delivery_id)
                .values(updated_at=updated_at - timedelta(days=days))
            )


def test_a_bundle_waits_while_any_delivery_of_it_needs_a_decision(
    delivered: tuple[Store, Worker],
) -> None:
    store, _ = delivered
    later = datetime.now(UTC) + timedelta(days=1)
    assert len(store.plan_erasure(later).bundles) == 4

    (delivery_id,) = sql(store, "SELECT id FROM deliveries WHERE channel = 'fax'")[0]
    sql(store, "UPDATE deliveries SET state = 'bounced' WHERE id = :id", id=delivery_id)
    plan = store.plan_erasure(later)
    assert len(plan.bundles) == 3
    assert "honduras-defenders" not in {b.case for b in plan.bundles}
    honduras = sql(store, "SELECT id FROM messages WHERE case_slug = 'honduras-defenders'")
    assert honduras[0][0] not in plan.message_ids  # its only bundle is not over

    sql(store, "UPDATE deliveries SET resolution = 'closed' WHERE id = :id", id=delivery_id)
    assert len(store.plan_erasure(later).bundles) == 4

    sql(store, "UPDATE deliveries SET state = 'unknown' WHERE id = :id", id=delivery_id)
    assert len(store.plan_erasure(later).bundles) == 3  # unknown is never over by itself

    earlier = datetime.now(UTC) - timedelta(hours=1)
    assert store.plan_erasure(earlier).bundles == ()  # nothing ended before the cut-off


def test_the_worker_erases_at_most_once_a_day(delivered: tuple[Store, Worker]) -> None:
    store, worker = delivered
    age_deliveries(store, 91)
    now = datetime.now(UTC)
    assert worker.retention_if_due(now) is True
    assert sql(store, "SELECT count(*) FROM messages WHERE erased_at IS NULL") == [(0,)]
    assert store.erased_counts() == {"messages": 5, "bundles": 4}
    assert worker.retention_if_due(now + timedelta(hours=23)) is False
    assert worker.retention_if_due(now + timedelta(hours=25)) is True
    assert store.meta_value("retention_last_run") == (now + timedelta(hours=25)).isoformat()
    runs = sql(store, "SELECT count(*) FROM ledger WHERE kind = 'retention.run'")
    assert runs == [(1,)]  # the second run found nothing left to erase, and recorded nothing


def test_erased_message_ids_are_recorded_as_runs() -> None:
    assert id_ranges([]) == []
    assert id_ranges([5, 1, 2, 3, 7, 8, 3]) == [[1, 3], [5, 5], [7, 8]]
    assert id_ranges(range(1, 1_000_001)) == [[1, 1_000_000]]
