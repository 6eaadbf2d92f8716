"""`solidarity track bounces` as an operator runs it."""

from __future__ import annotations

import mailbox
from pathlib import Path

from tests.acceptance.conftest import FIXTURES, Operator


def test_reports_it_cannot_read_are_quarantined_for_a_person(operator: Operator) -> None:
    operator("campaign", "load", "campaign.toml")
    box = mailbox.mbox(operator.folder / "bounces.mbox")
    box.add((FIXTURES / "dsn" / "garbage.eml").read_bytes())
    box.add((FIXTURES / "dsn" / "out_of_office.eml").read_bytes())
    box.flush()
    box.close()

    report = operator("track", "bounces", "--mbox", "bounces.mbox", "--json").json()

    assert report["read"] == 2
    assert report["outcomes"] == {"auto-reply": 1, "quarantined": 1}
    (path,) = report["quarantined"]
    assert Path(path).is_relative_to(operator.outbox / "quarantine" / "bounces")
    assert Path(path).with_suffix(".reason.txt").is_file()


def test_exactly_one_mailbox_is_named(operator: Operator) -> None:
    operator("campaign", "load", "campaign.toml")
    result = operator("track", "bounces", check=2)
    assert "give exactly one of --maildir, --mbox or --imap" in result.err
