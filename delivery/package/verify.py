"""Checking an audit package offline, with nothing but the package and the public key(s).

No database, outbox or settings: everything comes from the folder. The events stream by
once (a package may hold millions); what is kept is the case's members, the records of
the files in hand, the proofs, and O(log n) hashes of the tree. Every problem is named by
event number, kind and subject, or by file, and all are collected; of the hash chain only
the first break is reported, since every later link follows from it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from delivery import merkle
from delivery.checkpoint import Checkpoint, CheckpointError, open_note
from delivery.ledger import GENESIS, Event
from delivery.merkle import CompactRange, ProofError
from delivery.package import layout
from delivery.package.layout import PackageError, b64, label, plural

SHOWN = 50  # bundles, deliveries and problems listed before "… and N more"


@dataclass(frozen=True, kw_only=True)
class GivenCheckpoint:
    """A checkpoint the auditor holds from before: its name for messages, and its note."""

    label: str
    note: str


@dataclass(frozen=True, kw_only=True)
class BundleState:
    id: str
    state: str
    messages: int | None
    pages: int | None
    pdf_path: str
    pdf_sha256: str
    manifest_path: str


@dataclass(frozen=True, kw_only=True)
class DeliveryState:
    id: str
    bundle: str
    channel: str
    state: str
    proof: str


@dataclass(frozen=True, kw_only=True)
class ErasedFile:
    path: str
    recorded_by: int
    erased_by: int


@dataclass(frozen=True, kw_only=True)
class Verification:
    """What was checked in a package, and every problem found (none: it verifies)."""

    folder: str
    problems: tuple[str, ...]
    case: str
    origin: str
    size: int
    root: str  # base64, as in the checkpoint
    signed_by: tuple[str, ...]
    signature_checked: bool
    start: int
    events: int
    context_events: int
    proofs: int
    messages: int
    bundles: tuple[BundleState, ...]
    deliveries: tuple[DeliveryState, ...]
    files: int
    erased: tuple[ErasedFile, ...]
    earlier: tuple[str, ...]  # the earlier checkpoints proved, e.g. "checkpoints/x.txt (size 31)"

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problems": list(self.problems),
            "package": self.folder,
            "case": self.case,
            "checkpoint": {
                "origin": self.origin,
                "size": self.size,
                "root": self.root,
                "signed_by": list(self.signed_by),
                "signature_checked": self.signature_checked,
            },
            "range": [self.start, self.size],
            "events": self.events,
            "context_events": self.context_events,
            "proofs": self.proofs,
            "messages": self.messages,
            "bundles": [vars(b) for b in self.bundles],
            "deliveries": [vars(d) for d in self.deliveries],
            "files": self.files,
            "erased": [vars(e) for e in self.erased],
            "earlier_checkpoints": list(self.earlier),
        }

    def lines(self) -> list[str]:
        """The summary for people: what holds, then each problem."""
        head = f"package OK: {self.folder}" if self.ok else f"package FAILED: {self.folder}"
        signed = (
            f"signed by {', '.join(self.signed_by)}"
            if self.signature_checked
            else "signature NOT checked"
        )
        out = [
            head,
            f"  checkpoint: {self.size} events of {self.origin}, {signed}",
            f"  events: {self.events} checked ({self.start} to {self.size})"
            + (f", {self.context_events} earlier" if self.context_events else "")
            + f"; {self.proofs} inclusion proofs",
            f"  case {self.case}: {self.messages} messages, {len(self.bundles)} bundles,"
            f" {len(self.deliveries)} deliveries",
        ]
        for b in self.bundles[:SHOWN]:
            counts = f", {plural(b.messages, 'message')}" if b.messages is not None else ""
            out.append(f"    bundle {b.id}: {b.state}{counts}")
        for d in self.deliveries[:SHOWN]:
            out.append(f"    delivery {d.id} ({d.channel}, bundle {d.bundle}): {d.state}")
        more = max(0, len(self.bundles) - SHOWN) + max(0, len(self.deliveries) - SHOWN)
        if more:
            out.append(f"    … and {more} more")
        out.append(f"  files: {self.files} checked against the hashes the events recorded")
        out += [f"    {e.path}: erased under retention (event {e.erased_by})" for e in self.erased]
        out.append(f"  earlier checkpoints proved consistent: {len(self.earlier)}")
        out += [f"    {name}" for name in self.earlier]
        if self.problems:
            out.append(f"problems ({len(self.problems)}):")
            out += [f"  {p}" for p in self.problems]
        return out


@dataclass(frozen=True, kw_only=True)
class _Package:
    """package.json, read and typed."""

    case: str
    origin: str
    size: int
    root: bytes
    start: int
    prev_hash: str
    frontier: tuple[bytes, ...]
    messages: frozenset[int]
    bundles: frozenset[str]
    deliveries: frozenset[str]
    with_pdfs: bool
    files: dict[str, str]  # package path -> sha256
    consistency: dict[int, tuple[bytes, ...]]  # earlier size -> proof to `size`


def verify_package(
    folder: Path,
    verifier_keys: Sequence[str],
    *,
    given: Sequence[GivenCheckpoint] = (),
    check_signature: bool = True,
) -> Verification:
    """Check the package in `folder`; PackageError when it cannot be read as one."""
    return _Run(folder, verifier_keys, check_signature).run(given)


def _read_package(folder: Path) -> _Package:
    data = layout.read_json(folder, layout.PACKAGE_JSON)
    where = layout.PACKAGE_JSON
    if not isinstance(data, dict) or data.get("format") != layout.FORMAT:
        raise PackageError(f"{where}: not an audit package (format is not {layout.FORMAT!r})")
    if data.get("version") != layout.VERSION:
        raise PackageError(f"{where}: version {data.get('version')!r} is not {layout.VERSION}")
    checkpoint = layout.field(data, "checkpoint", dict, where)
    span = layout.field(data, "range", dict, where)
    members = layout.field(data, "members", dict, where)
    prev = layout.field(span, "prev_hash", str, f"{where} range")
    if not layout.is_hex_hash(prev):
        raise PackageError(f"{where}: range.prev_hash is not 64 lowercase hex digits")
    return _Package(
        case=layout.field(data, "case", str, where),
        origin=layout.field(data, "origin", str, where),
        size=layout.field(checkpoint, "size", int, f"{where} checkpoint"),
        root=layout.hash_from_b64(checkpoint.get("root"), f"{where} checkpoint.root"),
        start=max(1, layout.field(span, "start", int, f"{where} range")),
        prev_hash=prev,
        frontier=tuple(layout.hashes_from_b64(span.get("frontier"), f"{where} range.frontier")),
        messages=frozenset(_ints(layout.field(members, "messages", list, f"{where} members"))),
        bundles=frozenset(map(str, layout.field(members, "bundles", list, f"{where} members"))),
        deliveries=frozenset(
            map(str, layout.field(members, "deliveries", list, f"{where} members"))
        ),
        with_pdfs=layout.field(data, "with_pdfs", bool, where),
        files={
            layout.field(item, "path", str, f"{where} files"): layout.field(
                item, "sha256", str, f"{where} files"
            )
            for item in layout.field(data, "files", list, where)
        },
        consistency={
            layout.field(item, "size", int, f"{where} earlier_checkpoints"): tuple(
                layout.hashes_from_b64(item.get("consistency"), f"{where} earlier_checkpoints")
            )
            for item in layout.field(data, "earlier_checkpoints", list, where)
        },
    )


def _ints(values: list[Any]) -> list[int]:
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise PackageError(f"{layout.PACKAGE_JSON}: members.messages holds a non-integer")
    return values


def _read_proofs(folder: Path) -> dict[int, list[bytes]]:
    data = layout.read_json(folder, layout.PROOFS)
    proofs = layout.field(data, "proofs", dict, layout.PROOFS)
    read: dict[int, list[bytes]] = {}
    for key, value in proofs.items():
        if not str(key).isdigit():
            raise PackageError(f"{layout.PROOFS}: key {key!r} is not an event number")
        read[int(key)] = layout.hashes_from_b64(value, f"{layout.PROOFS} event {key}")
    return read


def _note_text(note: str, where: str) -> str:
    """The checkpoint text of a signed note (before its last blank line), unverified."""
    split = note.rfind("\n\n")
    if split < 0:
        raise CheckpointError(f"{where}: not a signed note (no blank line before signatures)")
    return note[: split + 1]


class _Facts:
    """What the events say about the case, gathered as they stream by in order."""

    def __init__(self, package: _Package, present: set[str]) -> None:
        self.case = package.case
        self.messages = set(package.messages)
        self.bundles = set(package.bundles)
        self.deliveries = set(package.deliveries)
        self.present = present
        self.records: dict[str, tuple[int, str, str]] = {}  # path -> (seq, sha256, label)
        self.erased: dict[str, int] = {}
        self.bundle_files: dict[str, set[str]] = {}
        self.planned: dict[str, tuple[int, int, str]] = {}  # bundle -> (seq, count, label)
        self.bundle_state: dict[str, dict[str, Any]] = {}
        self.delivery_state: dict[str, dict[str, Any]] = {}

    def take(self, event: Event) -> bool:
        """Learn from `event`; True when it is about the case."""
        data = event.data()
        prefix, _, ident = event.subject.partition(":")
        if prefix == "message" and ident.isdigit() and data.get("case") == self.case:
            self.messages.add(int(ident))
        elif prefix == "bundle" and _in_folder(data, f"bundles/{self.case}/"):
            self.bundles.add(ident)
        elif prefix == "delivery" and data.get("bundle") in self.bundles:
            self.deliveries.add(ident)
        self._files(event, data)
        belongs = self.belongs(event.subject)
        if belongs and prefix == "bundle":
            self._bundle(event, ident, data)
        elif belongs and prefix == "delivery":
            self._delivery(event, ident, data)
        return belongs

    def belongs(self, subject: str) -> bool:
        return layout.belongs_to_case(
            subject,
            case=self.case,
            messages=self.messages,
            bundles=self.bundles,
            deliveries=self.deliveries,
        )

    def _watched(self, path: str) -> bool:
        return path.startswith((f"bundles/{self.case}/", "checkpoints/")) or path in self.present

    def _files(self, event: Event, data: dict[str, Any]) -> None:
        for item in _artefacts(data):
            path = str(item["path"])
            if self._watched(path):
                self.records[path] = (event.seq, str(item.get("sha256")), label(event))
                self.erased.pop(path, None)
        if event.kind == "retention.erased":
            for item in data.get("erased", ()):
                path = str(item.get("path")) if isinstance(item, dict) else ""
                if path in self.records:
                    self.erased[path] = event.seq

    def _bundle(self, event: Event, ident: str, data: dict[str, Any]) -> None:
        state = self.bundle_state.setdefault(ident, {"state": "", "pages": None, "pdf": ""})
        if event.kind.startswith("bundle."):
            state["state"] = event.kind.removeprefix("bundle.")
        if event.kind == "bundle.planned" and isinstance(data.get("messages"), int):
            self.planned[ident] = (event.seq, int(data["messages"]), label(event))
        if event.kind == "bundle.rendered":
            state["pages"] = data.get("pages")
            state["pdf_sha256"] = str(data.get("pdf_sha256", ""))
            for item in _artefacts(data):
                path = str(item["path"])
                if path.endswith((".pdf", ".manifest.json")):
                    self.bundle_files.setdefault(ident, set()).add(path)
                    state["manifest" if path.endswith(".json") else "pdf"] = path

    def _delivery(self, event: Event, ident: str, data: dict[str, Any]) -> None:
        state = self.delivery_state.setdefault(
            ident, {"bundle": "", "channel": "", "state": "", "proof": "none"}
        )
        if event.kind == "delivery.queued":
            state["bundle"] = str(data.get("bundle", ""))
            state["channel"] = str(data.get("channel", ""))
        if event.kind.startswith("delivery."):
            state["state"] = str(data.get("to") or event.kind.removeprefix("delivery."))
            state["proof"] = str(data.get("proof") or state["proof"])
        elif event.kind == "resolution.recorded":
            state["state"] += f", decided {data.get('resolution', '')}"

    def bundle_states(self) -> tuple[BundleState, ...]:
        return tuple(
            BundleState(
                id=ident,
                state=s["state"],
                messages=self.planned[ident][1] if ident in self.planned else None,
                pages=s["pages"] if isinstance(s["pages"], int) else None,
                pdf_path=s["pdf"],
                pdf_sha256=str(s.get("pdf_sha256", "")),
                manifest_path=str(s.get("manifest", "")),
            )
            for ident, s in self.bundle_state.items()
        )

    def delivery_states(self) -> tuple[DeliveryState, ...]:
        return tuple(DeliveryState(id=ident, **s) for ident, s in self.delivery_state.items())


class _Chain:
    """The range's hash chain, link by link: the first break is named, then only watched."""

    def __init__(self, start: int, prev_hash: str) -> None:
        self.expected, self.prev = start, prev_hash
        self.start = start
        self.last: Event | None = None
        self.broken = False
        self.gap: Event | None = None  # the event found where `expected` should have been

    def take(self, event: Event) -> str | None:
        if self.gap is not None:
            if event.seq != self.expected:
                return None
            first, self.gap = self.gap, None
            return (
                f"events out of order: event {event.seq} ({label(event)}) comes after"
                f" event {first.seq} ({label(first)})"
            )
        if self.broken:
            return None
        problem = self._link(event)
        if problem is None and event.seq == self.expected:
            self.prev, self.expected, self.last = event.hash, self.expected + 1, event
            return None
        self.broken = True
        return problem

    def _link(self, event: Event) -> str | None:
        if event.seq > self.expected:
            self.gap = event
            return None  # missing or out of order: known once the rest is read
        if event.seq < self.expected:
            after = f"event {self.last.seq} ({label(self.last)})" if self.last else "its start"
            return f"events out of order: event {event.seq} ({label(event)}) comes after {after}"
        if event.prev_hash != self.prev:
            before = (
                f"event {event.seq - 1}"
                if event.seq > self.start
                else f"the hash package.json records for event {event.seq - 1}"
            )
            return (
                f"event {event.seq} ({label(event)}): its prev_hash is not the hash of {before}"
                f" (event {event.seq - 1} or the link was changed)"
            )
        digest = event.sealed_hash()
        if digest != event.hash:
            return f"event {event.seq} ({label(event)}): content altered"
        return None

    def finish(self) -> str | None:
        if self.gap is None:
            return None
        missing = self.expected
        last = self.gap.seq - 1
        what = f"event {missing} missing" if last == missing else f"events {missing}–{last} missing"
        return f"{what} (the package goes from event {missing - 1} to event {self.gap.seq})"


