"""The hash chain: what an auditor relies on."""

from __future__ import annotations

import dataclasses

from delivery.ledger import GENESIS, Entry, Event, seal, verify, verify_chain


def _chain(n: int = 5) -> list[Event]:
    entries = [
        Entry(kind="review.approved", subject=f"message:{i}", payload={"n": i}) for i in range(n)
    ]
    return seal(entries, last_seq=0, last_hash=GENESIS, at="2026-12-01T00:00:00+00:00")


def test_a_sealed_chain_verifies() -> None:
    assert verify_chain(_chain()) is None


def test_sealing_in_two_parts_gives_the_same_chain_as_in_one() -> None:
    whole = _chain(4)
    first = whole[:2]
    rest = seal(
        [Entry(kind="review.approved", subject=f"message:{i}", payload={"n": i}) for i in (2, 3)],
        last_seq=2,
        last_hash=first[-1].hash,
        at="2026-12-01T00:00:00+00:00",
    )
    assert [e.hash for e in first + rest] == [e.hash for e in whole]


def test_an_edited_payload_is_named_by_its_event() -> None:
    events = _chain()
    events[2] = dataclasses.replace(events[2], payload='{"n":99}')
    problem = verify_chain(events)
    assert problem is not None
    assert problem.seq == 3
    assert "altered" in str(problem)


def test_a_deleted_event_is_found() -> None:
    events = _chain()
    del events[1]
    problem = verify_chain(events)
    assert problem is not None
    assert problem.seq == 3
    assert "missing or reordered" in str(problem)


def test_reordered_events_are_found() -> None:
    events = _chain()
    events[1], events[2] = events[2], events[1]
    problem = verify_chain(events)
    assert problem is not None
    assert problem.seq == 3


def test_a_rehashed_edit_still_breaks_the_next_link() -> None:
    events = _chain()
    forged = seal(
        [Entry(kind="review.rejected", subject="message:1")],
        last_seq=1,
        last_hash=events[0].hash,
        at=events[1].at,
    )[0]
    events[1] = forged
    problem = verify_chain(events)
    assert problem is not None
    assert problem.seq == 3
    assert "does not follow" in str(problem)


def test_verify_reports_missing_and_changed_files() -> None:
    entry = Entry(
        kind="bundle.rendered",
        subject="bundle:b",
        payload={
            "artefacts": [
                {"path": "a.pdf", "sha256": "aa", "size": 1},
                {"path": "b.pdf", "sha256": "bb", "size": 1},
                {"path": "c.pdf", "sha256": "cc", "size": 1},
            ]
        },
    )
    events = seal([entry], last_seq=0, last_hash=GENESIS, at="t")
    hashes = {"a.pdf": "aa", "b.pdf": "XX"}
    problems = [str(p) for p in verify(events, hashes.get)]
    assert problems == [
        "event 1: file b.pdf was changed (SHA-256 XX, recorded bb)",
        "event 1: file c.pdf is missing",
    ]
