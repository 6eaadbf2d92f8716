"""Signed tree heads an auditor checks offline: C2SP signed notes and tlog checkpoints.

A checkpoint (c2sp.org/tlog-checkpoint) is the head of the ledger's Merkle tree written as
three lines of text, each ending in a newline: the origin, a unique name of the log
(``example.org/solidarity-delivery/ledger``); the tree size in decimal, without leading
zeros; the root hash (`delivery.merkle`) in standard base64. Extension lines may follow;
they are opaque, must not be empty, and the specification does not recommend them.

The checkpoint is the text of a signed note (c2sp.org/signed-note): the text, a blank
line, then one line per signature, ``— <key name> <base64(key ID || signature)>``, the
dash being the em dash U+2014. With Ed25519 (signature type 0x01) the key ID is the first
four bytes, big-endian, of SHA-256(key name || 0x0A || 0x01 || 32-byte public key), and the
signature is Ed25519 (RFC 8032) over the text with its final newline, not the blank line.
Keys are written as golang.org/x/mod/sumdb/note writes them: the verifier key
``<name>+<hex key ID>+<base64(0x01 || public key)>``, the signer key
``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || private seed)>``.

An auditor holds the verifier keys and trusts a checkpoint only when a signature by one of
them verifies. Signatures by keys it does not know are ignored, which is how keys are
rotated and witnesses cosign: a new key signs next to the old one, and a checkpoint signed
by a retired key still verifies with that key's verifier key. A signature by a known key
that does not verify rejects the whole note. Nothing here trusts the operators: what is
checked is the text in hand against keys the auditor was given by other means.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from delivery.errors import LedgerError
from delivery.merkle import HASH_SIZE

ED25519 = 0x01  # the signature type byte of Ed25519 (c2sp.org/signed-note, Signature types)
MAX_SIGNATURES = 100  # more signature lines than this and a note is refused unread
MAX_TREE_SIZE = 2**64 - 1  # tree sizes are uint64 everywhere checkpoints are read

_KEY_SIZE = 32  # an Ed25519 public key or private seed (RFC 8032)
_SIGNATURE_SIZE = 64  # an Ed25519 signature (RFC 8032)
_PRIVATE = "PRIVATE+KEY+"
_DASH = "\u2014 "  # em dash and space: how every signature line starts
_KEY_ID = re.compile(r"[0-9a-fA-F]{8}")
_TREE_SIZE = re.compile(r"0|[1-9][0-9]*")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")  # below U+0020, newline excepted
_CONTROL_OR_NEWLINE = re.compile(r"[\x00-\x1f]")
_UNSAFE_IN_FILE_NAME = re.compile(r"[^A-Za-z0-9._-]")


class CheckpointError(LedgerError, ValueError):
    """A note, checkpoint or key that cannot be trusted as it is; the message says why."""


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    """A tree head of the ledger: which log, how many leaves, and their Merkle root."""

    origin: str  # e.g. "example.org/solidarity-delivery/ledger"
    size: int  # leaves in the tree, 0 to 2**64 - 1
    root: bytes  # MTH of those leaves, 32 bytes (merkle.root, CompactRange.root)
    extensions: tuple[str, ...] = ()  # opaque non-empty lines after the root hash

    def __post_init__(self) -> None:
        problem = _line_problem(self.origin, "the origin")
        if problem is None and not self.origin:
            problem = "the origin is empty"
        if problem is None:
            problem = _size_problem(self.size)
        if problem is None and not (isinstance(self.root, bytes) and len(self.root) == HASH_SIZE):
            problem = f"the root hash is not {HASH_SIZE} bytes"
        for position, line in enumerate(self.extensions, start=1):
            if problem is None:
                problem = _line_problem(line, f"extension line {position}")
            if problem is None and not line:
                problem = f"extension line {position} is empty"
        if problem is not None:
            raise CheckpointError(f"checkpoint: {problem}")

    def body(self) -> str:
        """The note text of c2sp.org/tlog-checkpoint, every line ending in a newline."""
        root = base64.b64encode(self.root).decode("ascii")
        return "".join(
            f"{line}\n" for line in (self.origin, str(self.size), root, *self.extensions)
        )

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """The checkpoint whose note text is `text`, read as c2sp.org/tlog-checkpoint says.

        Strict, so that ``parse(text).body() == text``: a size with a leading zero or a
        sign, a root hash in another base64 spelling or of another length than SHA-256's,
        an empty line, a missing final newline are errors naming the line.
        """
        if not text.endswith("\n"):
            raise CheckpointError("malformed checkpoint: the text does not end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError(
                f"malformed checkpoint: {len(lines)} line(s); a checkpoint has at least 3: "
                "the origin, the tree size and the root hash"
            )
        for number, line in enumerate(lines, start=1):
            problem = _line_problem(line, "the line") or ("the line is empty" if not line else None)
            if problem is not None:
                raise CheckpointError(f"malformed checkpoint: line {number}: {problem}")
        origin, size, root, *extensions = lines
        if not _TREE_SIZE.fullmatch(size):
            raise CheckpointError(
                f"malformed checkpoint: line 2: tree size {size!r} is not a decimal number "
                "without leading zeros"
            )
        if int(size) > MAX_TREE_SIZE:
            raise CheckpointError(
                f"malformed checkpoint: line 2: tree size {size} is over 2**64 - 1"
            )
        hash_ = _b64decode(root)
        if hash_ is None or len(hash_) != HASH_SIZE:
            raise CheckpointError(
                f"malformed checkpoint: line 3: root hash {root!r} is not the standard base64 "
                f"of {HASH_SIZE} bytes"
            )
        return cls(origin=origin, size=int(size), root=hash_, extensions=tuple(extensions))


@dataclass(frozen=True, kw_only=True)
class _Verifier:
    name: str
    key_id: int
    public: bytes  # the 32-byte Ed25519 public key

    @property
    def label(self) -> str:
        return f"{self.name}+{self.key_id:08x}"

    def check(self, text: bytes, signature: bytes) -> str | None:
        """None when `signature` is this key's over `text`, else what is wrong with it."""
        if len(signature) != _SIGNATURE_SIZE:
            return f"{len(signature)} bytes, an Ed25519 signature is {_SIGNATURE_SIZE}"
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, text)
        except InvalidSignature:
            return "it does not verify"
        return None


