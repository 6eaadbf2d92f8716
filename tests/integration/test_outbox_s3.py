"""The S3 outbox against moto: the local outbox's contract, its hashes, and failed uploads.

Moto runs as a real server on a local port. The failures S3 gives but moto does not come
from the small local servers of :mod:`tests.s3_servers`: a proxy in front of moto that
answers the first PUTs with ``503 SlowDown``, and a socket that never answers.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import boto3
import pytest

from delivery.errors import ConfigurationError, InputError, TransientError
from delivery.outbox import LocalOutbox
from delivery.outbox_s3 import MIN_PART, S3Location, S3Outbox
from tests.moto_server import moto_server, offline_aws
from tests.s3_servers import FailingProxy, failing_proxy, silent_server

REGION = "us-east-1"

# Paths chosen for the corners of the layout: nesting, hidden parts, a name that sorts
# between a folder and its files ("a.b" against "a/b"), a folder whose name another starts
# with ("letters" and "letters2"), non-ASCII names, and spellings that normalise.
SAMPLES: dict[str, bytes] = {
    "a/b": b"in a folder",
    "a.b": b"next to it",
    "a/c/d.pdf": b"%PDF-1.7 deeper",
    "a//double": b"two slashes",
    "./dotted/start.txt": b"a leading dot component",
    "letters/0001.pdf": b"%PDF letter one",
    "letters/0002.pdf": b"%PDF letter two",
    "letters2/0001.pdf": b"%PDF elsewhere",
    "ünïcode/grüße.txt": "grüße".encode(),
    "empty.bin": b"",
    ".work/scratch.pdf": b"hidden folder",
    "a/.tmp.part": b"hidden file",
    "top.txt": b"at the top",
}


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials, and no other source of credentials to find."""
    offline_aws(monkeypatch, tmp_path, REGION)


@pytest.fixture
def plain(moto_url: str) -> Any:
    """A boto3 client of its own, to look at the bucket (and change it) behind the outbox."""
    client = boto3.client("s3", region_name=REGION, endpoint_url=moto_url)
    yield client
    client.close()


@pytest.fixture
def bucket(plain: Any) -> str:
    name = f"outbox-{uuid.uuid4().hex[:12]}"
    plain.create_bucket(Bucket=name)
    return name


@pytest.fixture
def outbox(moto_url: str, bucket: str, tmp_path: Path) -> Iterator[S3Outbox]:
    made = S3Outbox(
        S3Location(bucket=bucket, prefix="outbox/", endpoint_url=moto_url, region=REGION),
        workdir=tmp_path / "s3-work",
        part_size=MIN_PART,
    )
    yield made
    made.close()


# -- the same contract as the local outbox ---------------------------------------------------


def test_round_trips_give_the_local_outboxs_paths_and_hashes(
    outbox: S3Outbox, tmp_path: Path, plain: Any, bucket: str
) -> None:
    local = LocalOutbox(tmp_path / "local")
    for relpath, data in SAMPLES.items():
        assert outbox.write(relpath, data) == local.write(relpath, data)
    for relpath, data in SAMPLES.items():
        assert outbox.read(relpath) == local.read(relpath) == data
        assert outbox.exists(relpath) is local.exists(relpath) is True
        assert outbox.sha256(relpath) == local.sha256(relpath) == hashlib.sha256(data).hexdigest()
    for prefix in ("", "a", "a/c", "letters", "ünïcode", ".work", "missing", "top.txt"):
        assert list(outbox.walk(prefix)) == list(local.walk(prefix)), prefix
    assert "a.b" in list(local.walk())  # the corners above are really exercised
    assert "a/double" in list(local.walk())

    for name in ("missing.pdf", "a", "letters/0003.pdf"):  # "a" is a folder, not a file
        assert outbox.exists(name) is local.exists(name) is False
        assert outbox.sha256(name) is local.sha256(name) is None
    with pytest.raises(FileNotFoundError):
        outbox.read("missing.pdf")

    for relpath in ("letters/0001.pdf", "a//double", "missing.pdf"):
        assert outbox.delete(relpath) is local.delete(relpath)
        assert outbox.delete(relpath) is local.delete(relpath) is False
        assert outbox.exists(relpath) is local.exists(relpath) is False
    assert list(outbox.walk()) == list(local.walk())

    keys = {item["Key"] for item in plain.list_objects_v2(Bucket=bucket)["Contents"]}
    assert "outbox/a/b" in keys  # the prefix, then the normalised relative path
    assert "outbox/dotted/start.txt" in keys


