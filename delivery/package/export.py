"""Writing an audit package of one case from the ledger and the outbox.

Two passes over the ledger, streamed: the first finds the checkpoint, the case's messages,
bundles and deliveries, and the history of the case's files (recorded, erased); the second
writes the events and builds the Merkle tree, whose leaves (32 bytes each) are the only
thing kept for every event. The package is written into a temporary folder beside the
output and renamed into place once complete, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

from delivery import merkle
from delivery.audit import write_checkpoint
from delivery.checkpoint import Checkpoint, CheckpointError
from delivery.errors import InputError, LedgerError, NotFoundError
from delivery.ledger import GENESIS, Event, utc_stamp
from delivery.outbox import Outbox
from delivery.package import layout
from delivery.package.layout import b64
from delivery.package.tree import LeafTree
from delivery.store import Store

PROGRESS_EVERY = 100_000


@dataclass(frozen=True, kw_only=True)
class Exported:
    """What an export wrote, for the operator."""

    path: str
    case: str
    since: str | None
    start: int
    size: int
    root: str
    origin: str
    events: int
    context_events: int
    proofs: int
    files: tuple[str, ...]
    erased: tuple[str, ...]
    earlier_checkpoints: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "case": self.case,
            "since": self.since,
            "events": self.events,
            "range": [self.start, self.size],
            "checkpoint": {"size": self.size, "root": self.root, "origin": self.origin},
            "context_events": self.context_events,
            "proofs": self.proofs,
            "files": list(self.files),
            "erased": list(self.erased),
            "earlier_checkpoints": self.earlier_checkpoints,
        }


@dataclass(frozen=True, kw_only=True)
class _Recorded:
    """A checkpoint.signed event: which checkpoint, and where its note was written."""

    seq: int
    size: int
    root: str  # base64
    origin: str
    path: str
    sha256: str


@dataclass(frozen=True, kw_only=True)
class _Step:
    """One event in a file's history: recorded with a hash, or erased (sha256 None)."""

    seq: int
    sha256: str | None
    size: int = 0


@dataclass(frozen=True, kw_only=True)
class _File:
    """A case file as the ledger stands at the checkpoint."""

    path: str
    sha256: str
    size: int
    recorded_by: int
    erased_by: int | None


@dataclass(kw_only=True)
class _Members:
    """The case's messages, bundles and deliveries, learnt from events in ledger order."""

    case: str
    recipient_ids: frozenset[int]
    messages: set[int] = field(default_factory=set)
    bundles: set[str] = field(default_factory=set)
    deliveries: set[str] = field(default_factory=set)

    def take(self, event: Event, data: dict[str, Any]) -> None:
        prefix, _, ident = event.subject.partition(":")
        if prefix == "message" and ident.isdigit() and data.get("case") == self.case:
            self.messages.add(int(ident))
        elif prefix == "bundle" and self._bundle_of_case(data):
            self.bundles.add(ident)
        elif prefix == "delivery" and data.get("bundle") in self.bundles:
            self.deliveries.add(ident)

    def _bundle_of_case(self, data: dict[str, Any]) -> bool:
        if data.get("recipient_id") in self.recipient_ids:
            return True
        folder = f"bundles/{self.case}/"
        return any(str(item.get("path", "")).startswith(folder) for item in _artefacts(data))

    def belongs(self, subject: str) -> bool:
        return layout.belongs_to_case(
            subject,
            case=self.case,
            messages=self.messages,
            bundles=self.bundles,
            deliveries=self.deliveries,
        )


class _Scan:
    """The first pass: checkpoints, the case's members, its files' histories."""

    def __init__(self, members: _Members, since: str | None) -> None:
        self.members = members
        self.since = since
        self.first_since: int | None = None
        self.checkpoints: list[_Recorded] = []
        self.bundle_files: dict[str, set[str]] = {}
        self.history: dict[str, list[_Step]] = {}

    def take(self, event: Event) -> None:
        data = event.data()
        if self.since is not None and self.first_since is None and event.at >= self.since:
            self.first_since = event.seq
        self.members.take(event, data)
        ident = event.subject.partition(":")[2]
        if event.kind == "checkpoint.signed":
            self._checkpoint(event, data)
        elif event.kind == "bundle.rendered" and ident in self.members.bundles:
            for item in _artefacts(data):
                path = str(item["path"])
                if path.endswith((".pdf", ".manifest.json")):
                    self.bundle_files.setdefault(ident, set()).add(path)
                    self.history.setdefault(path, []).append(
                        _Step(
                            seq=event.seq,
                            sha256=str(item.get("sha256")),
                            size=int(item.get("size", 0)),
                        )
                    )
        if event.kind == "retention.erased":
            for item in data.get("erased", ()):
                steps = self.history.get(str(item.get("path"))) if isinstance(item, dict) else None
                if steps is not None:
                    steps.append(_Step(seq=event.seq, sha256=None))

    def _checkpoint(self, event: Event, data: dict[str, Any]) -> None:
        for item in _artefacts(data):
            self.checkpoints.append(
                _Recorded(
                    seq=event.seq,
                    size=int(data["size"]),
                    root=str(data["root"]),
                    origin=str(data["origin"]),
                    path=str(item["path"]),
                    sha256=str(item["sha256"]),
                )
            )

    def file_at(self, path: str, size: int) -> tuple[_File | None, int | None]:
        """The file as of event `size`, and the first erasure after it (if any)."""
        found: _File | None = None
        later: int | None = None
        for step in self.history.get(path, ()):
            if step.seq > size:
                if step.sha256 is None and found is not None and later is None:
                    later = step.seq
                continue
            if step.sha256 is not None:
                found = _File(
                    path=path,
                    sha256=step.sha256,
                    size=step.size,
                    recorded_by=step.seq,
                    erased_by=None,
                )
            elif found is not None:
                found = _File(
                    path=path,
                    sha256=found.sha256,
                    size=found.size,
                    recorded_by=found.recorded_by,
                    erased_by=step.seq,
                )
        return found, later


