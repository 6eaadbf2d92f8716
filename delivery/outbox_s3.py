"""Artefact storage in an S3 bucket, with the contract of :class:`~delivery.outbox.LocalOutbox`.

Selected by the settings: ``outbox = "s3://bucket/prefix"`` (``SOLIDARITY_OUTBOX``) makes
:func:`~delivery.outbox.open_outbox` build one, reaching S3 as the ``s3`` settings say
(``endpoint_url`` for MinIO or another S3-compatible store, ``region``, the timeouts and
``workdir``). Credentials come from boto3's usual sources (``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY``, a profile, an instance role), never from the settings file.

Layout. The artefact ``relpath`` lives at the key ``<prefix>/<relpath>`` of
:class:`S3Location`'s bucket (no ``/`` in front when the prefix is empty). ``relpath`` is
checked exactly as the local outbox checks it (relative, no ``..``, not empty) and its
normalised POSIX form is the key, so ``a//b`` and ``./a/b`` name the same object as ``a/b``
does, as they name the same file locally. ``walk`` lists keys in the local outbox's order
(path components compared one by one) and skips any path with a component starting with
``.``, as the local one skips its scratch and temporary files.

Hashes. An artefact's SHA-256 is that of its bytes, the same value the local outbox gives.
It is stored as the object's metadata (``x-amz-meta-sha256``) for people and tools, but
:meth:`S3Outbox.sha256` never trusts it: it reads the object's bytes back and hashes them,
in 1 MiB chunks, so ``audit verify`` notices an object replaced behind the outbox's back.
Uploads carry an S3 checksum so S3 refuses bytes damaged on the way: ``write`` and small
``adopt`` send the whole object's SHA-256 (``ChecksumSHA256``); a large ``adopt`` goes as a
multipart upload (``upload_file``) whose parts each carry their SHA-256
(``ChecksumAlgorithm=SHA256``), since S3 has no whole-object SHA-256 for multipart uploads.
A large file is read twice: once to hash it (the metadata is sent when the upload starts),
once to upload it; ``adopt`` takes finished files only, as the local outbox does.

Atomicity. A PUT appears whole or not at all, and a multipart upload only when it is
completed (s3transfer aborts it on failure), so no reader ever sees a partial artefact.
``adopt`` deletes the local file only after S3 has taken the object.

Errors. The client retries (botocore ``standard`` mode, ``max_attempts`` in all) and has
explicit connect and read timeouts. What still fails is raised as:

* :class:`TransientError` — HTTP 5xx, throttling, S3's ``RequestTimeout`` or ``BadDigest``,
  no connection, a timeout, a connection lost: the same call may work later. A write that
  raises has not stored the artefact, so a caller must never record it as done;
* :class:`ConfigurationError` — no credentials, credentials refused, access denied, no such
  bucket, a TLS certificate not verified: every call would fail the same way;
* :class:`PermanentError` — any other refusal.

``read`` and ``copy_to`` of a missing object raise :class:`FileNotFoundError`, as the local
ones do. ``delete`` asks whether the object is there before deleting it (S3's DELETE does
not say). ``stat`` gives the object's size and ``LastModified``; ``where`` its
``s3://bucket/key`` URL, which is how messages (``audit verify`` among them) name it.

Scratch space. ``workdir`` is a local folder for files rendered before they are adopted:
the one given to the constructor, or a private temporary folder made on first use.

boto3 is imported only when the first client is built, so importing this module is cheap.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol, cast

from delivery.errors import (
    ConfigurationError,
    DeliveryError,
    InputError,
    PermanentError,
    TransientError,
)
from delivery.outbox import Artefact, Stored

if TYPE_CHECKING:
    from botocore.config import Config

CHUNK = 1 << 20  # bytes hashed at a time
MIN_PART = 5 << 20  # S3's smallest multipart part (all but the last)
PART_SIZE = 8 << 20  # files from this size up are uploaded in parts of this size
CONNECT_TIMEOUT = 10.0  # seconds to open a connection to S3
READ_TIMEOUT = 60.0  # seconds S3 may stay silent on an open connection
MAX_ATTEMPTS = 3  # tries of each request, the first included

_TRANSIENT_CODES = frozenset(
    {
        "BadDigest",  # the bytes were damaged on the way: sending them again may work
        "InternalError",
        "RequestTimeout",  # S3's 400 for a body that came too slowly
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "XAmzContentSHA256Mismatch",
    }
)
_SETUP_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "AuthorizationHeaderMalformed",
        "InvalidAccessKeyId",
        "InvalidBucketName",
        "NoSuchBucket",
        "PermanentRedirect",
        "SignatureDoesNotMatch",
    }
)
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


class _S3Client(Protocol):
    """The few calls of a boto3 S3 client this module makes (no S3 stubs are installed)."""

    def put_object(self, **kwargs: Any) -> dict[str, Any]: ...
    def get_object(self, **kwargs: Any) -> dict[str, Any]: ...
    def head_object(self, **kwargs: Any) -> dict[str, Any]: ...
    def delete_object(self, **kwargs: Any) -> dict[str, Any]: ...
    def get_paginator(self, operation_name: str) -> Any: ...
    def upload_file(self, **kwargs: Any) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class S3Location:
    """Where the outbox lives: a bucket, a key prefix, and how to reach S3."""

    bucket: str
    prefix: str = ""
    endpoint_url: str = ""  # empty: AWS itself; set for MinIO, moto or another S3
    region: str = ""  # empty: boto3's usual sources (AWS_REGION, the config file)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _checksum(digest: bytes) -> str:
    """A SHA-256 as S3's checksum headers want it: base64, not hex."""
    return base64.b64encode(digest).decode("ascii")


