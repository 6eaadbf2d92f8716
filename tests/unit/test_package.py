"""The audit package's verifier, piece by piece, on hand-built events: no database, no outbox."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from delivery import merkle
from delivery.checkpoint import Checkpoint, generate_key, sign_checkpoint
from delivery.ledger import GENESIS, Entry, Event, seal
from delivery.package import layout
from delivery.package.layout import b64
from delivery.package.tree import LeafTree
from delivery.package.verify import verify_package

CASE = "viktor-arkhipov"
ORIGIN = "example.org/solidarity-delivery/ledger"
SIGNER, VERIFIER = generate_key("example.org/test")
MANIFEST = f"bundles/{CASE}/ru-prosecutor-general/bnd-1.manifest.json"
MANIFEST_BYTES = json.dumps({"bundle_id": "bnd-1", "messages": [{"id": 1}, {"id": 3}]}).encode()


def ledger(count: int) -> list[Event]:
    """`count` sealed events: messages of the case, and of another case, in turn."""
    entries = [
        Entry(
            kind="review.waiting",
            subject=f"message:{n}",
            payload={"case": CASE if n % 2 else "honduras-defenders", "line": n},
        )
        for n in range(1, count + 1)
    ]
    return seal(entries, last_seq=0, last_hash=GENESIS, at="2026-11-27T10:00:00.000000+00:00")


def leaves_of(events: list[Event]) -> list[bytes]:
    return [merkle.leaf_hash(bytes.fromhex(e.hash)) for e in events]


def tree_of(leaves: list[bytes]) -> LeafTree:
    tree = LeafTree()
    for leaf in leaves:
        tree.append(leaf)
    return tree


# -- the tree ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 31, 34, 64, 100])
def test_frontier_and_range_give_the_root_of_every_leaf(size: int) -> None:
    leaves = leaves_of(ledger(size))
    tree = tree_of(leaves)
    for start in range(1, size + 1):
        compact = merkle.CompactRange(start - 1, tree.frontier(start - 1))
        compact.extend(leaves[start - 1 : size])
        assert compact.root() == merkle.root(leaves), (start, size)


def test_the_trees_proofs_are_rfc_9162s() -> None:
    leaves = leaves_of(ledger(45))
    tree = tree_of(leaves)
    for size in range(1, 46):
        assert tree.root(size) == merkle.root(leaves[:size])
        for index in range(size):
            proof = tree.inclusion_proof(index, size)
            assert proof == merkle.inclusion_proof(leaves[:size], index)
            assert merkle.verify_inclusion(leaves[index], index, size, proof, tree.root(size))


@pytest.mark.parametrize(("old", "new"), [(1, 2), (3, 7), (4, 8), (6, 34), (31, 34), (34, 34)])
def test_an_earlier_checkpoint_is_proved_consistent_and_a_forged_one_is_not(
    old: int, new: int
) -> None:
    leaves = leaves_of(ledger(new))
    tree = tree_of(leaves)
    proof = tree.consistency_proof(old, new)
    assert proof == merkle.consistency_proof(leaves, old)
    assert merkle.verify_consistency(old, new, tree.root(old), tree.root(new), proof)
    forged = hashlib.sha256(b"another history").digest()
    assert not merkle.verify_consistency(old, new, forged, tree.root(new), proof)


# -- the verifier on a hand-built package -------------------------------------------------


def build(folder: Path, events: list[Event], *, start: int = 1, files: bool = True) -> Path:
    """A package of `events` as `solidarity audit export` lays it out, signed by SIGNER."""
    tree = tree_of(leaves_of(events))
    size = len(events)
    folder.mkdir()
    in_range = [e for e in events if e.seq >= start]
    (folder / layout.EVENTS).write_text(
        "".join(layout.event_line(e) + "\n" for e in in_range), encoding="utf-8"
    )
    case_seqs = [e.seq for e in in_range if _about_case(e)]
    proofs = {str(s): [b64(h) for h in tree.inclusion_proof(s - 1, size)] for s in case_seqs}
    layout.write_json(folder / layout.PROOFS, {"size": size, "proofs": proofs})
    checkpoint = Checkpoint(origin=ORIGIN, size=size, root=tree.root(size))
    (folder / layout.CHECKPOINT).write_text(sign_checkpoint(checkpoint, SIGNER), encoding="utf-8")
    listed: list[dict[str, Any]] = []
    if files:
        (folder / "files" / Path(MANIFEST).parent).mkdir(parents=True)
        (folder / "files" / MANIFEST).write_bytes(MANIFEST_BYTES)
        listed.append({"path": f"files/{MANIFEST}", "sha256": _sha(MANIFEST_BYTES)})
    layout.write_json(
        folder / layout.PACKAGE_JSON,
        {
            "format": layout.FORMAT,
            "version": layout.VERSION,
            "case": CASE,
            "origin": ORIGIN,
            "checkpoint": {"size": size, "root": b64(checkpoint.root)},
            "range": {
                "start": start,
                "prev_hash": events[start - 2].hash if start > 1 else GENESIS,
                "frontier": [b64(h) for h in tree.frontier(start - 1)],
            },
            "members": {"messages": [1, 3], "bundles": ["bnd-1"], "deliveries": []},
            "with_pdfs": False,
            "files": listed,
            "earlier_checkpoints": [],
        },
    )
    return folder


def _about_case(event: Event) -> bool:
    return CASE in event.payload or event.subject == "bundle:bnd-1"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def with_bundle(count: int, *, erased: bool) -> list[Event]:
    """`count` message events, then a rendered bundle of the case (and its erasure)."""
    rendered = Entry(
        kind="bundle.rendered",
        subject="bundle:bnd-1",
        payload={"artefacts": [{"path": MANIFEST, "sha256": _sha(MANIFEST_BYTES), "size": 1}]},
    )
    gone = Entry(
        kind="retention.erased",
        subject="bundle:bnd-1",
        payload={"erased": [{"path": MANIFEST, "sha256": _sha(MANIFEST_BYTES)}]},
    )
    events = ledger(count)
    more = [rendered, gone] if erased else [rendered]
    return events + seal(more, last_seq=count, last_hash=events[-1].hash, at=events[-1].at)


def problems(folder: Path) -> list[str]:
    return list(verify_package(folder, [VERIFIER]).problems)


@pytest.mark.parametrize("start", [1, 2, 6, 11])
def test_a_package_verifies_from_any_start(tmp_path: Path, start: int) -> None:
    folder = build(tmp_path / "package", with_bundle(10, erased=False), start=start)
    result = verify_package(folder, [VERIFIER])
    assert result.problems == ()
    assert result.events == 12 - start
    assert result.signed_by == ("example.org/test",)
    assert result.files == 1


def test_a_file_erased_under_retention_is_erased_not_missing(tmp_path: Path) -> None:
    folder = build(tmp_path / "package", with_bundle(4, erased=True), files=False)
    result = verify_package(folder, [VERIFIER])
    assert result.problems == ()
    assert [(e.path, e.recorded_by, e.erased_by) for e in result.erased] == [(MANIFEST, 5, 6)]
    assert f"{MANIFEST}: erased under retention (event 6)" in "\n".join(result.lines())


def test_a_file_neither_carried_nor_erased_is_named(tmp_path: Path) -> None:
    folder = build(tmp_path / "package", with_bundle(4, erased=False), files=False)
    assert problems(folder) == [f"file {MANIFEST} (recorded by event 5) is not in the package"]


def test_each_broken_link_is_named_by_event_kind_and_subject(tmp_path: Path) -> None:
    events = ledger(8)
    edited = [*events]
    changed = events[4]
    edited[4] = Event(**{**vars(changed), "payload": changed.payload.replace("5", "7")})
    folder = build(tmp_path / "edited", events, files=False)
    (folder / layout.EVENTS).write_text(
        "".join(layout.event_line(e) + "\n" for e in edited), encoding="utf-8"
    )
    assert problems(folder) == ["event 5 (review.waiting message:5): content altered"]
    folder = build(tmp_path / "reordered", events, files=False)
    order = [*events[:2], events[3], events[2], *events[4:]]
    (folder / layout.EVENTS).write_text(
        "".join(layout.event_line(e) + "\n" for e in order), encoding="utf-8"
    )
    assert problems(folder)[0] == (
        "events out of order: event 3 (review.waiting message:3) comes after"
        " event 4 (review.waiting message:4)"
    )


def test_a_malformed_package_names_the_file_and_line(tmp_path: Path) -> None:
    folder = build(tmp_path / "package", ledger(3))
    (folder / layout.PROOFS).write_text('{"size": 3,\n "proofs": {,}}', encoding="utf-8")
    with pytest.raises(layout.PackageError, match=r"proofs\.json line 2 column 13"):
        verify_package(folder, [VERIFIER])