def test_stat_copy_and_names_as_the_local_outbox_gives_them(
    outbox: S3Outbox, tmp_path: Path, bucket: str
) -> None:
    local = LocalOutbox(tmp_path / "local")
    before = datetime.now(UTC).replace(microsecond=0)  # S3 keeps whole seconds
    for relpath in ("letters/one.pdf", "empty.bin"):
        data = SAMPLES["a/c/d.pdf"] if relpath.endswith(".pdf") else b""
        outbox.write(relpath, data)
        local.write(relpath, data)
        remote, here = outbox.stat(relpath), local.stat(relpath)
        assert remote is not None
        assert here is not None
        assert remote.size == here.size == len(data)
        for stored in (remote, here):
            assert stored.modified.tzinfo is not None
            assert before - timedelta(seconds=5) <= stored.modified <= datetime.now(UTC)

        (tmp_path / "copies").mkdir(exist_ok=True)
        copy = tmp_path / "copies" / PurePosixPath(relpath).name
        outbox.copy_to(relpath, copy)
        assert copy.read_bytes() == data
        local.copy_to(relpath, copy)
        assert copy.read_bytes() == data

    assert outbox.stat("missing.pdf") is local.stat("missing.pdf") is None
    assert outbox.stat("letters") is local.stat("letters") is None  # a folder, not a file
    for made in (outbox, local):
        with pytest.raises(FileNotFoundError):
            made.copy_to("missing.pdf", tmp_path / "copies" / "missing.pdf")
    assert not (tmp_path / "copies" / "missing.pdf").exists()

    assert outbox.where("a//b.pdf") == f"s3://{bucket}/outbox/a/b.pdf"
    assert local.where("a/b.pdf") == "a/b.pdf"  # the ledger's own path, as before
    with pytest.raises(InputError, match="must be relative"):
        outbox.where("../b.pdf")


@pytest.mark.parametrize("relpath", ["/etc/passwd", "../escape", "a/../../b", "", ".", "./"])
def test_paths_outside_the_outbox_are_refused_as_locally(
    outbox: S3Outbox, tmp_path: Path, relpath: str
) -> None:
    local = LocalOutbox(tmp_path / "local")
    with pytest.raises(InputError):
        local.write(relpath, b"x")
    for call in (
        lambda: outbox.write(relpath, b"x"),
        lambda: outbox.read(relpath),
        lambda: outbox.exists(relpath),
        lambda: outbox.sha256(relpath),
        lambda: outbox.delete(relpath),
    ):
        with pytest.raises(InputError, match="must be relative"):
            call()


def test_the_hash_and_checksum_are_stored_with_the_object(
    outbox: S3Outbox, plain: Any, bucket: str
) -> None:
    data = b"%PDF-1.7 a letter"
    artefact = outbox.write("letters/one.pdf", data)
    head = plain.head_object(Bucket=bucket, Key="outbox/letters/one.pdf", ChecksumMode="ENABLED")
    assert head["Metadata"] == {"sha256": artefact.sha256}
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()


def test_sha256_rereads_the_bytes_so_an_object_changed_behind_its_back_shows(
    outbox: S3Outbox, plain: Any, bucket: str
) -> None:
    artefact = outbox.write("letters/one.pdf", b"%PDF-1.7 the letter as sent")
    assert outbox.sha256("letters/one.pdf") == artefact.sha256
    plain.put_object(  # different bytes, the old hash copied into the metadata
        Bucket=bucket,
        Key="outbox/letters/one.pdf",
        Body=b"%PDF-1.7 a letter someone changed",
        Metadata={"sha256": artefact.sha256},
    )
    now = outbox.sha256("letters/one.pdf")
    assert now == hashlib.sha256(b"%PDF-1.7 a letter someone changed").hexdigest()
    assert now != artefact.sha256


def test_local_path_says_the_outbox_is_on_s3(outbox: S3Outbox) -> None:
    with pytest.raises(InputError, match="the outbox is on S3"):
        outbox.local_path("letters/one.pdf")


def test_workdir_is_a_local_folder(outbox: S3Outbox, moto_url: str, bucket: str) -> None:
    assert outbox.workdir.name == "s3-work"
    made = S3Outbox(S3Location(bucket=bucket, endpoint_url=moto_url))
    try:
        assert made.workdir.is_dir()
        assert made.workdir == made.workdir
    finally:
        made.workdir.rmdir()


def test_importing_the_module_does_not_load_boto3() -> None:
    code = "import sys, delivery.outbox_s3; print('boto3' in sys.modules)"
    shown = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert shown.stdout.strip() == "False"


# -- adopt --------------------------------------------------------------------------------


def test_adopting_a_large_file_uploads_it_in_parts_and_removes_it(
    outbox: S3Outbox, plain: Any, bucket: str
) -> None:
    outbox.workdir.mkdir(parents=True, exist_ok=True)
    source = outbox.workdir / "bundle.pdf"
    data = os.urandom(2 * MIN_PART + 12345)  # three parts
    source.write_bytes(data)

    artefact = outbox.adopt("bundles/big.pdf", source)

    expected = hashlib.sha256(data).hexdigest()
    assert artefact.path == "bundles/big.pdf"
    assert (artefact.sha256, artefact.size) == (expected, len(data))
    assert not source.exists()
    head = plain.head_object(Bucket=bucket, Key="outbox/bundles/big.pdf")
    assert head["ETag"].strip('"').endswith("-3")  # a multipart upload, completed
    assert head["Metadata"] == {"sha256": expected}
    assert outbox.sha256("bundles/big.pdf") == expected
    assert outbox.read("bundles/big.pdf") == data


