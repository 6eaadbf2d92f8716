"""Audit packages: exported by an operator, checked by an auditor with only the folder and the .pub.

One ledger is built for the module (a day of intake, then the worker, checkpoints, a hold
and a release); each test gets a fresh copy of a package in a folder of its own, with no
campaign, outbox or settings, and runs `solidarity` there as an auditor would.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from delivery.checkpoint import Checkpoint, generate_key, read_key_file, sign_checkpoint
from delivery.ledger import chain_hash
from tests.acceptance.conftest import FIXTURES, Operator

V = "viktor-arkhipov"
ORIGIN = "bounces.example.org/solidarity-delivery/ledger"
INTAKE_EVENTS = 7  # campaign.loaded, five intake events, import.batch


@dataclass(frozen=True)
class Built:
    operator: Operator
    package: Path  # every event from 1, with the PDFs
    since_package: Path  # from the day after the intake, with a frontier
    erased_package: Path | None  # after retention erased the bundles' files (None: no purge)
    private: Path
    public: Path
    first_checkpoint: Path  # the first checkpoint's note in the outbox


def backdate(database: Path, through: int) -> None:
    """Move events 1 to `through` to the day before and re-seal the chain, before any checkpoint.

    The ledger of a real campaign spans days; this one is made in seconds. The events are
    re-sealed exactly as the store seals them, so `audit verify` still holds.
    """
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT seq, at, actor, kind, subject, payload FROM ledger ORDER BY seq"
        ).fetchall()
        prev = "0" * 64
        for seq, at, actor, kind, subject, payload in rows:
            if seq <= through:
                at = (datetime.fromisoformat(at) - timedelta(days=1)).isoformat(
                    timespec="microseconds"
                )
            digest = chain_hash(prev, seq, at, actor, kind, subject, payload)
            db.execute(
                "UPDATE ledger SET at = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                (at, prev, digest, seq),
            )
            prev = digest


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    folder = tmp_path_factory.mktemp("operator")
    shutil.copy(FIXTURES / "campaign_reference.toml", folder / "campaign.toml")
    shutil.copy(FIXTURES / "messages_sample.csv", folder / "messages.csv")
    op = Operator(folder)
    op("campaign", "load", "campaign.toml")
    op("messages", "import", "messages.csv", "--source", "web")
    database = op.outbox / "solidarity.db"
    backdate(database, INTAKE_EVENTS)
    op("review", "approve", "--all-clean")
    op("worker", "--once", "--now")
    made = op("audit", "keygen", "--name", "example.org/solidarity-test", "--json").json()
    first = op("audit", "checkpoint", "--key", made["private"], "--json").json()
    op("hold", "--case", V, "--reason", "pause for the holidays")
    op("release", "--case", V)
    op("audit", "checkpoint", "--key", made["private"])
    op("audit", "export", "--case", V, "--with-pdfs", "--output", "package")
    with sqlite3.connect(database) as db:
        (day,) = db.execute("SELECT at FROM ledger WHERE seq = ?", (INTAKE_EVENTS + 1,)).fetchone()
    since = op(
        "audit",
        "export",
        "--case",
        V,
        "--since",
        day[:10],
        "--key",
        made["private"],
        "--output",
        "since-package",
        "--json",
    ).json()
    assert since["range"][0] == INTAKE_EVENTS + 1
    erased = None
    if op("purge", "--days", "0", check=None).code == 0:  # retention, where it is installed
        op(
            "audit",
            "export",
            "--case",
            V,
            "--with-pdfs",
            "--key",
            made["private"],
            "--output",
            "erased",
        )
        erased = folder / "erased"
    return Built(
        operator=op,
        package=folder / "package",
        since_package=folder / "since-package",
        erased_package=erased,
        private=folder / made["private"],
        public=folder / made["public"],
        first_checkpoint=op.outbox / first["path"],
    )


@pytest.fixture
def auditor(built: Built, tmp_path: Path) -> Operator:
    """A folder with only a copy of the package and the organisation's public key."""
    shutil.copytree(built.package, tmp_path / "package")
    shutil.copy(built.public, tmp_path / "org.pub")
    return Operator(tmp_path)


