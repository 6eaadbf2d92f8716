"""Retention, run as an operator would: what goes, what stays, and the ledger still checks out."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

from delivery.models import body_mac, message_ref
from tests.acceptance.conftest import Operator

CASE = "viktor-arkhipov"


def rows(database: Path, query: str, *args: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(database) as db:
        return db.execute(query, args).fetchall()


def age(database: Path, days: int) -> None:
    """Make the case's deliveries, and every review decision, end ``days`` ago."""
    with sqlite3.connect(database) as db:
        db.execute(
            "UPDATE deliveries SET updated_at = datetime(updated_at, ?) WHERE recipient_id IN"
            " (SELECT id FROM recipients WHERE case_slug = ?)",
            (f"-{days} days", CASE),
        )
        db.execute("UPDATE messages SET reviewed_at = datetime(reviewed_at, ?)", (f"-{days} days",))


def test_retention_erases_supporters_data_and_the_ledger_still_verifies(
    operator: Operator,
) -> None:
    operator("campaign", "load", "campaign.toml")
    operator("messages", "import", "messages.csv", "--source", "web")
    operator("review", "approve", "--all-clean")
    operator("review", "reject", "kr-0001", "--reason", "names a co-defendant")
    operator("worker", "--once", "--now")
    database = operator.outbox / "solidarity.db"
    before_status = operator("status", "--json").json()
    before_report = operator("report", "--format", "json", "--json").json()

    # The ledger names supporters only by keys that retention erases.
    ledger_text = " ".join(str(p) for (p,) in rows(database, "SELECT payload FROM ledger"))
    (key_hex, source, external, body) = rows(
        database, "SELECT link_key, source, external_id, body FROM messages WHERE id = 1"
    )[0]
    assert isinstance(key_hex, str)
    assert str(external) not in ledger_text
    assert hashlib.sha256(str(body).encode()).hexdigest() not in ledger_text
    key = bytes.fromhex(key_hex)
    assert message_ref(key, str(source), str(external)) in ledger_text
    assert body_mac(key, str(body)) in ledger_text

    fresh = operator("purge", "--dry-run", "--json").json()
    assert (fresh["bundles"], fresh["messages"], fresh["files"]) == (0, 0, 0)

    age(database, 100)
    plan = operator("purge", "--dry-run", "--json").json()
    assert plan["dry_run"] is True
    assert set(plan["by_case"]) == {CASE}
    assert plan["bundles"] == 2  # the prosecutor's and the prison's; the family's was never made
    assert plan["messages"] == 4  # three delivered to the case, one rejected
    pdfs = sorted((operator.outbox / "bundles" / CASE).rglob("*.pdf"))
    emails = sorted((operator.outbox / "email" / CASE).rglob("*.eml"))
    assert pdfs
    assert emails
    assert all(p.exists() for p in pdfs)  # a dry run changes nothing
    assert rows(database, "SELECT count(*) FROM messages WHERE erased_at IS NOT NULL") == [(0,)]

    done = operator("purge", "--json").json()
    assert done["messages"] == 4
    assert done["files"] == plan["files"]
    assert not any(p.exists() for p in pdfs)
    assert not any(p.exists() for p in emails)
    assert not list((operator.outbox / "post").rglob("*.pdf"))
    assert list((operator.outbox / "bundles" / CASE).rglob("*.manifest.json"))  # ids and hashes
    assert list((operator.outbox / "bundles" / "honduras-defenders").rglob("*.pdf"))  # too recent

    erased = rows(
        database,
        "SELECT external_id, supporter_name, supporter_email, supporter_city, body, link_key,"
        " supporter_country FROM messages WHERE case_slug = ? ORDER BY id",
        CASE,
    )
    assert len(erased) == 4
    for external_id, name, mail, city, text, link_key, country in erased:
        assert str(external_id).startswith("erased:")
        assert (name, mail, city, text, link_key) == ("", "", "", "", "")
        assert country  # counts by country still add up
    kept = rows(database, "SELECT supporter_name, body FROM messages WHERE case_slug != ?", CASE)
    assert all(name and text for name, text in kept)

    verified = operator("audit", "verify", "--json").json()
    assert verified["ok"] is True, verified["problems"]
    assert operator("status", "--json").json() == before_status
    after_report = operator("report", "--format", "json", "--json").json()
    assert after_report["messages"] == before_report["messages"]

    again = operator("messages", "import", "messages.csv", "--source", "web", "--json").json()
    assert (again["imported"], again["duplicates"]) == (0, 5)  # erased, yet never delivered twice

    trace = operator("audit", "trace", "pl-0002", "--json").json()
    assert trace["message"]["erased_at"]
    assert trace["bundles"][0]["erased_at"]
    assert "retention.erased" in [e["kind"] for e in trace["events"]]
    assert "personal data erased" in operator("audit", "trace", "pl-0002").out


def test_a_file_that_survived_erasure_is_named_and_swept(operator: Operator) -> None:
    operator("campaign", "load", "campaign.toml")
    operator("messages", "import", "messages.csv", "--source", "web")
    operator("review", "approve", "--all-clean")
    operator("worker", "--once", "--now")
    database = operator.outbox / "solidarity.db"
    pdf = next((operator.outbox / "bundles" / CASE / "ru-prosecutor-general").glob("*.pdf"))
    kept = operator.folder / "kept.pdf"
    shutil.copy(pdf, kept)
    age(database, 100)
    operator("purge")
    assert not pdf.exists()

    shutil.copy(kept, pdf)  # a backup restored over the outbox, say
    failed = operator("audit", "verify", "--json", check=1).json()
    relative = pdf.relative_to(operator.outbox).as_posix()
    assert any(relative in p and "still there" in p for p in failed["problems"])

    swept = operator("purge", "--json").json()
    assert swept["leftovers"] == 1
    assert not pdf.exists()
    assert operator("audit", "verify", "--json").json()["ok"] is True


def test_settings_and_plain_output(operator: Operator) -> None:
    operator("campaign", "load", "campaign.toml")
    bad = operator("purge", "--days", "-1", check=2)
    assert "--days" in bad.err
    operator.env["SOLIDARITY_RETENTION__DAYS"] = "30"
    shown = operator("purge", "--dry-run")
    assert "would erase: 0 messages" in shown.out
    assert "(30 days)" in shown.out
    operator.env["SOLIDARITY_RETENTION__DAYS"] = "0"  # only an explicit --days 0 erases at once
    wrong = operator("purge", "--dry-run", check=2)
    assert "retention.days" in wrong.err
    del operator.env["SOLIDARITY_RETENTION__DAYS"]
    assert json.loads(operator("purge", "--days", "0", "--dry-run", "--json").out)["days"] == 0