def _is_missing(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    code = str(exc.response.get("Error", {}).get("Code", "") or "")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return code in _MISSING_CODES or (status == 404 and code != "NoSuchBucket")


def _client_failure(exc: BaseException, text: str) -> DeliveryError:
    """What S3's error answer means: try later, fix the settings, or give up."""
    from botocore.exceptions import ClientError

    assert isinstance(exc, ClientError)
    code = str(exc.response.get("Error", {}).get("Code", "") or "")
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    said = f"{text}: S3 said {code or 'nothing'} (HTTP {status or '?'}): {_one_line(str(exc))}"
    if code in _TRANSIENT_CODES or status == 429 or status >= 500:
        return TransientError(said)
    if code in _SETUP_CODES or status in (401, 403):
        return ConfigurationError(said)
    return PermanentError(said)


def _failure(exc: BaseException, text: str) -> DeliveryError:
    """The package's error for a failed S3 call; ``text`` says what and where."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        CredentialRetrievalError,
        NoCredentialsError,
        NoRegionError,
        ParamValidationError,
        PartialCredentialsError,
        SSLError,
    )

    if isinstance(exc, S3UploadFailedError) and exc.__cause__ is not None:
        exc = exc.__cause__  # s3transfer's wrapper around the ClientError
    if isinstance(exc, ClientError):
        return _client_failure(exc, text)
    said = f"{text}: {_one_line(str(exc)) or type(exc).__name__}"
    setup = (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError, NoRegionError)
    if isinstance(exc, setup):
        return ConfigurationError(said)
    if isinstance(exc, SSLError) and "certificate verify failed" in str(exc).lower():
        return ConfigurationError(said)
    if isinstance(exc, ParamValidationError):
        return PermanentError(said)
    if isinstance(exc, BotoCoreError | S3UploadFailedError):
        return TransientError(said)  # no connection, a timeout, a connection lost
    return PermanentError(said)


def client_config(
    location: S3Location,
    *,
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
    max_attempts: int = MAX_ATTEMPTS,
) -> Config:
    """Retries in botocore's standard mode and bounded waits; path-style keys off AWS."""
    from botocore.config import Config

    return Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        s3={"addressing_style": "path" if location.endpoint_url else "auto"},
    )