def export_package(
    store: Store,
    outbox: Outbox,
    output: Path,
    *,
    case: str,
    since: date | None,
    with_pdfs: bool,
    key_file: Path | None,
    origin: str,
    actor: str,
    progress: Callable[[str], None],
) -> Exported:
    """Write the audit package of `case` into `output` (a new or empty folder)."""
    _check_output(output)
    if store.campaign().case(case) is None:
        raise NotFoundError(f"case {case!r}: not in the campaign")
    if key_file is not None:
        try:
            signed = write_checkpoint(store, outbox, key_file, origin=origin, actor=actor)
        except CheckpointError as err:
            raise InputError(str(err)) from err
        progress(f"signed a checkpoint of {signed.checkpoint.size} events")
    ids = store.recipient_ids()
    members = _Members(
        case=case, recipient_ids=frozenset(rid for (c, _), rid in ids.items() if c == case)
    )
    scan = _Scan(members, since.isoformat() if since else None)
    progress("reading the ledger")
    for event in store.events():
        scan.take(event)
        _tick(progress, event.seq, "read")
    chosen, note = _choose_checkpoint(scan.checkpoints, outbox)
    start = _start(scan, since, chosen.size)
    parent = output.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".partial", dir=parent))
    try:
        writer = _Writer(
            store=store, outbox=outbox, folder=work, scan=scan, chosen=chosen, start=start
        )
        result = writer.write(note, with_pdfs=with_pdfs, since=since, progress=progress)
        if output.exists():
            output.rmdir()
        os.replace(work, output)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return replace(result, path=str(output))


def _check_output(output: Path) -> None:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise InputError(f"{output}: already exists and is not an empty folder")


def _tick(progress: Callable[[str], None], seq: int, verb: str) -> None:
    if seq % PROGRESS_EVERY == 0:
        progress(f"  {verb} {seq} events")


def _choose_checkpoint(checkpoints: list[_Recorded], outbox: Outbox) -> tuple[_Recorded, str]:
    """The newest checkpoint whose note is still in the outbox as recorded, and the note."""
    for recorded in sorted(checkpoints, key=lambda r: r.seq, reverse=True):
        if outbox.sha256(recorded.path) == recorded.sha256:
            return recorded, outbox.read(recorded.path).decode("utf-8")
    raise InputError(
        "no signed checkpoint in the outbox: run `solidarity audit checkpoint --key"
        " PRIVATE.key` first, or pass --key PRIVATE.key to sign one now"
    )


def _start(scan: _Scan, since: date | None, size: int) -> int:
    if since is None:
        return 1
    if scan.first_since is None or scan.first_since > size:
        raise InputError(
            f"--since {since.isoformat()}: no event on or after that day is covered by the"
            f" checkpoint ({size} events); pass --key to sign a newer one"
        )
    return scan.first_since


