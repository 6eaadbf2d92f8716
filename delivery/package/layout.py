"""The audit package on disk: its names, its JSON, and reading them back strictly.

The exporter and the verifier share this module so both agree on every name and field.
Reading is strict: a file that cannot be read as the format says is refused with its name
and line (exit code 2), since a verifier that guessed would check something else than what
was handed out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from delivery.errors import InputError
from delivery.ledger import Event
from delivery.merkle import HASH_SIZE

FORMAT = "solidarity-audit-package"
VERSION = 1

PACKAGE_JSON = "package.json"
README = "README.txt"
CHECKPOINT = "checkpoint.txt"
EVENTS = "events.jsonl"
CONTEXT = "context-events.jsonl"
PROOFS = "proofs.json"
FILES = "files"  # outbox files, under their outbox paths
CHECKPOINTS = "checkpoints"  # earlier checkpoint notes, as in the outbox's checkpoints/
TOP_FILES = frozenset({PACKAGE_JSON, README, CHECKPOINT, EVENTS, CONTEXT, PROOFS})
TOP_FOLDERS = frozenset({FILES, CHECKPOINTS})
EVENT_FIELDS = ("seq", "at", "actor", "kind", "subject", "payload", "prev_hash", "hash")

T = TypeVar("T")


class PackageError(InputError):
    """A folder that cannot be read as an audit package; the message names the file and line."""


def event_line(event: Event) -> str:
    """One line of events.jsonl: the event's eight fields exactly as stored."""
    return json.dumps({name: getattr(event, name) for name in EVENT_FIELDS}, ensure_ascii=False)


def read_events(folder: Path, name: str) -> Iterator[Event]:
    """The events of ``folder/name``, one a line, streamed; PackageError names a bad line."""
    path = folder / name
    try:
        handle = path.open(encoding="utf-8")
    except FileNotFoundError as err:
        raise PackageError(f"{name}: not in the package") from err
    with handle:
        for number, line in enumerate(handle, start=1):
            yield _event(line, f"{name} line {number}")


def _event(line: str, where: str) -> Event:
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as err:
        raise PackageError(f"{where}: not JSON ({err.msg} at column {err.colno})") from err
    if not isinstance(raw, dict):
        raise PackageError(f"{where}: not a JSON object")
    seq = field(raw, "seq", int, where)
    text = {name: field(raw, name, str, where) for name in EVENT_FIELDS[1:]}
    for name in ("prev_hash", "hash"):
        if not is_hex_hash(text[name]):
            raise PackageError(f"{where}: {name} is not 64 lowercase hex digits")
    try:
        payload = json.loads(text["payload"])
    except json.JSONDecodeError as err:
        raise PackageError(f"{where}: the payload is not JSON ({err.msg})") from err
    if not isinstance(payload, dict):
        raise PackageError(f"{where}: the payload is not a JSON object")
    return Event(seq=seq, **text)


def read_json(folder: Path, name: str) -> Any:
    """The JSON of ``folder/name``; PackageError names the file, line and column."""
    try:
        text = (folder / name).read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise PackageError(f"{name}: not in {folder}; is it an audit package?") from err
    except (OSError, UnicodeDecodeError) as err:
        raise PackageError(f"{name}: cannot be read: {err}") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise PackageError(f"{name} line {err.lineno} column {err.colno}: {err.msg}") from err


def write_json(path: Path, data: Any) -> None:
    path.write_text(
        json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8"
    )


def field(data: Mapping[str, Any], key: str, kind: type[T], where: str) -> T:
    """``data[key]`` when it is a `kind` (an int that is not a bool); else PackageError."""
    value = data.get(key) if isinstance(data, Mapping) else None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise PackageError(f"{where}: {key!r} is missing or not {_KIND_NAMES.get(kind, kind)}")
    return value


_KIND_NAMES: dict[type, str] = {
    int: "an integer",
    str: "a string",
    list: "a list",
    dict: "an object",
    bool: "true or false",
}


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def hash_from_b64(value: object, where: str) -> bytes:
    """A 32-byte hash from its standard base64; PackageError when it is not one."""
    try:
        raw = base64.b64decode(str(value), validate=True) if isinstance(value, str) else b""
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != HASH_SIZE:
        raise PackageError(f"{where}: not the base64 of a {HASH_SIZE}-byte hash")
    return raw


