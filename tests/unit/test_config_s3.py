"""Settings of an outbox in S3: how ``s3://`` is read, what it needs, and which outbox it opens."""

from __future__ import annotations

from pathlib import Path

import pytest

from delivery.config import load_settings
from delivery.errors import ConfigurationError
from delivery.outbox import LocalOutbox, open_outbox
from delivery.outbox_s3 import S3Location, S3Outbox


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("SOLIDARITY_OUTBOX", "SOLIDARITY_DATABASE_URL", "SOLIDARITY_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_an_s3_url_puts_the_outbox_in_a_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOLIDARITY_OUTBOX", "s3://solidarity-artefacts/campaign-2027//spool/")
    monkeypatch.setenv("SOLIDARITY_DATABASE_URL", "postgresql://solidarity@db.example.org/app")
    monkeypatch.setenv("SOLIDARITY_S3__ENDPOINT_URL", "http://minio.internal:9000")
    monkeypatch.setenv("SOLIDARITY_S3__REGION", "eu-central-1")
    monkeypatch.setenv("SOLIDARITY_S3__READ_TIMEOUT", "5")
    settings = load_settings()
    assert settings.outbox_location == S3Location(
        bucket="solidarity-artefacts",
        prefix="campaign-2027/spool",
        endpoint_url="http://minio.internal:9000",
        region="eu-central-1",
    )
    assert settings.outbox_label == "s3://solidarity-artefacts/campaign-2027/spool"
    assert settings.database_url == "postgresql://solidarity@db.example.org/app"

    outbox = open_outbox(settings)
    assert isinstance(outbox, S3Outbox)
    assert outbox.location == settings.outbox_location
    assert outbox.where("bundles/a.pdf") == (
        "s3://solidarity-artefacts/campaign-2027/spool/bundles/a.pdf"
    )


def test_anything_else_is_a_local_folder(tmp_path: Path) -> None:
    settings = load_settings(outbox="spool/s3:/not-a-bucket")
    assert settings.outbox_location is None
    assert settings.outbox_path == Path("spool/s3:/not-a-bucket")
    assert settings.database_url == "sqlite:///spool/s3:/not-a-bucket/solidarity.db"
    outbox = open_outbox(settings)
    assert isinstance(outbox, LocalOutbox)
    assert outbox.root == Path("spool/s3:/not-a-bucket")
    assert load_settings().outbox_label == "outbox"


def test_a_bucket_without_a_database_url_is_refused_with_what_to_set() -> None:
    with pytest.raises(ConfigurationError) as refused:
        load_settings(outbox="s3://solidarity-artefacts/spool")
    said = str(refused.value)
    assert "the outbox is in S3 (s3://solidarity-artefacts/spool)" in said
    assert "set database_url (SOLIDARITY_DATABASE_URL)" in said
    assert "Value error" not in said


@pytest.mark.parametrize(
    ("outbox", "bucket"),
    [
        ("s3://Solidarity_Artefacts/spool", "Solidarity_Artefacts"),
        ("s3://", ""),
        ("s3:///spool", ""),
        ("s3://ab", "ab"),
        ("s3://-leading-hyphen", "-leading-hyphen"),
        ("s3://two..dots", "two..dots"),
        ("s3://192.168.10.4/spool", "192.168.10.4"),
        ("s3://" + "b" * 64, "b" * 64),
    ],
)
def test_a_bad_bucket_name_is_named_with_its_setting(outbox: str, bucket: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        load_settings(outbox=outbox, database_url="sqlite:///solidarity.db")
    assert f"outbox: {outbox!r}: {bucket!r} is not an S3 bucket name" in str(refused.value)


def test_the_scratch_folder_is_the_workdir_or_a_private_temporary_one(tmp_path: Path) -> None:
    named = load_settings(
        outbox="s3://solidarity-artefacts",
        database_url="sqlite:///solidarity.db",
        s3={"workdir": tmp_path / "scratch"},
    )
    assert named.outbox_path == tmp_path / "scratch"
    outbox = open_outbox(named)
    assert outbox.workdir == tmp_path / "scratch"

    default = load_settings(outbox="s3://solidarity-artefacts", database_url="sqlite:///x.db")
    scratch = default.outbox_path
    try:
        assert scratch.is_dir()
        assert scratch.stat().st_mode & 0o077 == 0  # private to this user
        assert default.outbox_path == scratch  # made once
        assert not scratch.is_relative_to(tmp_path)
    finally:
        scratch.rmdir()