class _Writer:
    """The second pass and every file of the package, into one folder."""

    def __init__(
        self,
        *,
        store: Store,
        outbox: Outbox,
        folder: Path,
        scan: _Scan,
        chosen: _Recorded,
        start: int,
    ) -> None:
        self.store, self.outbox, self.folder = store, outbox, folder
        self.scan, self.chosen, self.start = scan, chosen, start
        self.size = chosen.size
        self.tree = LeafTree()
        self.proof_seqs: list[int] = []
        self.before_start = GENESIS
        self.seen: _Members = _Members(case=scan.members.case, recipient_ids=frozenset())

    def write(
        self, note: str, *, with_pdfs: bool, since: date | None, progress: Callable[[str], None]
    ) -> Exported:
        files, erased = self._case_files(with_pdfs)
        earlier = self._earlier()
        context = {f.recorded_by for f in (*files, *erased)}
        context |= {f.erased_by for f in erased if f.erased_by is not None}
        context |= {r.seq for r in earlier}
        progress(f"writing events {self.start} to {self.size}")
        events, context_events = self._events(context, progress)
        self._check_root()
        (self.folder / layout.CHECKPOINT).write_text(note, encoding="utf-8")
        copied = self._copy(files, progress)
        earlier_json = self._copy_checkpoints(earlier)
        self._write_proofs()
        root = b64(self.tree.root(self.size))
        members = self.seen
        package = {
            "format": layout.FORMAT,
            "version": layout.VERSION,
            "case": members.case,
            "since": since.isoformat() if since else None,
            "created_at": utc_stamp(),
            "origin": self.chosen.origin,
            "checkpoint": {"size": self.size, "root": root, "recorded_as": self.chosen.path},
            "range": {
                "start": self.start,
                "end": self.size,
                "prev_hash": self.before_start,
                "frontier": [b64(h) for h in self.tree.frontier(self.start - 1)],
            },
            "members": {
                "messages": sorted(members.messages),
                "bundles": sorted(members.bundles),
                "deliveries": sorted(members.deliveries),
            },
            "with_pdfs": with_pdfs,
            "events": events,
            "context_events": context_events,
            "files": copied,
            "erased": [
                {
                    "path": f.path,
                    "sha256": f.sha256,
                    "recorded_by": f.recorded_by,
                    "erased_by": f.erased_by,
                }
                for f in erased
            ],
            "earlier_checkpoints": earlier_json,
        }
        layout.write_json(self.folder / layout.PACKAGE_JSON, package)
        (self.folder / layout.README).write_text(
            layout.readme(
                case=members.case,
                origin=self.chosen.origin,
                start=self.start,
                size=self.size,
                with_pdfs=with_pdfs,
            ),
            encoding="utf-8",
        )
        return Exported(
            path=str(self.folder),
            case=members.case,
            since=since.isoformat() if since else None,
            start=self.start,
            size=self.size,
            root=root,
            origin=self.chosen.origin,
            events=events,
            context_events=context_events,
            proofs=len(self.proof_seqs),
            files=tuple(item["path"] for item in copied),
            erased=tuple(f.path for f in erased),
            earlier_checkpoints=len(earlier_json),
        )

    def _case_files(self, with_pdfs: bool) -> tuple[list[_File], list[_File]]:
        """The case's files to copy, and those erased under retention, as of the checkpoint."""
        files: list[_File] = []
        erased: list[_File] = []
        for bundle in sorted(self.scan.bundle_files):
            for path in sorted(self.scan.bundle_files[bundle]):
                if path.endswith(".pdf") and not with_pdfs:
                    continue
                found, later = self.scan.file_at(path, self.size)
                if found is None:
                    continue
                if found.erased_by is not None:
                    erased.append(found)
                elif later is not None and self.outbox.sha256(path) is None:
                    raise InputError(
                        f"file {path} was erased under retention by event {later}, after the"
                        f" checkpoint ({self.size} events): pass --key to sign a newer one"
                    )
                else:
                    files.append(found)
        return files, erased

    def _earlier(self) -> list[_Recorded]:
        """Earlier checkpoints of the same log whose notes are in the outbox as recorded."""
        kept: dict[str, _Recorded] = {}
        for recorded in self.scan.checkpoints:
            if (
                recorded.size < self.size
                and recorded.seq <= self.size
                and recorded.origin == self.chosen.origin
                and self.outbox.sha256(recorded.path) == recorded.sha256
            ):
                kept.setdefault(recorded.path, recorded)
        return sorted(kept.values(), key=lambda r: r.seq)

    def _events(self, context: set[int], progress: Callable[[str], None]) -> tuple[int, int]:
        """Write events.jsonl and context-events.jsonl, building the tree and checking links."""
        events = context_events = 0
        with (
            (self.folder / layout.EVENTS).open("w", encoding="utf-8") as out,
            (self.folder / layout.CONTEXT).open("w", encoding="utf-8") as before,
        ):
            for event in self._chained():
                self.tree.append(merkle.leaf_hash(bytes.fromhex(event.hash)))
                _tick(progress, event.seq, "wrote")
                belongs = self.scan.members.belongs(event.subject)
                if belongs:
                    _remember(self.seen, self.scan.members, event.subject)
                if event.seq == self.start - 1:
                    self.before_start = event.hash
                if event.seq >= self.start:
                    _put(out, event)
                    events += 1
                elif belongs or event.seq in context:
                    _put(before, event)
                    context_events += 1
                else:
                    continue
                if belongs or event.seq < self.start:
                    self.proof_seqs.append(event.seq)
        if context_events == 0:
            (self.folder / layout.CONTEXT).unlink()
        return events, context_events

    def _chained(self) -> Iterator[Event]:
        """The ledger's events 1 to the checkpoint's size, each checked against the last."""
        prev, expected = GENESIS, 1
        for event in self.store.events():
            if event.seq > self.size:
                return
            digest = event.sealed_hash()
            if event.seq != expected or event.prev_hash != prev or digest != event.hash:
                raise LedgerError(
                    f"the ledger does not verify at event {expected}: run"
                    " `solidarity audit verify` before exporting"
                )
            prev, expected = event.hash, expected + 1
            yield event

    def _check_root(self) -> None:
        if self.tree.size != self.size or self.tree.root(self.size) != layout.hash_from_b64(
            self.chosen.root, "checkpoint"
        ):
            raise LedgerError(
                f"the ledger's first {self.size} events do not give the root of the checkpoint"
                f" {self.chosen.path}: run `solidarity audit verify`"
            )

    def _copy(self, files: list[_File], progress: Callable[[str], None]) -> list[dict[str, Any]]:
        """Copy the case's files under files/, each re-hashed against its record."""
        if files:
            progress(f"copying {len(files)} files")
        copied: list[dict[str, Any]] = []
        for item in files:
            if not self.outbox.exists(item.path):
                raise LedgerError(
                    f"file {self.outbox.where(item.path)} (recorded by event"
                    f" {item.recorded_by}) is missing from the outbox:"
                    " run `solidarity audit verify`"
                )
            target = self.folder / layout.FILES / PurePosixPath(item.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            self.outbox.copy_to(item.path, target)
            if layout.file_sha256(target) != item.sha256:
                raise LedgerError(
                    f"file {self.outbox.where(item.path)} does not match the hash recorded by"
                    f" event {item.recorded_by}: run `solidarity audit verify`"
                )
            copied.append(
                {
                    "path": f"{layout.FILES}/{item.path}",
                    "sha256": item.sha256,
                    "size": item.size,
                    "recorded_by": item.recorded_by,
                }
            )
        return copied

    def _copy_checkpoints(self, earlier: list[_Recorded]) -> list[dict[str, Any]]:
        """Earlier notes under checkpoints/, each with its consistency proof to this one."""
        written: list[dict[str, Any]] = []
        for recorded in earlier:
            note = self.outbox.read(recorded.path).decode("utf-8")
            checkpoint = Checkpoint.parse(note[: note.rfind("\n\n") + 1])
            if checkpoint.root != self.tree.root(checkpoint.size):
                raise LedgerError(
                    f"checkpoint {recorded.path} (size {checkpoint.size}) is not consistent with"
                    " the ledger: the ledger was changed after it was signed"
                )
            name = PurePosixPath(recorded.path).name
            (self.folder / layout.CHECKPOINTS).mkdir(exist_ok=True)
            (self.folder / layout.CHECKPOINTS / name).write_text(note, encoding="utf-8")
            proof = self.tree.consistency_proof(checkpoint.size, self.size)
            written.append(
                {
                    "path": f"{layout.CHECKPOINTS}/{name}",
                    "size": checkpoint.size,
                    "root": b64(checkpoint.root),
                    "sha256": recorded.sha256,
                    "recorded_by": recorded.seq,
                    "consistency": [b64(h) for h in proof],
                }
            )
        return written

    def _write_proofs(self) -> None:
        """proofs.json, written a proof at a time: a case may have many events."""
        with (self.folder / layout.PROOFS).open("w", encoding="utf-8") as out:
            out.write(
                f'{{"size": {self.size}, "root": "{b64(self.tree.root(self.size))}", "proofs": {{'
            )
            for number, seq in enumerate(self.proof_seqs):
                path = self.tree.inclusion_proof(seq - 1, self.size)
                hashes = ", ".join(f'"{b64(h)}"' for h in path)
                out.write(f'{", " if number else ""}\n  "{seq}": [{hashes}]')
            out.write("\n}}\n")


def _remember(seen: _Members, known: _Members, subject: str) -> None:
    """Keep in `seen` every member the checkpoint covers an event of."""
    prefix, _, ident = subject.partition(":")
    if prefix == "message" and ident.isdigit():
        seen.messages.add(int(ident))
    elif prefix == "bundle" and ident in known.bundles:
        seen.bundles.add(ident)
    elif prefix == "delivery" and ident in known.deliveries:
        seen.deliveries.add(ident)


def _put(out: TextIO, event: Event) -> None:
    out.write(layout.event_line(event))
    out.write("\n")


def _artefacts(data: dict[str, Any]) -> list[dict[str, Any]]:
    items = data.get("artefacts", ())
    return [item for item in items if isinstance(item, dict) and "path" in item]