@dataclass(frozen=True, kw_only=True)
class _Signature:
    line: int  # line number in the whole note, from 1
    name: str
    key_id: int
    signature: bytes  # what follows the key ID
    text: str  # the line as written, newline included

    @property
    def label(self) -> str:
        return f"{self.name}+{self.key_id:08x}"


# -- keys ------------------------------------------------------------------------------------


def key_id(name: str, public_key: bytes) -> int:
    """SHA-256(name || 0x0A || 0x01 || public key)[:4], big-endian (c2sp.org/signed-note)."""
    encoded = name.encode("utf-8") + b"\n" + bytes([ED25519]) + public_key
    return int.from_bytes(hashlib.sha256(encoded).digest()[:4], "big")


def generate_key(name: str) -> tuple[str, str]:
    """A new Ed25519 key named `name`: (signer key, verifier key), as strings.

    The signer key is the secret the log signs with; the verifier key is what auditors are
    given. `name` should be a schema-less URL such as
    ``example.org/solidarity-delivery/ledger``; it must not be empty nor contain a ``+``,
    a space or a control character.
    """
    _check_name(name, "key name")
    seed = Ed25519PrivateKey.generate().private_bytes_raw()
    signer = _signer_string(name, seed)
    return signer, verifier_key(signer)


def verifier_key(signer_key: str) -> str:
    """The verifier key that checks what `signer_key` signs."""
    name, seed = _parse_signer(signer_key)
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    encoded = base64.b64encode(bytes([ED25519]) + public).decode("ascii")
    return f"{name}+{key_id(name, public):08x}+{encoded}"