def hashes_from_b64(value: object, where: str) -> list[bytes]:
    if not isinstance(value, list):
        raise PackageError(f"{where}: not a list of hashes")
    return [hash_from_b64(item, f"{where}[{n}]") for n, item in enumerate(value)]


def is_hex_hash(value: str) -> bool:
    return len(value) == 2 * HASH_SIZE and all(c in "0123456789abcdef" for c in value)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def belongs_to_case(
    subject: str, *, case: str, messages: set[int], bundles: set[str], deliveries: set[str]
) -> bool:
    """Whether an event's subject is one of the case's messages, bundles, deliveries or itself."""
    prefix, _, ident = subject.partition(":")
    if prefix == "message":
        return ident.isdigit() and int(ident) in messages
    if prefix == "bundle":
        return ident in bundles
    if prefix == "delivery":
        return ident in deliveries
    if prefix == "case":
        return ident == case
    return prefix == "recipient" and ident.startswith(f"{case}/")


def label(event: Event) -> str:
    """How a problem names an event: its kind and subject."""
    return f"{event.kind} {event.subject}"


def readme(*, case: str, origin: str, start: int, size: int, with_pdfs: bool) -> str:
    """README.txt of a package: what it holds and how to check it, in plain words."""
    pdfs = (
        "files/bundles/.../*.pdf are the bundles as printed and sent. THEY HOLD SUPPORTERS'\n"
        "NAMES AND WORDS: share them only with people entitled to see them.\n"
        if with_pdfs
        else "The bundles' PDFs are not included (they hold supporters' names and words).\n"
    )
    return f"""AUDIT PACKAGE: case {case}, ledger events {start} to {size}

This folder shows what the delivery service recorded about the case {case}:
every message review, bundle and delivery, each as an event of the ledger of
{origin}. Every event is chained to the one before by its SHA-256 hash,
and the events form a Merkle tree (RFC 9162) whose size and root the organisation
signed with its key (checkpoint.txt). Editing, leaving out or reordering any event,
or changing any file, makes the package fail to verify.

HOW TO VERIFY

1. Get the organisation's public key (a .pub file) from the organisation itself,
   by a channel you trust - never from this package.
2. Install solidarity-delivery (Python 3.11) and run, in any folder, without any
   database or settings:

       solidarity audit verify-package THIS-FOLDER --key ORGANISATION.pub

   Add --checkpoint FILE for any checkpoint of this ledger you were given or saw
   published earlier: the package proves that its checkpoint extends it, so the
   ledger was not rewritten since.
3. Exit status 0 means every check holds. Exit status 1 lists each problem by
   event number, kind and subject, or by file. Exit status 2 means the folder is
   not a readable package.

   solidarity audit trace ID --package THIS-FOLDER --key ORGANISATION.pub
   follows one message (12), bundle (bnd-...) or delivery (dlv-...) through the
   events, each marked as included in the signed checkpoint.

WHAT IS CHECKED

- checkpoint.txt is signed by the key you give, for the origin in package.json.
- events.jsonl holds EVERY ledger event from {start} to {size}, not only the case's,
  so that nothing can have been left out. Each event's hash is recomputed from its
  fields and the previous event's hash; the events follow one another without a gap.
- The Merkle root of events 1 to {size} is recomputed from the events and, for the
  events before {start}, the subtree hashes in package.json (range.frontier), and
  must equal the signed root.
- proofs.json holds an inclusion proof for each event about the case (and for the
  events in context-events.jsonl, earlier ones the package relies on); each must
  show the event in the signed tree.
- Every file under files/ and checkpoints/ must have the SHA-256 an event
  recorded for it. A file erased under the data retention policy is listed as
  erased, with the event that recorded the erasure.
- Each bundle manifest lists as many messages as the bundle was planned with.
- Each earlier checkpoint in checkpoints/ (and each one you give) must be signed
  and proved consistent with checkpoint.txt (package.json, earlier_checkpoints).

WHAT IS IN HERE

package.json      format, case, range, checkpoint size and root, the case's
                  messages, bundles and deliveries, the files and their hashes
checkpoint.txt    the signed checkpoint (C2SP tlog-checkpoint, Ed25519 signed note)
events.jsonl      one event a line: seq, at, actor, kind, subject, payload (as
                  stored: canonical JSON), prev_hash, hash
context-events.jsonl  events before the range that the package relies on
proofs.json       inclusion proofs, keyed by event number
checkpoints/      earlier checkpoints
files/            the bundle manifests (message ids and hashes only)
{pdfs}
Event payloads hold ids and hashes, not supporters' personal data.
"""
