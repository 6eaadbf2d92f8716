"""The append-only ledger: hash-chained events, pure.

Each event's hash covers the previous event's hash and every field of the event, so
editing, deleting or reordering any stored event breaks the chain from that event on.
The store persists events; this module seals and checks them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64


@dataclass(frozen=True, kw_only=True)
class Entry:
    """An event about to be appended."""

    kind: str  # e.g. "review.approved", "bundle.rendered", "delivery.spooled"
    subject: str  # e.g. "message:12", "bundle:bnd-…", "delivery:dlv-…", "case:slug"
    payload: Mapping[str, Any] = field(default_factory=dict)
    actor: str = "system"


@dataclass(frozen=True, kw_only=True)
class Event:
    """A sealed, stored event."""

    seq: int
    at: str
    actor: str
    kind: str
    subject: str
    payload: str  # canonical JSON, hashed as stored
    prev_hash: str
    hash: str

    def data(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.payload)
        return loaded

    def sealed_hash(self) -> str:
        """The hash this event's fields and ``prev_hash`` give: ``hash`` unless it was altered."""
        return chain_hash(
            self.prev_hash, self.seq, self.at, self.actor, self.kind, self.subject, self.payload
        )


@dataclass(frozen=True, kw_only=True)
class Problem:
    """The first thing that does not match, named for a person to look at."""

    seq: int | None
    what: str

    def __str__(self) -> str:
        return f"event {self.seq}: {self.what}" if self.seq is not None else self.what


def canonical(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def utc_stamp(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds")


def chain_hash(
    prev_hash: str, seq: int, at: str, actor: str, kind: str, subject: str, payload: str
) -> str:
    material = json.dumps([prev_hash, seq, at, actor, kind, subject, payload], ensure_ascii=False)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def seal(entries: Sequence[Entry], *, last_seq: int, last_hash: str, at: str) -> list[Event]:
    """Chain `entries` after the event (`last_seq`, `last_hash`)."""
    events: list[Event] = []
    prev = last_hash
    for offset, entry in enumerate(entries, start=1):
        seq = last_seq + offset
        payload = canonical(entry.payload)
        digest = chain_hash(prev, seq, at, entry.actor, entry.kind, entry.subject, payload)
        events.append(
            Event(
                seq=seq,
                at=at,
                actor=entry.actor,
                kind=entry.kind,
                subject=entry.subject,
                payload=payload,
                prev_hash=prev,
                hash=digest,
            )
        )
        prev = digest
    return events


def verify_chain(events: Iterable[Event]) -> Problem | None:
    """The first broken link, or None when the whole chain holds."""
    prev, expected_seq = GENESIS, 1
    for event in events:
        if event.seq != expected_seq:
            return Problem(
                seq=event.seq, what=f"expected event {expected_seq} here (missing or reordered)"
            )
        if event.prev_hash != prev:
            return Problem(seq=event.seq, what="does not follow the event before it")
        if event.sealed_hash() != event.hash:
            return Problem(seq=event.seq, what=f"content altered ({event.kind} {event.subject})")
        prev, expected_seq = event.hash, expected_seq + 1
    return None


def verify(
    events: Iterable[Event],
    file_hash: Callable[[str], str | None],
    name: Callable[[str], str] = str,
) -> list[Problem]:
    """Check the chain, then re-hash every artefact the ledger recorded.

    A file a later event lists under ``erased`` (retention) must be gone, not intact.
    `file_hash` gives a stored file's SHA-256 now, or None when it is missing; `name` how
    a problem names the file (default: its path as recorded). Returns every problem
    found, the first broken link of the chain first; empty when all holds.
    """
    recorded: dict[str, tuple[int, str]] = {}
    erased: dict[str, int] = {}

    def remember(stream: Iterable[Event]) -> Iterator[Event]:
        for event in stream:
            data = event.data()
            for item in data.get("artefacts", ()):
                recorded[str(item["path"])] = (event.seq, str(item["sha256"]))
                erased.pop(str(item["path"]), None)
            for item in data.get("erased", ()):
                erased[str(item["path"])] = event.seq
            yield event

    problems: list[Problem] = []
    broken = verify_chain(remember(events))
    if broken is not None:
        problems.append(broken)
    for path, (seq, want) in sorted(recorded.items()):
        problem = _file_problem(name(path), want, file_hash(path), erased.get(path))
        if problem:
            problems.append(Problem(seq=erased.get(path, seq), what=problem))
    return problems


def _file_problem(path: str, want: str, have: str | None, erased_by: int | None) -> str | None:
    if erased_by is not None:
        kept = f"file {path} was erased under retention but is still there"
        return None if have is None else kept
    if have is None:
        return f"file {path} is missing"
    if have != want:
        return f"file {path} was changed (SHA-256 {have}, recorded {want})"
    return None
