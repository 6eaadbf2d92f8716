"""The spine on PostgreSQL: the same commands as on SQLite, with the same outcomes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.conftest import Operator
from tests.acceptance.test_spine import BAD, GOOD, _check_outbox, _tricky_file
from tests.postgres import Databases, PostgresServer


@pytest.fixture
def on_postgres(operator: Operator, postgres: PostgresServer, tmp_path: Path) -> Iterator[Operator]:
    """The operator's commands with ``SOLIDARITY_DATABASE_URL`` at a fresh PostgreSQL database."""
    databases = Databases(engine="postgresql", folder=tmp_path, server=postgres)
    # an empty database: the first command migrates it, as on a new installation
    operator.env["SOLIDARITY_DATABASE_URL"] = databases.new(unmigrated=True)
    try:
        yield operator
    finally:
        databases.close()


def test_an_operator_chains_the_commands_on_postgresql(on_postgres: Operator) -> None:
    operator = on_postgres
    loaded = operator("campaign", "load", "campaign.toml", "--json").json()
    assert (loaded["cases"], loaded["recipients"], loaded["cases_added"]) == (2, 4, 2)
    again = operator("campaign", "load", "campaign.toml", "--json").json()
    assert (again["cases_added"], again["cases_updated"], again["recipients_added"]) == (0, 2, 0)

    sample = operator("messages", "import", "messages.csv", "--source", "web", "--json").json()
    assert (sample["imported"], sample["duplicates"], sample["rejected"]) == (5, 0, [])
    repeat = operator("messages", "import", "messages.csv", "--source", "web", "--json").json()
    assert (repeat["imported"], repeat["duplicates"]) == (0, 5)
    bad_lines = _tricky_file(operator.folder / "tricky.csv")
    tricky = operator("messages", "import", "tricky.csv", "--source", "forms", "--json", check=2)
    report = tricky.json()
    assert report["imported"] == len(GOOD) + 1  # every script, emoji and the signature
    rejected = {(r["line"], r["field"]) for r in report["rejected"]}
    assert {(bad_lines[row.split(",", 1)[0]], field) for row, field in BAD} <= rejected

    flagged = {m["external_id"]: m for m in operator("review", "list", "--json").json()}
    assert any("bidi-control" in f for f in flagged["t-bidi"]["flags"])
    approved = operator("review", "approve", "--all-clean", "--json").json()
    assert approved["approved"] > 0
    operator("review", "approve", "t-bidi", "t-html")
    operator("review", "reject", "pl-0002", "--reason", "names the co-defendant")
    assert operator("review", "list", "--json").json() == []

    run = operator("worker", "--once", "--now", "--json").json()
    assert (run["bundles_rendered"], run["bundles_failed"], run["errors"]) == (4, 0, [])
    _check_outbox(operator)
    assert not (operator.outbox / "solidarity.db").exists()  # everything went to PostgreSQL

    status = operator("status", "--json").json()
    assert status["messages"] == {"pending": 0, "approved": 14, "rejected": 1, "held": 0}
    assert status["bundles"] == 4
    assert status["deliveries"] == {
        "email": {"spooled": 2},
        "fax": {"spooled": 1},
        "post": {"spooled": 1},
    }
    rerun = operator("worker", "--once", "--now", "--json").json()
    assert (rerun["bundles_planned"], rerun["deliveries"]) == (0, {})

    verified = operator("audit", "verify", "--json").json()
    assert (verified["ok"], verified["problems"]) == (True, [])
    trace = operator("audit", "trace", "t-tmpl", "--json").json()
    kinds = [e["kind"] for e in trace["events"]]
    assert kinds[:2] == ["review.waiting", "review.approved"]
    assert {"bundle.rendered", "delivery.queued", "delivery.spooled"} <= set(kinds)
    assert trace["deliveries"][0]["state"] == "spooled"