class S3Outbox:
    """A bucket (under a prefix) holding the artefacts the local outbox would hold."""

    def __init__(
        self,
        location: S3Location,
        *,
        workdir: Path | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        max_attempts: int = MAX_ATTEMPTS,
        part_size: int = PART_SIZE,
    ) -> None:
        if not location.bucket:
            raise ConfigurationError("no S3 bucket set for the outbox")
        if part_size < MIN_PART:
            raise ConfigurationError(f"S3 part size {part_size} is below S3's {MIN_PART}")
        self.location = location
        self._prefix = "/".join(PurePosixPath(location.prefix).parts).strip("/")
        self._config = client_config(
            location,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_attempts=max_attempts,
        )
        self._part_size = part_size
        self._workdir = workdir
        self._client: _S3Client | None = None
        self._lock = threading.Lock()  # callers may share one outbox between threads

    def _key(self, relpath: str) -> str:
        rel = PurePosixPath(relpath)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise InputError(f"outbox path {relpath!r} must be relative and inside the outbox")
        key = "/".join(rel.parts)
        return f"{self._prefix}/{key}" if self._prefix else key

    def _where(self, key: str) -> str:
        return f"s3://{self.location.bucket}/{key}"

    def _s3(self) -> _S3Client:
        """The client, built on first use from the location and the usual AWS credentials."""
        with self._lock:
            if self._client is None:
                import boto3

                try:
                    client = boto3.session.Session().client(
                        "s3",
                        region_name=self.location.region or None,
                        endpoint_url=self.location.endpoint_url or None,
                        config=self._config,
                    )
                except Exception as exc:  # bad endpoint, region or configuration
                    raise ConfigurationError(
                        f"S3 client for the outbox not usable: {_one_line(str(exc))}"
                    ) from exc
                self._client = cast(_S3Client, client)
            return self._client

    def close(self) -> None:
        """Close the client's connections (a later call builds a new one)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _put(self, key: str, body: bytes, digest: bytes) -> None:
        try:
            self._s3().put_object(
                Bucket=self.location.bucket,
                Key=key,
                Body=body,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=_checksum(digest),
                Metadata={"sha256": digest.hex()},
            )
        except DeliveryError:
            raise
        except Exception as exc:
            raise _failure(exc, f"could not store {self._where(key)}") from exc

    def write(self, relpath: str, data: bytes) -> Artefact:
        """Store ``data`` in one PUT, which S3 checks against its SHA-256."""
        key = self._key(relpath)
        digest = hashlib.sha256(data).digest()
        self._put(key, data, digest)
        return Artefact(path=relpath, sha256=digest.hex(), size=len(data))

    def adopt(self, relpath: str, source: Path) -> Artefact:
        """Upload a finished local file, then delete it; in parts when it is large."""
        key = self._key(relpath)
        size = source.stat().st_size
        if size < self._part_size:
            data = source.read_bytes()  # small: the bytes hashed are the bytes sent
            digest = hashlib.sha256(data).digest()
            self._put(key, data, digest)
        else:
            digest = _hash_file(source)
            self._upload_parts(key, source, digest)
        source.unlink()
        return Artefact(path=relpath, sha256=digest.hex(), size=size)

    def _upload_parts(self, key: str, source: Path, digest: bytes) -> None:
        from boto3.s3.transfer import TransferConfig

        transfer = TransferConfig(
            multipart_threshold=self._part_size,
            multipart_chunksize=self._part_size,
            max_concurrency=4,
            preferred_transfer_client="classic",
        )
        try:
            self._s3().upload_file(
                Filename=str(source),
                Bucket=self.location.bucket,
                Key=key,
                ExtraArgs={"ChecksumAlgorithm": "SHA256", "Metadata": {"sha256": digest.hex()}},
                Config=transfer,
            )
        except DeliveryError:
            raise
        except Exception as exc:
            raise _failure(exc, f"could not upload {source} to {self._where(key)}") from exc

    @property
    def workdir(self) -> Path:
        """Local scratch space for files rendered before they are adopted."""
        with self._lock:
            if self._workdir is None:
                self._workdir = Path(tempfile.mkdtemp(prefix="solidarity-outbox-"))
                # a private folder: gone with the outbox (or the process), with any render
                # an upload failed to take
                weakref.finalize(self, shutil.rmtree, self._workdir, ignore_errors=True)
            return self._workdir

    def _get(self, key: str) -> Any | None:
        """The object's body stream, or None when there is no such object."""
        try:
            return self._s3().get_object(Bucket=self.location.bucket, Key=key)["Body"]
        except DeliveryError:
            raise
        except Exception as exc:
            if _is_missing(exc):
                return None
            raise _failure(exc, f"could not read {self._where(key)}") from exc

    def read(self, relpath: str) -> bytes:
        key = self._key(relpath)
        body = self._get(key)
        if body is None:
            raise FileNotFoundError(f"no artefact at {self._where(key)}")
        try:
            return cast(bytes, body.read())
        except Exception as exc:
            raise _failure(exc, f"could not read {self._where(key)}") from exc
        finally:
            body.close()

    def _head(self, key: str) -> dict[str, Any] | None:
        """The object's headers, or None when there is no such object."""
        try:
            return self._s3().head_object(Bucket=self.location.bucket, Key=key)
        except DeliveryError:
            raise
        except Exception as exc:
            if _is_missing(exc):
                return None
            raise _failure(exc, f"could not look for {self._where(key)}") from exc

    def exists(self, relpath: str) -> bool:
        return self._head(self._key(relpath)) is not None

    def stat(self, relpath: str) -> Stored | None:
        """The object's size and ``LastModified``, or None when it is missing."""
        head = self._head(self._key(relpath))
        if head is None:
            return None
        modified = head["LastModified"]
        return Stored(size=int(head["ContentLength"]), modified=modified.astimezone(UTC))

    def copy_to(self, relpath: str, target: Path) -> None:
        """Stream the object into the local file ``target``, 1 MiB at a time."""
        key = self._key(relpath)
        body = self._get(key)
        if body is None:
            raise FileNotFoundError(f"no artefact at {self._where(key)}")
        try:
            with target.open("wb") as out:
                for chunk in body.iter_chunks(CHUNK):
                    out.write(chunk)
        except Exception as exc:
            target.unlink(missing_ok=True)
            raise _failure(exc, f"could not copy {self._where(key)} to {target}") from exc
        finally:
            body.close()

    def where(self, relpath: str) -> str:
        """The object's URL, ``s3://bucket/prefix/relpath``."""
        return self._where(self._key(relpath))

    def sha256(self, relpath: str) -> str | None:
        """The object's SHA-256 now, from its bytes (never its metadata), or None when missing."""
        key = self._key(relpath)
        body = self._get(key)
        if body is None:
            return None
        digest = hashlib.sha256()
        try:
            for chunk in body.iter_chunks(CHUNK):
                digest.update(chunk)
        except Exception as exc:
            raise _failure(exc, f"could not read {self._where(key)}") from exc
        finally:
            body.close()
        return digest.hexdigest()

    def local_path(self, relpath: str) -> Path:
        """There is none: the artefacts are in S3, not on this disk."""
        raise InputError(
            f"outbox path {relpath!r} has no local path: the outbox is on S3 "
            f"({self._where(self._key(relpath))}); read it or copy it instead"
        )

    def walk(self, prefix: str = "") -> Iterator[str]:
        """The artefacts under ``prefix``, in the local outbox's order, hidden ones left out."""
        base = self._key(prefix) + "/" if prefix else (f"{self._prefix}/" if self._prefix else "")
        strip = len(f"{self._prefix}/") if self._prefix else 0
        found: list[tuple[str, ...]] = []
        try:
            pages = self._s3().get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.location.bucket, Prefix=base):
                for item in page.get("Contents", ()):
                    parts = tuple(str(item["Key"])[strip:].split("/"))
                    if all(part and not part.startswith(".") for part in parts):
                        found.append(parts)  # folder markers ("a/") and "a//b" left out
        except DeliveryError:
            raise
        except Exception as exc:
            raise _failure(exc, f"could not list {self._where(base)}") from exc
        for parts in sorted(found):
            yield "/".join(parts)

    def delete(self, relpath: str) -> bool:
        """Remove an object (retention); True when it was there."""
        if not self.exists(relpath):
            return False
        key = self._key(relpath)
        try:
            self._s3().delete_object(Bucket=self.location.bucket, Key=key)
        except DeliveryError:
            raise
        except Exception as exc:
            raise _failure(exc, f"could not delete {self._where(key)}") from exc
        return True


def _hash_file(source: Path) -> bytes:
    digest = hashlib.sha256()
    with source.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.digest()
