"""Fixtures the integration tests share: settings for a fresh outbox, a store with the campaign."""

from __future__ import annotations

from pathlib import Path

import pytest

from delivery.campaign import load_campaign
from delivery.config import Settings
from delivery.store import Store

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """A fresh outbox, one render process, and the test's database (on each engine)."""
    return Settings(
        outbox=str(tmp_path / "outbox"), render={"processes": 1}, database_url=database_url
    )


@pytest.fixture
def store(settings: Settings) -> Store:
    """The store with the reference campaign loaded."""
    opened = Store.connect(settings.database_url)
    campaign = load_campaign(FIXTURES / "campaign_reference.toml")
    opened.save_campaign(campaign, actor="test", source="campaign.toml", sha256="-")
    return opened