def test_adopting_a_small_file_gives_the_local_outboxs_artefact(
    outbox: S3Outbox, tmp_path: Path, plain: Any, bucket: str
) -> None:
    local = LocalOutbox(tmp_path / "local")
    for made in (local.workdir, outbox.workdir):
        made.mkdir(parents=True, exist_ok=True)
        (made / "small.pdf").write_bytes(b"%PDF-1.7 small")
    assert outbox.adopt("small.pdf", outbox.workdir / "small.pdf") == local.adopt(
        "small.pdf", local.workdir / "small.pdf"
    )
    assert not (outbox.workdir / "small.pdf").exists()
    head = plain.head_object(Bucket=bucket, Key="outbox/small.pdf")
    assert "-" not in head["ETag"]  # one PUT
    assert outbox.sha256("small.pdf") == local.sha256("small.pdf")


# -- failures -----------------------------------------------------------------------------


@pytest.fixture
def proxy(moto_url: str) -> Iterator[FailingProxy]:
    with failing_proxy(moto_url) as made:
        yield made


def _through(proxy: FailingProxy, bucket: str, tmp_path: Path) -> S3Outbox:
    return S3Outbox(
        S3Location(bucket=bucket, prefix="outbox", endpoint_url=proxy.url, region=REGION),
        workdir=tmp_path / "work",
        max_attempts=3,
        read_timeout=5,
        connect_timeout=2,
    )


def test_5xx_on_every_attempt_is_transient_and_leaves_nothing(
    proxy: FailingProxy, bucket: str, plain: Any, tmp_path: Path
) -> None:
    outbox = _through(proxy, bucket, tmp_path)
    proxy.fail_puts = 3
    with pytest.raises(TransientError) as raised:
        outbox.write("letters/one.pdf", b"%PDF-1.7 never stored")
    assert "s3://" + bucket + "/outbox/letters/one.pdf" in str(raised.value)
    assert "SlowDown" in str(raised.value)
    assert "503" in str(raised.value)
    assert proxy.puts == 3  # botocore tried three times
    assert not outbox.exists("letters/one.pdf")
    assert plain.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    outbox.close()


def test_5xx_on_fewer_attempts_than_allowed_is_retried_and_stored(
    proxy: FailingProxy, bucket: str, tmp_path: Path
) -> None:
    outbox = _through(proxy, bucket, tmp_path)
    proxy.fail_puts = 2
    artefact = outbox.write("letters/one.pdf", b"%PDF-1.7 stored on the third try")
    assert proxy.puts == 3
    assert outbox.read("letters/one.pdf") == b"%PDF-1.7 stored on the third try"
    assert outbox.sha256("letters/one.pdf") == artefact.sha256
    outbox.close()


def test_a_failed_adopt_keeps_the_local_file(
    proxy: FailingProxy, bucket: str, tmp_path: Path
) -> None:
    outbox = _through(proxy, bucket, tmp_path)
    proxy.fail_puts = 10
    outbox.workdir.mkdir(parents=True)
    source = outbox.workdir / "bundle.pdf"
    source.write_bytes(b"%PDF-1.7 rendered")
    with pytest.raises(TransientError, match=r"outbox/bundles/one\.pdf"):
        outbox.adopt("bundles/one.pdf", source)
    assert source.read_bytes() == b"%PDF-1.7 rendered"
    assert not outbox.exists("bundles/one.pdf")
    outbox.close()


@pytest.fixture
def silent_url() -> Iterator[str]:
    with silent_server() as url:
        yield url


def test_an_endpoint_that_never_answers_is_transient_within_the_timeout(silent_url: str) -> None:
    outbox = S3Outbox(
        S3Location(bucket="silent", endpoint_url=silent_url, region=REGION),
        connect_timeout=1,
        read_timeout=0.5,
        max_attempts=2,
    )
    started = time.monotonic()
    with pytest.raises(TransientError, match=r"s3://silent/letters/one\.pdf.*timeout"):
        outbox.write("letters/one.pdf", b"%PDF-1.7 nobody hears it")
    elapsed = time.monotonic() - started
    # each attempt: up to 1 s waiting for "100 Continue", then the 0.5 s read timeout;
    # one backoff of at most 1 s between the two attempts
    assert elapsed < 2 * (1 + 0.5) + 1 + 2
    outbox.close()


def test_nothing_listening_is_transient(bucket: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as spare:
        port = spare.getsockname()[1]  # closed again when the block ends
    outbox = S3Outbox(
        S3Location(bucket=bucket, endpoint_url=f"http://127.0.0.1:{port}", region=REGION),
        connect_timeout=1,
        max_attempts=1,
    )
    with pytest.raises(TransientError, match="Could not connect"):
        outbox.write("letters/one.pdf", b"x")


def test_a_missing_bucket_is_a_configuration_problem(moto_url: str) -> None:
    outbox = S3Outbox(S3Location(bucket="no-such-bucket-here", endpoint_url=moto_url))
    with pytest.raises(ConfigurationError, match="NoSuchBucket"):
        outbox.write("letters/one.pdf", b"x")
    with pytest.raises(ConfigurationError, match="NoSuchBucket"):  # not "no such artefact"
        outbox.sha256("letters/one.pdf")
    outbox.close()
