"""`solidarity report` as an operator runs it: a PDF to hand over, a CSV to sort."""

from __future__ import annotations

import csv
import io
import re
import shutil

import pytest
from pypdf import PdfReader

from tests.acceptance.conftest import FIXTURES, Operator


@pytest.fixture(scope="module")
def delivered(tmp_path_factory: pytest.TempPathFactory) -> Operator:
    """One folder where the reference campaign went through the worker, for every test here."""
    folder = tmp_path_factory.mktemp("operator")
    shutil.copy(FIXTURES / "campaign_reference.toml", folder / "campaign.toml")
    shutil.copy(FIXTURES / "messages_sample.csv", folder / "messages.csv")
    operator = Operator(folder)
    operator("campaign", "load", "campaign.toml")
    operator("messages", "import", "messages.csv", "--source", "web")
    operator("review", "approve", "--all-clean")
    operator("worker", "--once", "--now")
    return operator


def test_a_pdf_report_lands_in_the_outbox(delivered: Operator) -> None:
    summary = delivered("report", "--format", "pdf", "--json").json()

    path = delivered.folder / summary["path"]
    assert re.fullmatch(r"outbox/reports/report-all-\d{8}T\d{6}Z\.pdf", summary["path"])
    assert summary["format"] == "pdf"
    assert summary["bytes"] == path.stat().st_size
    assert summary["messages"]["received"] == 5
    assert summary["deliveries"] == 4
    verified = delivered("audit", "verify", "--json").json()
    assert summary["ledger"]["events"] == verified["events"]  # the report names the ledger head

    reader = PdfReader(path)
    assert len(reader.pages) == summary["pages"]
    first = reader.pages[0].extract_text()
    assert "Delivery report" in first
    assert "Write for Rights desk" in first
    assert summary["ledger"]["head"] in first
    assert f"Page 1 of {summary['pages']}" in first


def test_a_csv_report_of_one_case_where_the_operator_wants_it(delivered: Operator) -> None:
    done = delivered(
        "report",
        "--case",
        "viktor-arkhipov",
        "--format",
        "csv",
        "--output",
        "reports/arkhipov.csv",
    )
    assert done.out.startswith("wrote reports/arkhipov.csv (csv)")
    assert "deliveries 3, still waiting 3" in done.out

    raw = (delivered.folder / "reports" / "arkhipov.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert rows[0][:3] == ["delivery", "case", "recipient"]
    assert sorted(r[2] for r in rows[1:]) == [
        "arkhipov-detention-centre",
        "arkhipov-family",
        "ru-prosecutor-general",
    ]
    assert {r[5] for r in rows[1:]} == {"spooled"}


def test_a_bad_case_or_day_is_a_usage_error(delivered: Operator) -> None:
    unknown = delivered("report", "--case", "no-such-case", check=2)
    assert "case 'no-such-case': not in the loaded campaign" in unknown.err
    bad_day = delivered("report", "--since", "2026-02-30", check=2)
    assert "--since '2026-02-30': not a day (YYYY-MM-DD)" in bad_day.err
    assert not list(delivered.folder.rglob("report-no-such-case-*"))
