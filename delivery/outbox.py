"""Artefact storage: the local outbox folder (the embedded default).

Every artefact is written under a relative path, atomically (a temporary name, then a
rename), and comes back as an :class:`Artefact` carrying its SHA-256, so the ledger can
record it and ``audit verify`` can re-hash it later.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from delivery.errors import InputError


@dataclass(frozen=True, kw_only=True)
class Artefact:
    path: str  # relative to the outbox root, POSIX separators
    sha256: str
    size: int


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

    def local_path(self, relpath: str) -> Path:
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