def verify(auditor: Operator, *extra: str, check: int = 1) -> str:
    result = auditor("audit", "verify-package", "package", "--key", "org.pub", *extra, check=check)
    return result.out


def events(auditor: Operator) -> list[dict[str, object]]:
    lines = (auditor.folder / "package" / "events.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def write_events(auditor: Operator, rows: list[dict[str, object]]) -> None:
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    (auditor.folder / "package" / "events.jsonl").write_text(text, encoding="utf-8")


def first_of(rows: list[dict[str, object]], kind: str) -> int:
    """The index of the first event of `kind` about the case's deliveries or bundles."""
    return next(
        n
        for n, row in enumerate(rows)
        if row["kind"] == kind and V in str(row["payload"]) + str(row["subject"])
    )


def package_files(auditor: Operator, suffix: str) -> list[Path]:
    return sorted((auditor.folder / "package" / "files").rglob(f"*{suffix}"))


def outbox_path(path: Path) -> str:
    return path.as_posix().split("/package/files/", 1)[1]


# -- the package holds ---------------------------------------------------------------------


def test_the_package_verifies_in_a_folder_with_nothing_but_it_and_the_key(
    built: Built, auditor: Operator
) -> None:
    out = verify(auditor, check=0)
    assert out.startswith("package OK: package")
    assert "signed by example.org/solidarity-test" in out
    assert "delivery dlv-" in out
    assert ": spooled" in out
    assert not (auditor.folder / "outbox").exists()  # nothing was opened or made here
    result = auditor("audit", "verify-package", "package", "--key", "org.pub", "--json").json()
    assert result["ok"] is True
    assert result["problems"] == []
    with sqlite3.connect(built.operator.outbox / "solidarity.db") as db:
        kinds = {k for (k,) in db.execute("SELECT DISTINCT kind FROM ledger")}
    size = result["checkpoint"]["size"]
    assert result["range"] == [1, size]
    assert result["events"] == size
    assert len(events(auditor)) == size  # every event, the other case's too
    assert {row["kind"] for row in events(auditor)} <= kinds
    assert any("honduras" in str(row["payload"]) for row in events(auditor))
    assert len(package_files(auditor, ".pdf")) == len(package_files(auditor, ".manifest.json"))
    assert len(result["earlier_checkpoints"]) == 1
    readme = (auditor.folder / "package" / "README.txt").read_text(encoding="utf-8")
    assert "solidarity audit verify-package" in readme


def test_an_earlier_checkpoint_given_by_the_auditor_is_proved_consistent(
    built: Built, auditor: Operator
) -> None:
    shutil.copy(built.first_checkpoint, auditor.folder / "seen-before.txt")
    out = verify(auditor, "--checkpoint", "seen-before.txt", check=0)
    assert "seen-before.txt (size " in out


def test_a_package_from_a_day_on_verifies_from_its_frontier(built: Built, tmp_path: Path) -> None:
    shutil.copytree(built.since_package, tmp_path / "package")
    shutil.copy(built.public, tmp_path / "org.pub")
    shutil.copy(built.first_checkpoint, tmp_path / "seen-before.txt")
    auditor = Operator(tmp_path)
    data = json.loads((tmp_path / "package" / "package.json").read_text(encoding="utf-8"))
    assert data["range"]["start"] == INTAKE_EVENTS + 1
    assert data["range"]["frontier"]  # the subtrees of events 1 to 7, not the events
    assert (tmp_path / "package" / "context-events.jsonl").is_file()  # the case's intake
    assert events(auditor)[0]["seq"] == INTAKE_EVENTS + 1
    verify(auditor, "--checkpoint", "seen-before.txt", check=0)
    traced = auditor("audit", "trace", "1", "--package", "package", "--key", "org.pub").out
    assert "message 1 (web, line 2)" in traced
    assert "#2 " in traced


def test_files_erased_under_retention_are_named_as_erased_not_missing(
    built: Built, tmp_path: Path
) -> None:
    if built.erased_package is None:
        pytest.skip("this build has no retention (`solidarity purge`)")
    shutil.copytree(built.erased_package, tmp_path / "package")
    shutil.copy(built.public, tmp_path / "org.pub")
    out = verify(Operator(tmp_path), check=0)
    assert ".pdf: erased under retention (event " in out
    assert "missing" not in out


def test_trace_answers_offline_from_the_package(auditor: Operator) -> None:
    traced = auditor("audit", "trace", "message:1", "--package", "package", "--key", "org.pub")
    out = traced.out
    assert out.startswith("message 1 (web, line 2): to authority, case viktor-arkhipov")
    assert "review: approved" in out
    assert "this message on page" in out
    assert "sha256 " in out
    assert "delivery dlv-" in out
    assert "by email: spooled" in out
    assert "review.approved message:1" in out
    assert "[in checkpoint " in out
    assert "inclusion proof verified]" in out
    assert "signed by example.org/solidarity-test" in out
    bundle = next(line.split()[1] for line in out.splitlines() if "  bundle bnd-" in line)
    unsigned = auditor("audit", "trace", bundle, "--package", "package", "--json")
    assert "signature is not checked" in unsigned.err
    by_bundle = unsigned.json()
    assert by_bundle["checkpoint"]["signature_checked"] is False
    assert by_bundle["bundles"][0]["id"] == bundle
    assert by_bundle["message"] is None
    assert {e["subject"] for e in by_bundle["events"]} >= {f"bundle:{bundle}"}


def test_trace_refuses_a_package_that_does_not_verify(auditor: Operator) -> None:
    rows = events(auditor)
    rows[3]["payload"] = str(rows[3]["payload"]).replace("web", "post")
    write_events(auditor, rows)
    refused = auditor("audit", "trace", "1", "--package", "package", "--key", "org.pub", check=1)
    assert "content altered" in refused.out
    assert "does not verify" in refused.err


# -- tampering is caught, by name ----------------------------------------------------------


def test_an_edited_event_is_named(auditor: Operator) -> None:
    rows = events(auditor)
    n = first_of(rows, "delivery.spooled")
    rows[n]["payload"] = str(rows[n]["payload"]).replace('"to":"spooled"', '"to":"delivered"')
    write_events(auditor, rows)
    out = verify(auditor)
    assert f"event {rows[n]['seq']} (delivery.spooled {rows[n]['subject']}): content altered" in out


def test_an_edited_event_with_its_hash_recomputed_breaks_the_next_link_and_the_root(
    auditor: Operator,
) -> None:
    rows = events(auditor)
    n = first_of(rows, "bundle.rendered")
    row = rows[n]
    row["payload"] = str(row["payload"]).replace('"pages":2', '"pages":1')
    fields = ("prev_hash", "seq", "at", "actor", "kind", "subject", "payload")
    row["hash"] = chain_hash(*(row[k] for k in fields))  # type: ignore[arg-type]
    write_events(auditor, rows)
    out = verify(auditor)
    seq = int(row["seq"])  # type: ignore[call-overload]
    assert f"event {seq + 1} (" in out
    assert f"its prev_hash is not the hash of event {seq}" in out
    assert f"event {seq} (bundle.rendered {row['subject']}): its inclusion proof does not" in out
    assert "does not match the checkpoint's signed root" in out


def test_a_deleted_event_is_named(auditor: Operator) -> None:
    rows = events(auditor)
    gone = rows.pop(10)
    write_events(auditor, rows)
    out = verify(auditor)
    assert f"event {gone['seq']} missing" in out


def test_two_swapped_events_are_named(auditor: Operator) -> None:
    rows = events(auditor)
    rows[12], rows[13] = rows[13], rows[12]
    write_events(auditor, rows)
    out = verify(auditor)
    first, second = rows[13], rows[12]
    assert (
        f"events out of order: event {first['seq']} ({first['kind']} {first['subject']})"
        f" comes after event {second['seq']} ({second['kind']} {second['subject']})"
    ) in out


def test_a_truncated_tail_is_named(auditor: Operator) -> None:
    rows = events(auditor)
    write_events(auditor, rows[:-3])
    out = verify(auditor)
    last, size = rows[-4]["seq"], rows[-1]["seq"]
    assert f"the package ends at event {last} but the checkpoint covers {size} events" in out


def test_a_pdf_swapped_for_another_bundles_pdf_is_named(auditor: Operator) -> None:
    first, second = package_files(auditor, ".pdf")[:2]
    shutil.copy(second, first)
    out = verify(auditor)
    assert f"file {outbox_path(first)} does not match the hash recorded by event " in out
    assert "(bundle.rendered bundle:" in out


def test_an_edited_manifest_is_named(auditor: Operator) -> None:
    manifest = package_files(auditor, ".manifest.json")[0]
    data = json.loads(manifest.read_text(encoding="utf-8"))
    data["messages"] = data["messages"][:-1]
    manifest.write_text(json.dumps(data), encoding="utf-8")
    out = verify(auditor)
    assert f"file {outbox_path(manifest)} does not match the hash recorded by event " in out


def test_a_file_no_event_recorded_is_named(auditor: Operator) -> None:
    extra = auditor.folder / "package" / "files" / "bundles" / V / "notes.txt"
    extra.write_text("nothing to see", encoding="utf-8")
    out = verify(auditor)
    assert f"file files/bundles/{V}/notes.txt is in the package, but no event recorded it" in out


def test_a_checkpoint_signed_by_another_key_is_refused(auditor: Operator) -> None:
    note_file = auditor.folder / "package" / "checkpoint.txt"
    note = note_file.read_text(encoding="utf-8")
    checkpoint = Checkpoint.parse(note[: note.rfind("\n\n") + 1])
    stranger, _ = generate_key("example.org/someone-else")
    note_file.write_text(sign_checkpoint(checkpoint, stranger), encoding="utf-8")
    out = verify(auditor)
    assert "checkpoint.txt: no signature by a known key" in out
    assert "example.org/someone-else" in out


def test_an_earlier_checkpoint_of_a_forged_tree_is_refused(built: Built, auditor: Operator) -> None:
    real = built.first_checkpoint.read_text(encoding="utf-8")
    size = Checkpoint.parse(real[: real.rfind("\n\n") + 1]).size
    forged = Checkpoint(origin=ORIGIN, size=size, root=bytes(range(32)))
    signed = sign_checkpoint(forged, read_key_file(built.private))
    (auditor.folder / "forged.txt").write_text(signed, encoding="utf-8")
    out = verify(auditor, "--checkpoint", "forged.txt")
    assert (
        f"earlier checkpoint forged.txt (size {size}) is not consistent with the package's"
        " checkpoint"
    ) in out


# -- what cannot be done --------------------------------------------------------------------


def test_a_malformed_package_is_refused_with_file_and_line(auditor: Operator) -> None:
    events_file = auditor.folder / "package" / "events.jsonl"
    lines = events_file.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[4] = "{not json\n"
    events_file.write_text("".join(lines), encoding="utf-8")
    refused = auditor("audit", "verify-package", "package", "--key", "org.pub", check=2)
    assert "events.jsonl line 5: not JSON" in refused.err
    (auditor.folder / "package" / "package.json").write_text("{\n  oops", encoding="utf-8")
    broken = auditor("audit", "verify-package", "package", "--key", "org.pub", check=2)
    assert "package.json line 2 column 3" in broken.err


def test_export_refuses_a_folder_that_is_not_empty(built: Built) -> None:
    again = built.operator("audit", "export", "--case", V, "--output", "package", check=2)
    assert "package: already exists and is not an empty folder" in again.err


def test_export_without_any_checkpoint_says_how_to_make_one(operator: Operator) -> None:
    operator("campaign", "load", "campaign.toml")
    refused = operator("audit", "export", "--case", V, "--output", "package", check=2)
    assert "run `solidarity audit checkpoint --key PRIVATE.key` first" in refused.err
    assert "or pass --key PRIVATE.key" in refused.err
    assert not (operator.folder / "package").exists()
