"""Signed checkpoints of the ledger, made and checked the way an operator and an auditor would."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from delivery import merkle
from delivery.checkpoint import CheckpointError, generate_key, verify_checkpoint
from tests.acceptance.conftest import Operator

ORIGIN = "bounces.example.org/solidarity-delivery/ledger"


def ledger_leaves(database: Path) -> list[bytes]:
    """The tree's leaves, read straight from the database: each event's hash, in order."""
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT hash FROM ledger ORDER BY seq").fetchall()
    return [merkle.leaf_hash(bytes.fromhex(h)) for (h,) in rows]


def test_checkpoints_sign_the_tree_head_and_each_extends_the_last(operator: Operator) -> None:
    operator("campaign", "load", "campaign.toml")
    operator("messages", "import", "messages.csv", "--source", "web")
    operator("review", "approve", "--all-clean")
    operator("worker", "--once", "--now")

    made = operator(
        "audit", "keygen", "--name", "example.org/solidarity-test", "--dir", "keys", "--json"
    ).json()
    private = operator.folder / made["private"]
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    public = made["verifier_key"]
    assert public.startswith("example.org/solidarity-test+")
    again = operator(
        "audit", "keygen", "--name", "example.org/solidarity-test", "--dir", "keys", check=2
    )
    assert "already exists" in again.err
    assert private.read_text(encoding="utf-8").startswith("PRIVATE+KEY+")

    database = operator.outbox / "solidarity.db"
    first = operator("audit", "checkpoint", "--key", made["private"], "--json").json()
    note = (operator.outbox / first["path"]).read_text(encoding="utf-8")
    checkpoint = verify_checkpoint(note, [public], origin=ORIGIN)
    leaves = ledger_leaves(database)
    assert checkpoint.size == len(leaves) - 1  # the checkpoint's own event came after it
    assert checkpoint.root == merkle.root(leaves[: checkpoint.size])
    _, stranger = generate_key("example.org/someone-else")
    with pytest.raises(CheckpointError):
        verify_checkpoint(note, [stranger], origin=ORIGIN)

    operator("hold", "--case", "viktor-arkhipov", "--reason", "pause for the holidays")
    second = operator("audit", "checkpoint", "--key", made["private"], "--json").json()
    later = verify_checkpoint(
        (operator.outbox / second["path"]).read_text(encoding="utf-8"), [public], origin=ORIGIN
    )
    leaves = ledger_leaves(database)
    proof = merkle.consistency_proof(leaves[: later.size], checkpoint.size)
    assert later.size > checkpoint.size
    assert merkle.verify_consistency(
        checkpoint.size, later.size, checkpoint.root, later.root, proof
    )
    assert operator("audit", "verify", "--json").json()["ok"] is True

    published = operator.outbox / first["path"]
    published.write_text(note.replace(str(checkpoint.size), str(checkpoint.size + 1), 1))
    tampered = operator("audit", "verify", check=1)
    assert first["path"] in tampered.out
