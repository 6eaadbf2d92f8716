"""The outbox in S3, run as an operator would: every artefact in the bucket, none on this disk.

Moto runs as a real S3 server on a local port; `solidarity` reaches it through
``SOLIDARITY_OUTBOX=s3://…`` and ``SOLIDARITY_S3__ENDPOINT_URL``, as it would reach MinIO.
The database is a SQLite file beside the operator's files. Failed uploads come from a
proxy in front of moto that answers PUTs with 503, and a socket that never answers.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import io
import json
import mailbox
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from pypdf import PdfReader

from tests.acceptance.conftest import FIXTURES, Operator
from tests.acceptance.test_retention import age
from tests.moto_server import moto_server, offline_aws
from tests.s3_servers import failing_proxy, silent_server

REGION = "us-east-1"
PREFIX = "campaign-2027"
V = "viktor-arkhipov"
RECIPIENTS = {  # who gets a bundle from the sample's approved messages
    f"{V}/ru-prosecutor-general",  # by e-mail
    f"{V}/arkhipov-detention-centre",  # by post
    f"{V}/arkhipov-family",  # by e-mail
    "honduras-defenders/hn-minister-security",  # by fax
}
ALL_SPOOLED = {"email": {"spooled": 2}, "fax": {"spooled": 1}, "post": {"spooled": 1}}


@dataclass(frozen=True)
class Bucket:
    """The bucket behind the outbox, looked at (and changed) with a boto3 client of its own."""

    name: str
    client: Any

    def url(self, relpath: str) -> str:
        return f"s3://{self.name}/{PREFIX}/{relpath}"

    def objects(self) -> dict[str, int]:
        """Every object under the prefix: its path in the outbox and its size."""
        found: dict[str, int] = {}
        pages = self.client.get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=self.name):
            for item in page.get("Contents", ()):
                key = str(item["Key"])
                assert key.startswith(f"{PREFIX}/"), key  # nothing outside the prefix
                found[key.removeprefix(f"{PREFIX}/")] = int(item["Size"])
        return found

    def read(self, relpath: str) -> bytes:
        answer = self.client.get_object(Bucket=self.name, Key=f"{PREFIX}/{relpath}")
        return bytes(answer["Body"].read())

    def put(self, relpath: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.name, Key=f"{PREFIX}/{relpath}", Body=data)

    def delete(self, relpath: str) -> None:
        self.client.delete_object(Bucket=self.name, Key=f"{PREFIX}/{relpath}")


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def bucket(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Bucket]:
    offline_aws(monkeypatch, tmp_path, REGION)
    client = boto3.client("s3", region_name=REGION, endpoint_url=moto_url)
    name = f"outbox-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    yield Bucket(name=name, client=client)
    client.close()


@pytest.fixture
def operator(bucket: Bucket, moto_url: str, tmp_path: Path) -> Operator:
    """An operator whose outbox is the bucket, with the database in their folder."""
    folder = tmp_path / "operator"
    folder.mkdir()
    shutil.copy(FIXTURES / "campaign_reference.toml", folder / "campaign.toml")
    shutil.copy(FIXTURES / "messages_sample.csv", folder / "messages.csv")
    made = Operator(folder)  # after offline_aws: the dummy credentials, and no others
    made.env.update(
        {
            "SOLIDARITY_OUTBOX": f"s3://{bucket.name}/{PREFIX}",
            "SOLIDARITY_S3__ENDPOINT_URL": moto_url,
            "SOLIDARITY_S3__REGION": REGION,
            "SOLIDARITY_S3__WORKDIR": str(tmp_path / "scratch"),
            "SOLIDARITY_DATABASE_URL": f"sqlite:///{database(made)}",
        }
    )
    return made


def database(operator: Operator) -> Path:
    return operator.folder / "solidarity.db"


def rows(operator: Operator, query: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(database(operator)) as db:
        return db.execute(query).fetchall()


def take_in(operator: Operator) -> None:
    operator("campaign", "load", "campaign.toml")
    operator("messages", "import", "messages.csv", "--source", "web")
    operator("review", "approve", "--all-clean")


def spooled(operator: Operator) -> dict[str, dict[str, int]]:
    deliveries: dict[str, dict[str, int]] = operator("status", "--json").json()["deliveries"]
    return {channel: states for channel, states in deliveries.items() if states}


def nothing_on_this_disk(operator: Operator) -> None:
    """No outbox folder, and no rendered PDF left in the scratch folder."""
    assert not (operator.folder / "outbox").exists()
    assert not list(operator.folder.rglob("s3:*"))
    assert not list((operator.folder.parent / "scratch").rglob("*.pdf"))


# -- the whole run ---------------------------------------------------------------------------


def test_every_artefact_is_an_object_in_the_bucket(operator: Operator, bucket: Bucket) -> None:
    take_in(operator)
    run = operator("worker", "--once", "--now", "--json").json()
    assert (run["bundles_rendered"], run["bundles_failed"], run["errors"]) == (4, 0, [])

    objects = bucket.objects()
    pdfs = sorted(p for p in objects if p.startswith("bundles/") and p.endswith(".pdf"))
    assert {p.rsplit("/", 1)[0].removeprefix("bundles/") for p in pdfs} == RECIPIENTS
    for pdf in pdfs:
        data = bucket.read(pdf)
        manifest = json.loads(bucket.read(pdf.removesuffix(".pdf") + ".manifest.json"))
        pages = len(PdfReader(io.BytesIO(data)).pages)
        assert pages == manifest["pages"] > 0
        assert hashlib.sha256(data).hexdigest() == manifest["pdf_sha256"]
    listed = operator("bundles", "list", "--json").json()
    assert sorted(b["pdf"] for b in listed) == pdfs

    (eml,) = [p for p in objects if p.startswith(f"email/{V}/ru-prosecutor-general/")]
    sent = email.message_from_bytes(bucket.read(eml), policy=email.policy.default)
    assert sent["To"].addresses[0].addr_spec == "office@prosecutor.example.gov"
    (attached,) = [
        part for part in sent.iter_attachments() if part.get_content_type() == "application/pdf"
    ]
    assert attached.get_content() == bucket.read(next(p for p in pdfs if "prosecutor" in p))
    faxes = [p for p in objects if p.startswith("fax/")]
    (fax,) = [p for p in faxes if p.endswith(".pdf")]
    assert sorted(faxes) == sorted([fax, fax.removesuffix(".pdf") + ".job.json"])
    assert len(PdfReader(io.BytesIO(bucket.read(fax))).pages) > 0
    (job,) = {p.split("/")[1] for p in objects if p.startswith("post/")}
    post = {p.removeprefix(f"post/{job}/") for p in objects if p.startswith(f"post/{job}/")}
    assert {"manifest.csv", "status.csv", "README.txt"} <= post
    assert any(name.endswith(".pdf") for name in post)

    assert spooled(operator) == ALL_SPOOLED
    nothing_on_this_disk(operator)
    trace = operator("audit", "trace", "pl-0002", "--json").json()
    assert trace["bundles"][0]["page"] >= 1  # read from the manifest in the bucket

    verified = operator("audit", "verify")
    assert verified.out.startswith("ledger OK:")
    assert "every recorded file matches its hash" in verified.out


def test_audit_verify_names_the_object_changed_or_lost(operator: Operator, bucket: Bucket) -> None:
    take_in(operator)
    operator("worker", "--once", "--now")
    objects = bucket.objects()
    prosecutor = f"bundles/{V}/ru-prosecutor-general/"
    pdf = next(p for p in objects if p.startswith(prosecutor) and p.endswith(".pdf"))
    eml = next(p for p in objects if p.endswith(".eml"))
    assert operator("audit", "verify", "--json").json()["ok"] is True

    bucket.put(pdf, b"%PDF-1.7 not the letter that was sent")
    changed = operator("audit", "verify", check=1)
    assert changed.out.startswith("ledger FAILED (1 problems):")
    assert f"file {bucket.url(pdf)} was changed (SHA-256 " in changed.out

    bucket.delete(eml)
    lost = operator("audit", "verify", "--json", check=1).json()
    assert lost["ok"] is False
    assert len(lost["problems"]) == 2
    assert any(f"file {bucket.url(eml)} is missing" in p for p in lost["problems"])
    assert any(f"file {bucket.url(pdf)} was changed" in p for p in lost["problems"])


# -- uploads that fail -----------------------------------------------------------------------


def test_failed_uploads_record_nothing_done_and_a_later_run_completes(
    operator: Operator, bucket: Bucket, moto_url: str
) -> None:
    take_in(operator)
    with failing_proxy(moto_url) as proxy:
        operator.env["SOLIDARITY_S3__ENDPOINT_URL"] = proxy.url
        operator.env["SOLIDARITY_S3__MAX_ATTEMPTS"] = "2"
        proxy.fail_puts = 1_000_000  # S3 answers every upload with 503 SlowDown

        failed = operator("worker", "--once", "--now", check=1)
        assert "4 bundles collected, 0 rendered (0 pages)" in failed.out
        shown = [line for line in failed.err.splitlines() if "left for the next run" in line]
        assert len(shown) == 4
        for line in shown:
            assert f"could not store s3://{bucket.name}/{PREFIX}/bundles/" in line
            assert "S3 said SlowDown (HTTP 503)" in line
        assert proxy.puts == 4 * 2  # each bundle's PDF, tried as often as the settings say
        assert bucket.objects() == {}
        nothing_on_this_disk(operator)  # the renders S3 did not take are not left behind
        status = operator("status", "--json").json()
        assert status["bundles_by_state"] == {"planned": 4}  # not the bundles' fault
        assert spooled(operator) == {}
        assert rows(operator, "SELECT count(*) FROM deliveries") == [(0,)]
        assert rows(operator, "SELECT count(*) FROM ledger WHERE kind = 'bundle.rendered'") == [
            (0,)
        ]
        assert rows(operator, "SELECT count(*) FROM bundles WHERE lease_owner != ''") == [(0,)]
        assert operator("audit", "verify", "--json").json()["ok"] is True

        proxy.fail_puts = 0  # S3 is back: the next run finishes by itself
        run = operator("worker", "--once", "--now", "--json").json()
    operator.env["SOLIDARITY_S3__ENDPOINT_URL"] = moto_url

    assert (run["bundles_rendered"], run["bundles_failed"], run["errors"]) == (4, 0, [])
    assert spooled(operator) == ALL_SPOOLED
    assert sum(p.endswith(".manifest.json") for p in bucket.objects()) == 4
    assert operator("audit", "verify", "--json").json()["ok"] is True
    nothing_on_this_disk(operator)


def test_a_spool_file_that_cannot_be_stored_defers_its_delivery(
    operator: Operator, bucket: Bucket, moto_url: str
) -> None:
    take_in(operator)
    with failing_proxy(moto_url) as proxy:
        operator.env["SOLIDARITY_S3__ENDPOINT_URL"] = proxy.url
        operator.env["SOLIDARITY_S3__MAX_ATTEMPTS"] = "1"
        proxy.refuse_under = f"/{bucket.name}/{PREFIX}/email/"
        run = operator("worker", "--once", "--now", "--json", check=1).json()
    operator.env["SOLIDARITY_S3__ENDPOINT_URL"] = moto_url

    assert run["bundles_rendered"] == 4
    assert run["deliveries"] == {"email:deferred": 2, "fax:spooled": 1, "post:spooled": 1}
    assert len(run["errors"]) == 2
    error = run["errors"][0]
    assert f"could not store s3://{bucket.name}/{PREFIX}/email/{V}/" in error
    assert not [p for p in bucket.objects() if p.startswith("email/")]
    assert spooled(operator)["email"] == {"deferred": 2}
    assert operator("audit", "verify", "--json").json()["ok"] is True


def test_an_s3_that_never_answers_leaves_the_bundles_planned_within_the_timeouts(
    operator: Operator,
) -> None:
    take_in(operator)
    with silent_server() as silent:
        operator.env["SOLIDARITY_S3__ENDPOINT_URL"] = silent
        operator.env["SOLIDARITY_S3__CONNECT_TIMEOUT"] = "1"
        operator.env["SOLIDARITY_S3__READ_TIMEOUT"] = "0.5"
        operator.env["SOLIDARITY_S3__MAX_ATTEMPTS"] = "1"
        started = time.monotonic()
        run = operator("worker", "--once", "--now", "--json", check=1).json()
        elapsed = time.monotonic() - started

    assert elapsed < 60  # S3's default read timeout alone is 60 s
    assert (run["bundles_rendered"], run["bundles_failed"], len(run["errors"])) == (0, 0, 4)
    for error in run["errors"]:
        assert "could not store s3://" in error
        assert "timeout" in error.lower()
    assert operator("status", "--json").json()["bundles_by_state"] == {"planned": 4}
    nothing_on_this_disk(operator)


# -- audit packages, retention, tracking, the demo ------------------------------------------


def test_an_audit_package_with_pdfs_comes_from_the_bucket(
    operator: Operator, bucket: Bucket
) -> None:
    take_in(operator)
    operator("worker", "--once", "--now")
    keys = operator("audit", "keygen", "--name", "example.org/solidarity-test", "--json").json()
    signed = operator("audit", "checkpoint", "--key", keys["private"])
    first_line = signed.out.splitlines()[0]
    assert first_line.startswith(f"s3://{bucket.name}/{PREFIX}/checkpoints/checkpoint-")
    assert (
        first_line.removeprefix(f"s3://{bucket.name}/{PREFIX}/").removesuffix(":")
        in bucket.objects()
    )

    exported = operator("audit", "export", "--case", V, "--with-pdfs", "--output", "package")
    assert "the package holds the bundles' PDFs" in exported.out
    files = operator.folder / "package" / "files"
    copied = sorted(files.rglob("*.pdf"))
    assert len(copied) == 3  # the prosecutor's, the prison's and the family's bundles
    for path in copied:
        assert path.read_bytes() == bucket.read(path.relative_to(files).as_posix())

    checked = operator("audit", "verify-package", "package", "--key", keys["public"])
    assert checked.out.startswith("package OK: package")
    nothing_on_this_disk(operator)


def test_purge_erases_the_objects_and_the_ledger_still_verifies(
    operator: Operator, bucket: Bucket
) -> None:
    take_in(operator)
    operator("review", "reject", "kr-0001", "--reason", "names a co-defendant")
    operator("worker", "--once", "--now")
    age(database(operator), 100)
    reject_file = "rejected/web-batch9-20260101T000000Z.csv"
    bucket.put(reject_file, b"line,field,reason\n3,case,unknown case\n")
    before = bucket.objects()

    plan = operator("purge", "--dry-run", "--json").json()
    assert (plan["bundles"], plan["messages"], plan["reject_files"]) == (2, 4, 0)
    assert bucket.objects() == before  # a dry run changes nothing

    done = operator("purge", "--json").json()
    assert (done["bundles"], done["files"], done["bytes"]) == (2, plan["files"], plan["bytes"])
    after = bucket.objects()
    erased = set(before) - set(after)
    assert len(erased) == plan["files"]
    assert sum(before[p] for p in erased) == plan["bytes"] > 0  # sizes as S3 gave them
    assert not [p for p in after if p.startswith(f"bundles/{V}/") and p.endswith(".pdf")]
    assert not [p for p in after if p.startswith(f"email/{V}/")]
    assert [p for p in after if p.startswith(f"bundles/{V}/") and p.endswith(".manifest.json")]
    assert [p for p in after if p.startswith("bundles/honduras-defenders/") and p.endswith(".pdf")]
    assert operator("audit", "verify", "--json").json()["ok"] is True

    shown = operator("purge", "--days", "0", "--dry-run")
    assert "and 1 import reject files" in shown.out  # written before now: old enough for 0 days
    assert reject_file in bucket.objects()
    operator("purge", "--days", "0")
    assert reject_file not in bucket.objects()
    assert operator("audit", "verify", "--json").json()["ok"] is True


def test_a_report_it_cannot_read_is_quarantined_in_the_bucket(
    operator: Operator, bucket: Bucket
) -> None:
    operator("campaign", "load", "campaign.toml")
    box = mailbox.mbox(operator.folder / "bounces.mbox")
    box.add((FIXTURES / "dsn" / "garbage.eml").read_bytes())
    box.flush()
    box.close()

    report = operator("track", "bounces", "--mbox", "bounces.mbox", "--json").json()

    assert report["outcomes"] == {"quarantined": 1}
    (url,) = report["quarantined"]
    assert url.startswith(bucket.url("quarantine/bounces/report-"))
    relpath = url.removeprefix(bucket.url(""))
    kept = bucket.read(relpath)
    assert kept.rstrip(b"\n") == (FIXTURES / "dsn" / "garbage.eml").read_bytes().rstrip(b"\n")
    reason = bucket.read(relpath.removesuffix(".eml") + ".reason.txt").decode("utf-8")
    assert reason.startswith("reason: cannot read this report")
    assert f"sha256: {hashlib.sha256(kept).hexdigest()}" in reason
    nothing_on_this_disk(operator)


def test_the_demo_keeps_its_files_in_the_bucket(operator: Operator, bucket: Bucket) -> None:
    shown = operator("demo", "--messages", "20")
    assert f"files in s3://{bucket.name}/{PREFIX}/" in shown.out
    assert "bundles/ PDF bundles" in shown.out
    objects = bucket.objects()
    assert {"demo/campaign.toml", "demo/messages-20.csv"} <= set(objects)
    scratch = operator.folder.parent / "scratch" / "demo"
    assert bucket.read("demo/messages-20.csv") == (scratch / "messages-20.csv").read_bytes()
    assert any(p.startswith("bundles/") and p.endswith(".pdf") for p in objects)
    assert any(p.endswith(".eml") for p in objects)
    nothing_on_this_disk(operator)
    assert operator("audit", "verify", "--json").json()["ok"] is True


def test_import_reject_files_go_to_the_bucket(operator: Operator, bucket: Bucket) -> None:
    operator("campaign", "load", "campaign.toml")
    header = (FIXTURES / "messages_sample.csv").read_text(encoding="utf-8").splitlines()[0]
    row = "x-0001,no-such-case,authority,A supporter,,Porto,PT,pt,letter,Free him,2026-12-14,"
    (operator.folder / "bad.csv").write_text(f"{header}\n{row}\n", encoding="utf-8")

    report = operator("messages", "import", "bad.csv", "--source", "web", "--json", check=2).json()

    assert [(r["line"], r["field"]) for r in report["rejected"]] == [(2, "case")]
    url = report["rejects_file"]
    assert url.startswith(bucket.url("rejected/web-batch"))
    assert url.endswith(".csv")
    (relpath,) = bucket.objects()
    assert bucket.url(relpath) == url
    assert b"no-such-case" in bucket.read(relpath)
    nothing_on_this_disk(operator)
    assert not list((operator.folder.parent / "scratch").rglob("*.csv"))


# -- settings --------------------------------------------------------------------------------


def test_a_bucket_needs_a_database_url_and_a_valid_name(operator: Operator) -> None:
    del operator.env["SOLIDARITY_DATABASE_URL"]
    refused = operator("status", check=2)
    assert refused.err.startswith("error: settings (environment, .env or solidarity.toml):")
    assert "the outbox is in S3" in refused.err
    assert "set database_url (SOLIDARITY_DATABASE_URL)" in refused.err
    assert not database(operator).exists()

    operator.env["SOLIDARITY_DATABASE_URL"] = f"sqlite:///{database(operator)}"
    operator.env["SOLIDARITY_OUTBOX"] = "s3://Campaign_Files/2027"
    wrong = operator("status", check=2)
    assert "outbox: 's3://Campaign_Files/2027': 'Campaign_Files' is not an S3 bucket name" in (
        wrong.err
    )
