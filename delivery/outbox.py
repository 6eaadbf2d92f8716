"""Artefact storage: the local outbox folder (the embedded default), or an S3 bucket.

Every artefact is written under a relative path, atomically (a temporary name, then a
rename; on S3 one PUT), and comes back as an :class:`Artefact` carrying its SHA-256, so the
ledger can record it and ``audit verify`` can re-hash it later. :func:`open_outbox` picks
the outbox the settings name: ``outbox = "s3://bucket/prefix"`` puts it in S3
(:mod:`delivery.outbox_s3`), anything else is a local folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol

from delivery.errors import InputError

if TYPE_CHECKING:
    from delivery.config import Settings


@dataclass(frozen=True, kw_only=True)
class Artefact:
    path: str  # relative to the outbox root, POSIX separators
    sha256: str
    size: int


@dataclass(frozen=True, kw_only=True)
class Stored:
    """What the store says about an artefact it holds."""

    size: int  # bytes
    modified: datetime  # last written, UTC (file mtime, or S3's LastModified)


class Outbox(Protocol):
    """Where artefacts are kept; :class:`LocalOutbox` and ``S3Outbox`` keep the same contract.

    Paths are relative and POSIX (``bundles/<case>/<recipient>/<bundle>.pdf``); one that is
    absolute, empty or climbs out with ``..`` raises :class:`InputError`.
    """

    def write(self, relpath: str, data: bytes) -> Artefact:
        """Store ``data`` whole or not at all."""

    def adopt(self, relpath: str, source: Path) -> Artefact:
        """Take a finished file from :attr:`workdir` into the outbox; ``source`` is gone after."""

    @property
    def workdir(self) -> Path:
        """A local scratch folder for files rendered before they are adopted."""

    def read(self, relpath: str) -> bytes:
        """The artefact's bytes; :class:`FileNotFoundError` when it is missing."""

    def exists(self, relpath: str) -> bool: ...

    def sha256(self, relpath: str) -> str | None:
        """The SHA-256 of the bytes stored now, or None when the artefact is missing."""

    def stat(self, relpath: str) -> Stored | None:
        """Its size and when it was written, or None when it is missing."""

    def copy_to(self, relpath: str, target: Path) -> None:
        """Copy the artefact to the local file ``target``; :class:`FileNotFoundError` if missing."""

    def walk(self, prefix: str = "") -> Iterator[str]:
        """The artefacts under ``prefix``, sorted; hidden ones (``.work``, temporary) left out."""

    def delete(self, relpath: str) -> bool:
        """Remove the artefact (retention); True when it was there."""

    def where(self, relpath: str) -> str:
        """How messages name the artefact for a person: a path in the outbox, or an s3:// URL."""


def open_outbox(settings: Settings) -> Outbox:
    """The outbox the settings name: the S3 bucket of ``s3://bucket/prefix``, or a folder."""
    location = settings.outbox_location
    if location is None:
        return LocalOutbox(settings.outbox_path)
    from delivery.outbox_s3 import S3Outbox

    s3 = settings.s3
    return S3Outbox(
        location,
        workdir=s3.workdir,
        connect_timeout=s3.connect_timeout,
        read_timeout=s3.read_timeout,
        max_attempts=s3.max_attempts,
    )


class LocalOutbox:
    """A folder on the local disk."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _resolve(self, relpath: str) -> Path:
        rel = PurePosixPath(relpath)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise InputError(f"outbox path {relpath!r} must be relative and inside the outbox")
        return self.root.joinpath(*rel.parts)

    def write(self, relpath: str, data: bytes) -> Artefact:
        target = self._resolve(relpath)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return Artefact(path=relpath, sha256=hashlib.sha256(data).hexdigest(), size=len(data))

    def adopt(self, relpath: str, source: Path) -> Artefact:
        """Move a finished file (on the same disk) into place atomically, hashing it."""
        target = self._resolve(relpath)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with source.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
            os.fsync(handle.fileno())
        size = source.stat().st_size
        os.replace(source, target)
        return Artefact(path=relpath, sha256=digest.hexdigest(), size=size)

    @property
    def workdir(self) -> Path:
        """Scratch space on the outbox's disk, for files that are renamed into place."""
        return self.root / ".work"

    def read(self, relpath: str) -> bytes:
        return self._resolve(relpath).read_bytes()

    def exists(self, relpath: str) -> bool:
        return self._resolve(relpath).is_file()

    def sha256(self, relpath: str) -> str | None:
        """The file's SHA-256 now, or None when it is missing."""
        path = self._resolve(relpath)
        if not path.is_file():
            return None
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()

    def stat(self, relpath: str) -> Stored | None:
        path = self._resolve(relpath)
        if not path.is_file():
            return None
        found = path.stat()
        return Stored(size=found.st_size, modified=datetime.fromtimestamp(found.st_mtime, UTC))

    def copy_to(self, relpath: str, target: Path) -> None:
        shutil.copyfile(self._resolve(relpath), target)

    def local_path(self, relpath: str) -> Path:
        """The file on this disk; only for callers that know the outbox is a local folder."""
        return self._resolve(relpath)

    def walk(self, prefix: str = "") -> Iterator[str]:
        base = self._resolve(prefix) if prefix else self.root
        for path in sorted(base.rglob("*")):
            relative = path.relative_to(self.root)
            if path.is_file() and not any(part.startswith(".") for part in relative.parts):
                yield relative.as_posix()

    def delete(self, relpath: str) -> bool:
        """Remove a file (retention); True when it was there."""
        path = self._resolve(relpath)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def where(self, relpath: str) -> str:
        """The path inside the outbox folder, as the ledger records it."""
        self._resolve(relpath)
        return relpath
