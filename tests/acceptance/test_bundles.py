"""A bundle that cannot be printed fails alone, clearly, and a caseworker can recover."""

from __future__ import annotations

from tests.acceptance.conftest import Operator
from tests.acceptance.test_spine import HEADER, _row

PRIVATE_USE = "\ue000"  # no font anywhere covers the Private Use Area


def test_an_unprintable_message_fails_its_bundle_and_nothing_else(operator: Operator) -> None:
    operator("campaign", "load", "campaign.toml")
    rows = [
        _row("ok-1", "authority", "Ana Lima", "PT", "pt", "letter", "Libertem o Viktor."),
        _row("bad-1", "family", "Eva Horak", "CZ", "cs", "letter", f"Drží palce {PRIVATE_USE}"),
        _row("ok-2", "family", "Jan Horak", "CZ", "cs", "letter", "Myslíme na vás."),
    ]
    (operator.folder / "m.csv").write_text(HEADER + "\n" + "".join(rows), encoding="utf-8")
    operator("messages", "import", "m.csv", "--source", "web")
    operator("review", "approve", "--all-clean")

    run = operator("worker", "--once", "--now", "--json", check=1)
    summary = run.json()
    assert summary["bundles_failed"] == 1
    assert summary["bundles_rendered"] == 1
    (error,) = summary["errors"]
    assert "Private Use Area" in error
    assert "U+E000" in error
    assert operator("status", "--json").json()["deliveries"]["email"] == {"spooled": 1}

    (failed,) = operator("bundles", "list", "--failed", "--json").json()
    assert failed["recipient"] == "arkhipov-family"
    assert "Private Use Area" in failed["error"]

    dissolved = operator("bundles", "dissolve", failed["id"], "--json").json()
    assert dissolved["messages"] == 2
    operator("review", "reject", "bad-1", "--reason", "characters no font can print")
    operator("worker", "--once", "--now")
    status = operator("status", "--json").json()
    assert status["deliveries"]["email"] == {"spooled": 2}
    assert status["bundles_by_state"] == {"dissolved": 1, "rendered": 2}
    assert operator("audit", "verify", "--json").json()["ok"] is True


def test_only_a_failed_bundle_can_be_retried(operator: Operator) -> None:
    operator("campaign", "load", "campaign.toml")
    operator("messages", "import", "messages.csv", "--source", "web")
    operator("review", "approve", "--all-clean")
    operator("worker", "--once", "--now")
    rendered = operator("bundles", "list", "--json").json()[0]
    result = operator("bundles", "retry", rendered["id"], check=2)
    assert "only a failed bundle can be retried; it is rendered" in result.err