def write_key_files(name: str, folder: Path) -> tuple[Path, Path]:
    """Generate a key named `name` into `folder`: (``<name>.key``, ``<name>.pub``).

    Characters of `name` other than letters, digits, ``.``, ``_`` and ``-`` become ``_`` in
    the file names. The ``.key`` file holds the signer key and is readable by its owner
    only (mode 0600); the ``.pub`` file holds the verifier key, for auditors. An existing
    file is never overwritten: a rotation is a new key under a new name, and the old
    ``.pub`` stays, since checkpoints signed with the old key still verify with it.
    """
    signer, verifier = generate_key(name)
    stem = _UNSAFE_IN_FILE_NAME.sub("_", name)
    key_path, pub_path = folder / f"{stem}.key", folder / f"{stem}.pub"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_new(key_path, signer, 0o600)
    try:
        _write_new(pub_path, verifier, 0o644)
    except BaseException:
        key_path.unlink()
        raise
    return key_path, pub_path


def read_key_file(path: Path) -> str:
    """The signer or verifier key in `path` (a file `write_key_files` wrote), checked."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: cannot be read as a key file: {err}") from err
    key = text.removesuffix("\n")
    try:
        if key.startswith(_PRIVATE):
            _parse_signer(key)
        else:
            _parse_verifier(key)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from err
    return key


# -- notes -----------------------------------------------------------------------------------


def sign(text: str, signer_key: str) -> str:
    """`text` as a signed note with one more signature, by `signer_key` (c2sp.org/signed-note).

    `text` is the note text, ending in a newline. If it is already a signed note (its last
    blank line is followed by signature lines), the new signature goes after the ones
    there, over the same text; an earlier signature by the same key is replaced, so signing
    twice changes nothing. The signatures already there are kept as they are, not checked:
    a cosigner runs `open_note` first.
    """
    name, seed = _parse_signer(signer_key)
    body, existing = _split_signed(text)
    _check_text(body)
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    ident = key_id(name, public)
    kept = [sig.text for sig in existing if (sig.name, sig.key_id) != (name, ident)]
    if len(kept) >= MAX_SIGNATURES:
        raise CheckpointError(f"the note already has {len(kept)} signatures, the most accepted")
    signature = Ed25519PrivateKey.from_private_bytes(seed).sign(body.encode("utf-8"))
    encoded = base64.b64encode(ident.to_bytes(4, "big") + signature).decode("ascii")
    return f"{body}\n{''.join(kept)}{_DASH}{name} {encoded}\n"


def open_note(note: str | bytes, verifier_keys: Sequence[str]) -> tuple[str, list[str]]:
    """The text of `note` and the names of the keys that signed it, once verified.

    Follows c2sp.org/signed-note: a signature whose key name and key ID are those of none
    of `verifier_keys` is ignored; one by a known key must verify, or the note is refused;
    and at least one must be by a known key. Raises CheckpointError naming the line or the
    key when the note is malformed, has more than 100 signatures, has a signature by a
    known key that does not verify, or has none by a known key, or when a verifier key is
    not one.
    """
    known = _verifier_table(verifier_keys)
    text, signatures = _parse_note(note)
    encoded = text.encode("utf-8")
    names: list[str] = []
    for sig in signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            continue  # an unknown key: another witness, or a key this auditor was not given
        problem = verifier.check(encoded, sig.signature)
        if problem is not None:
            raise CheckpointError(
                f"invalid signature by key {sig.label} on line {sig.line}: {problem}"
            )
        if sig.name not in names:
            names.append(sig.name)
    if not names:
        signed_by = ", ".join(sorted({sig.label for sig in signatures}))
        known_keys = ", ".join(sorted(verifier.label for verifier in known.values())) or "none"
        raise CheckpointError(
            f"no signature by a known key: the note is signed by {signed_by}; "
            f"the known keys are {known_keys}"
        )
    return text, names


def sign_checkpoint(checkpoint: Checkpoint, signer_key: str) -> str:
    """The signed note of `checkpoint`, signed by `signer_key`."""
    return sign(checkpoint.body(), signer_key)


def verify_checkpoint(
    note: str | bytes, verifier_keys: Sequence[str], *, origin: str
) -> Checkpoint:
    """The checkpoint in `note`, once a known key's signature verifies and the origin is `origin`.

    The origin is checked because a key may sign for more than one log: a checkpoint of
    another log, however well signed, says nothing about this one.
    """
    text, _names = open_note(note, verifier_keys)
    checkpoint = Checkpoint.parse(text)
    if checkpoint.origin != origin:
        raise CheckpointError(
            f"checkpoint is for origin {checkpoint.origin!r}, not {origin!r} as expected"
        )
    return checkpoint


# -- parsing ---------------------------------------------------------------------------------


def _parse_note(note: str | bytes) -> tuple[str, list[_Signature]]:
    """The text and signature lines of a signed note, checked for form, not yet verified."""
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError as err:
            raise CheckpointError(f"malformed note: not UTF-8 at byte {err.start}") from err
    _check_text(note)
    split = note.rfind("\n\n")
    if split < 0:
        raise CheckpointError("malformed note: no blank line before the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block:
        raise CheckpointError("malformed note: no signature lines after the last blank line")
    lines = [f"{line}\n" for line in block[:-1].split("\n")]  # the note ends in a newline
    if len(lines) > MAX_SIGNATURES:
        raise CheckpointError(
            f"malformed note: {len(lines)} signature lines, more than the {MAX_SIGNATURES} accepted"
        )
    first = text.count("\n") + 2  # the line number of the first signature line
    return text, [_parse_signature(line, first + offset) for offset, line in enumerate(lines)]


def _parse_signature(line: str, number: int) -> _Signature:
    where = f"malformed note: line {number}"
    if not line.startswith(_DASH):
        raise CheckpointError(f"{where}: a signature line starts with an em dash and a space")
    name, _space, encoded = line[len(_DASH) : -1].partition(" ")
    problem = _name_problem(name)
    if problem is not None:
        raise CheckpointError(f"{where}: key name {name!r} {problem}")
    raw = _b64decode(encoded)
    if raw is None:
        raise CheckpointError(f"{where}: the signature is not standard base64")
    if len(raw) < 5:
        raise CheckpointError(f"{where}: the signature is {len(raw)} bytes, too short for a key ID")
    return _Signature(
        line=number,
        name=name,
        key_id=int.from_bytes(raw[:4], "big"),
        signature=raw[4:],
        text=line,
    )


def _split_signed(text: str) -> tuple[str, list[_Signature]]:
    """(`text`, []) for a note text; (its text, its signatures) for a signed note."""
    split = text.rfind("\n\n")
    if split >= 0 and text[split + 2 :].startswith(_DASH):
        return _parse_note(text)
    return text, []


def _verifier_table(verifier_keys: Sequence[str]) -> dict[tuple[str, int], _Verifier]:
    if isinstance(verifier_keys, str):
        raise CheckpointError("verifier keys: give a list of keys, not one string")
    table: dict[tuple[str, int], _Verifier] = {}
    for vkey in verifier_keys:
        verifier = _parse_verifier(vkey)
        other = table.setdefault((verifier.name, verifier.key_id), verifier)
        if other.public != verifier.public:
            raise CheckpointError(f"verifier keys: two different keys are both {verifier.label}")
    return table


def _parse_verifier(vkey: str) -> _Verifier:
    """The key of ``<name>+<hex key ID>+<base64(0x01 || public key)>``."""
    if vkey.startswith(_PRIVATE):
        raise CheckpointError(
            "a signer key (PRIVATE+KEY+...) was given as a verifier key; give its .pub instead"
        )
    name, _plus, rest = vkey.partition("+")
    hex_id, _plus, encoded = rest.partition("+")
    where = f"verifier key {vkey!r}"
    public = _key_material(name, hex_id, encoded, where, quote=True)
    ident = int(hex_id, 16)
    try:
        Ed25519PublicKey.from_public_bytes(public)
    except ValueError as err:
        raise CheckpointError(f"{where}: not an Ed25519 public key: {err}") from err
    if key_id(name, public) != ident:
        raise CheckpointError(
            f"{where}: key ID {hex_id} does not match the key, whose ID is "
            f"{key_id(name, public):08x}"
        )
    return _Verifier(name=name, key_id=ident, public=public)


def _parse_signer(skey: str) -> tuple[str, bytes]:
    """(name, seed) of ``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || seed)>``.

    The messages never quote the string, which is a secret, nor any part of it but the
    name of a key that is otherwise well formed.
    """
    if not skey.startswith(_PRIVATE):
        raise CheckpointError("signer key: does not start with PRIVATE+KEY+")
    name, _plus, rest = skey.removeprefix(_PRIVATE).partition("+")
    hex_id, _plus, encoded = rest.partition("+")
    seed = _key_material(name, hex_id, encoded, "signer key", quote=False)
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    if key_id(name, public) != int(hex_id, 16):
        raise CheckpointError(f"signer key for {name!r}: the key ID does not match the key")
    return name, seed


def _key_material(name: str, hex_id: str, encoded: str, where: str, *, quote: bool) -> bytes:
    """The 32 key bytes after the 0x01 of `encoded`, once name and key ID are well formed.

    `quote` says whether the name and key ID may be repeated in a message.
    """
    problem = _name_problem(name)
    if problem is not None:
        raise CheckpointError(
            f"{where}: key name {name!r} {problem}" if quote else f"{where}: key name {problem}"
        )
    if not _KEY_ID.fullmatch(hex_id):
        shown = f" {hex_id!r}" if quote else ""
        raise CheckpointError(f"{where}: key ID{shown} is not 8 hex digits")
    raw = _b64decode(encoded)
    if not raw:
        raise CheckpointError(f"{where}: the key is not standard base64")
    if raw[0] != ED25519:
        raise CheckpointError(f"{where}: key type 0x{raw[0]:02x} is not Ed25519 (0x01)")
    if len(raw) != 1 + _KEY_SIZE:
        raise CheckpointError(f"{where}: the key is {len(raw) - 1} bytes, not {_KEY_SIZE}")
    return raw[1:]


def _signer_string(name: str, seed: bytes) -> str:
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    encoded = base64.b64encode(bytes([ED25519]) + seed).decode("ascii")
    return f"{_PRIVATE}{name}+{key_id(name, public):08x}+{encoded}"


# -- checks ----------------------------------------------------------------------------------


def _check_text(text: str) -> None:
    """A note text: UTF-8, no control character but newline, ending in a newline."""
    problem = _line_problem(text, "the note", newlines=True)
    if problem is not None:
        raise CheckpointError(f"malformed note: {problem}")
    if not text.endswith("\n"):
        raise CheckpointError("malformed note: does not end in a newline")


def _line_problem(value: object, what: str, *, newlines: bool = False) -> str | None:
    """What keeps `value` from being text of a note (one line unless `newlines`), or None.

    The answer starts with `what`, the subject of the sentence.
    """
    if not isinstance(value, str):
        return f"{what} is not a string"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"{what} is not UTF-8{_line_of(value, err.start, newlines)}".lstrip()
    control = (_CONTROL if newlines else _CONTROL_OR_NEWLINE).search(value)
    if control is not None:
        where = _line_of(value, control.start(), newlines)
        return f"{what} has control character U+{ord(control.group()):04X}{where}".lstrip()
    return None


def _line_of(value: str, position: int, newlines: bool) -> str:
    """ " (line n)" for the line of `position` in a text of several lines, else ""."""
    return f" (line {value.count(chr(10), 0, position) + 1})" if newlines else ""


def _name_problem(name: str) -> str | None:
    """Why `name` cannot name a key (c2sp.org/signed-note), or None."""
    if not name:
        return "is empty"
    if "+" in name:
        return "contains a +"
    if any(char.isspace() for char in name):
        return "contains a space"
    return _line_problem(name, "")


def _check_name(name: str, what: str) -> None:
    problem = _name_problem(name)
    if problem is not None:
        raise CheckpointError(f"{what} {name!r} {problem}")


def _size_problem(size: object) -> str | None:
    if not isinstance(size, int) or isinstance(size, bool):
        return "the tree size is not an integer"
    if not 0 <= size <= MAX_TREE_SIZE:
        return f"the tree size {size} is not between 0 and 2**64 - 1"
    return None


def _b64decode(encoded: str) -> bytes | None:
    """The bytes of `encoded` when it is standard base64 (RFC 4648 section 4) as written by an
    encoder (padding, no stray bits), else None: one value, one spelling."""
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == encoded else None


def _write_new(path: Path, key: str, mode: int) -> None:
    """Create `path` holding `key` with `mode`; fail if anything is already there."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError as err:
        raise CheckpointError(f"{path}: already exists; a new key needs a new name") from err
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        os.fchmod(file.fileno(), mode)
        file.write(f"{key}\n")