class _Run:
    """One verification: the steps in order, the problems collected."""

    def __init__(self, folder: Path, keys: Sequence[str], check_signature: bool) -> None:
        self.folder = folder
        self.keys = keys
        self.check_signature = check_signature
        self.problems: list[str] = []
        self.package = _read_package(folder)
        self.signed_by: tuple[str, ...] = ()
        self.checkpoint = self._checkpoint()
        self.present = self._present()
        self.proofs = _read_proofs(folder)
        self.facts = _Facts(self.package, set(self.present))
        self.proved: set[int] = set()
        self.prefix_roots: dict[int, bytes] = {}
        self.events = self.context_events = 0

    @property
    def size(self) -> int:
        return self.checkpoint.size

    def run(self, given: Sequence[GivenCheckpoint]) -> Verification:
        claims = self._claims(given)
        wanted = {c.size for _, c in claims if c is not None}
        self._context()
        self._range(wanted)
        for seq in sorted(set(self.proofs) - self.proved):
            if not self.package.start <= seq <= self.size:  # in the range: named as missing
                self.problems.append(
                    f"{layout.PROOFS} has a proof for event {seq}, which is not in the package"
                )
        files, erased = self._files()
        earlier = [
            f"{name} (size {c.size})"
            for name, c in claims
            if c is not None and self._consistent(name, c)
        ]
        return Verification(
            folder=str(self.folder),
            problems=tuple(self.problems),
            case=self.package.case,
            origin=self.checkpoint.origin,
            size=self.size,
            root=b64(self.checkpoint.root),
            signed_by=self.signed_by,
            signature_checked=self.check_signature,
            start=self.package.start,
            events=self.events,
            context_events=self.context_events,
            proofs=len(self.proved),
            messages=len(self.facts.messages),
            bundles=self.facts.bundle_states(),
            deliveries=self.facts.delivery_states(),
            files=files,
            erased=tuple(erased),
            earlier=tuple(earlier),
        )

    # -- the checkpoint ---------------------------------------------------------------

    def _checkpoint(self) -> Checkpoint:
        try:
            note = (self.folder / layout.CHECKPOINT).read_text(encoding="utf-8")
            checkpoint = Checkpoint.parse(_note_text(note, layout.CHECKPOINT))
        except FileNotFoundError as err:
            raise PackageError(f"{layout.CHECKPOINT}: not in the package") from err
        except (OSError, UnicodeDecodeError, CheckpointError) as err:
            raise PackageError(f"{layout.CHECKPOINT}: {err}") from err
        if self.check_signature:
            try:
                _text, names = open_note(note, self.keys)
                self.signed_by = tuple(names)
            except CheckpointError as err:
                self.problems.append(f"{layout.CHECKPOINT}: {err}")
        package = self.package
        if checkpoint.origin != package.origin:
            self.problems.append(
                f"{layout.CHECKPOINT} is for origin {checkpoint.origin!r}, but"
                f" {layout.PACKAGE_JSON} says {package.origin!r}"
            )
        if (checkpoint.size, checkpoint.root) != (package.size, package.root):
            self.problems.append(
                f"{layout.PACKAGE_JSON} says the checkpoint covers {package.size} events"
                f" (root {b64(package.root)}), but {layout.CHECKPOINT} says {checkpoint.size}"
                f" (root {b64(checkpoint.root)})"
            )
        return checkpoint

    # -- the events -------------------------------------------------------------------

    def _context(self) -> None:
        """Earlier events the package relies on, each proved on its own by inclusion."""
        if not (self.folder / layout.CONTEXT).exists():
            return
        last = 0
        for event in layout.read_events(self.folder, layout.CONTEXT):
            self.context_events += 1
            if event.seq <= last or event.seq >= self.package.start:
                self.problems.append(
                    f"{layout.CONTEXT}: event {event.seq} ({label(event)}) is out of order"
                    f" or inside the range, which starts at event {self.package.start}"
                )
                continue
            last = event.seq
            digest = event.sealed_hash()
            if digest != event.hash:
                self.problems.append(f"event {event.seq} ({label(event)}): content altered")
            self._take(event, needs_proof=True)

    def _range(self, wanted: set[int]) -> None:
        package = self.package
        prev = package.prev_hash if package.start > 1 else GENESIS
        if package.start == 1 and package.prev_hash != GENESIS:
            self.problems.append(f"{layout.PACKAGE_JSON}: range.prev_hash of event 0 is not zero")
        chain = _Chain(package.start, prev)
        try:
            compact = CompactRange(package.start - 1, package.frontier)
        except ProofError as err:
            raise PackageError(f"{layout.PACKAGE_JSON}: range.frontier: {err}") from err
        self._capture(compact, wanted)
        highest, past = package.start - 1, False
        for event in layout.read_events(self.folder, layout.EVENTS):
            self._note(chain.take(event))
            if event.seq > self.size:
                if not past:
                    self.problems.append(
                        f"the package goes on past the checkpoint: event {event.seq}"
                        f" ({label(event)}) is after the {self.size} events it covers"
                    )
                past = True
                continue
            self.events += 1
            highest = max(highest, event.seq)
            compact.append(merkle.leaf_hash(bytes.fromhex(event.hash)))
            self._capture(compact, wanted)
            self._take(event, needs_proof=False)
        self._note(chain.finish())
        self._root(compact, highest)

    def _note(self, problem: str | None) -> None:
        if problem is not None:
            self.problems.append(problem)

    def _capture(self, compact: CompactRange, wanted: set[int]) -> None:
        if compact.size in wanted:
            self.prefix_roots[compact.size] = compact.root()

    def _root(self, compact: CompactRange, highest: int) -> None:
        start, size = self.package.start, self.size
        if highest < size:
            self.problems.append(
                f"the package ends at event {highest} but the checkpoint covers {size} events"
            )
        elif compact.size != size:
            self.problems.append(
                f"the package holds {compact.size - start + 1} events for the range {start} to"
                f" {size}, not {size - start + 1}"
            )
        elif compact.root() != self.checkpoint.root:
            self.problems.append(
                f"the Merkle root of events 1 to {size}, recomputed from the package, does not"
                " match the checkpoint's signed root"
            )

    def _take(self, event: Event, *, needs_proof: bool) -> None:
        belongs = self.facts.take(event)
        proof = self.proofs.get(event.seq)
        if proof is None:
            if belongs or needs_proof:
                why = f"is about case {self.package.case}" if belongs else "is an earlier event"
                self.problems.append(
                    f"event {event.seq} ({label(event)}) {why} but has no inclusion proof"
                )
            return
        self.proved.add(event.seq)
        leaf = merkle.leaf_hash(bytes.fromhex(event.hash))
        if not merkle.verify_inclusion(leaf, event.seq - 1, self.size, proof, self.checkpoint.root):
            self.problems.append(
                f"event {event.seq} ({label(event)}): its inclusion proof does not verify"
                " against the checkpoint"
            )

    # -- the files --------------------------------------------------------------------

    def _present(self) -> dict[str, str]:
        """Outbox path -> package path of each file carried; anything else is named."""
        present: dict[str, str] = {}
        for path in sorted(self.folder.rglob("*")):
            if path.is_dir():
                continue
            rel = path.relative_to(self.folder).as_posix()
            top, _, rest = rel.partition("/")
            if not rest and top in layout.TOP_FILES:
                continue
            if rest and top == layout.FILES:
                present[rest] = rel
            elif rest and top == layout.CHECKPOINTS and "/" not in rest:
                present[rel] = rel
            else:
                self.problems.append(f"file {rel} is not part of an audit package")
        return present

    def _files(self) -> tuple[int, list[ErasedFile]]:
        checked = 0
        for path, rel in self.present.items():
            checked += self._file(path, rel)
        for rel in sorted(set(self.package.files) - set(self.present.values())):
            self.problems.append(f"file {rel} is listed in {layout.PACKAGE_JSON} but missing")
        erased: list[ErasedFile] = []
        for bundle in sorted(self.facts.bundles):
            for path in sorted(self.facts.bundle_files.get(bundle, ())):
                if path in self.present or (path.endswith(".pdf") and not self.package.with_pdfs):
                    continue
                seq, _sha, _label = self.facts.records[path]
                if path in self.facts.erased:
                    erased.append(
                        ErasedFile(path=path, recorded_by=seq, erased_by=self.facts.erased[path])
                    )
                else:
                    self.problems.append(
                        f"file {path} (recorded by event {seq}) is not in the package"
                    )
        return checked, erased

    def _file(self, path: str, rel: str) -> int:
        """1 when the file matches its record; else 0 and the problem is named."""
        record = self.facts.records.get(path)
        if record is None:
            self.problems.append(f"file {rel} is in the package, but no event recorded it")
            return 0
        seq, sha256, what = record
        if path in self.facts.erased:
            self.problems.append(
                f"file {path} is in the package, but event {self.facts.erased[path]} erased it"
            )
            return 0
        if layout.file_sha256(self.folder / rel) != sha256:
            self.problems.append(
                f"file {path} does not match the hash recorded by event {seq} ({what})"
            )
            return 0
        if self.package.files.get(rel, sha256) != sha256:
            self.problems.append(
                f"{layout.PACKAGE_JSON} gives file {rel} another SHA-256 than event {seq}"
            )
        if path.endswith(".manifest.json"):
            self._manifest(path, rel)
        return 1

    def _manifest(self, path: str, rel: str) -> None:
        """The manifest's message ids against the case and the bundle as planned."""
        bundle = next((b for b, ps in self.facts.bundle_files.items() if path in ps), None)
        try:
            data = json.loads((self.folder / rel).read_text(encoding="utf-8"))
            ids = [entry["id"] for entry in data["messages"]]
        except (ValueError, KeyError, TypeError):
            self.problems.append(f"manifest {path}: no list of messages with ids")
            return
        if bundle is not None and data.get("bundle_id") != bundle:
            self.problems.append(f"manifest {path} is for bundle {data.get('bundle_id')}")
        for ident in sorted({i for i in ids if ids.count(i) > 1}, key=str):
            self.problems.append(f"manifest {path} lists message {ident} more than once")
        for ident in ids:
            if not isinstance(ident, int) or ident not in self.facts.messages:
                self.problems.append(
                    f"manifest {path} lists message {ident}, which is not a message of case"
                    f" {self.package.case}"
                )
        planned = self.facts.planned.get(bundle or "")
        if planned is not None and len(set(map(str, ids))) != planned[1]:
            seq, count, what = planned
            self.problems.append(
                f"manifest {path} lists {len(set(map(str, ids)))} messages, but event {seq}"
                f" ({what}) planned {count}"
            )

    # -- earlier checkpoints ----------------------------------------------------------

    def _claims(self, given: Sequence[GivenCheckpoint]) -> list[tuple[str, Checkpoint | None]]:
        """Each earlier checkpoint, in the package and given, read and its signature checked."""
        notes = [
            GivenCheckpoint(label=rel, note=(self.folder / rel).read_text(encoding="utf-8"))
            for path, rel in self.present.items()
            if path.startswith(f"{layout.CHECKPOINTS}/")
        ]
        return [(claim.label, self._earlier(claim)) for claim in (*notes, *given)]

    def _earlier(self, claim: GivenCheckpoint) -> Checkpoint | None:
        where = f"earlier checkpoint {claim.label}"
        try:
            checkpoint = Checkpoint.parse(_note_text(claim.note, where))
            if self.check_signature:
                open_note(claim.note, self.keys)
        except CheckpointError as err:
            self.problems.append(f"{where}: {err}")
            return None
        if checkpoint.origin != self.checkpoint.origin:
            self.problems.append(
                f"{where} is for origin {checkpoint.origin!r}, not {self.checkpoint.origin!r}"
            )
            return None
        return checkpoint

    def _consistent(self, name: str, earlier: Checkpoint) -> bool:
        """Whether the package proves its checkpoint extends `earlier`; a problem if not."""
        where = f"earlier checkpoint {name} (size {earlier.size})"
        size, root = self.size, self.checkpoint.root
        proof = self.package.consistency.get(earlier.size)
        problem: str | None
        if earlier.size > size:
            problem = (
                f"{where} covers more events than the package's checkpoint ({size}):"
                " check it against a newer package"
            )
        elif proof is not None or earlier.size == size:
            ok = merkle.verify_consistency(earlier.size, size, earlier.root, root, proof or [])
            problem = None if ok else self._forked(where)
        elif earlier.size in self.prefix_roots:
            ok = self.prefix_roots[earlier.size] == earlier.root
            problem = None if ok else self._forked(where)
        else:
            problem = f"{where}: the package has no consistency proof for it"
        if problem is not None:
            self.problems.append(problem)
        return problem is None

    def _forked(self, where: str) -> str:
        return (
            f"{where} is not consistent with the package's checkpoint (size {self.size}):"
            " the ledger was rewritten or forked after it was signed"
        )


def _in_folder(data: dict[str, Any], folder: str) -> bool:
    return any(str(item["path"]).startswith(folder) for item in _artefacts(data))


def _artefacts(data: dict[str, Any]) -> list[dict[str, Any]]:
    items = data.get("artefacts", ())
    if not isinstance(items, list):
        return []
    return [item for item in items if isinstance(item, dict) and "path" in item]
