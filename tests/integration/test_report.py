"""The report from a real store after a real worker run: JSON, CSV, HTML and PDF."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image
from pypdf import PdfReader

from delivery.campaign import load_campaign
from delivery.config import Settings
from delivery.importer import import_messages
from delivery.models import DeliveryState, ProofLevel, ReviewState
from delivery.reporting import Report, Scope, build_report, write_report
from delivery.reporting.render import DELIVERY_COLUMNS
from delivery.store import Store
from delivery.worker import Worker

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
HOSTILE_NAME = '=HYPERLINK("http://example.org/x") <script>alert(1)</script>'
HOSTILE_ERROR = '=HYPERLINK("http://example.org/evil","open me")'
RESOLUTION = "+ closed: the ministry moved; the new address is being checked"
HEADER = (
    "external_id,case,to,supporter_name,supporter_email,supporter_city,"
    "supporter_country,language,kind,body,submitted_at,event"
)
LATER = [  # after the worker ran: one flagged, one to reject, one to hold
    "x-link,viktor-arkhipov,authority,Supporter One,,,CL,es,letter,"
    '"Liberen a Viktor, vean https://example.org/viktor",2026-12-15T10:00:00Z,',
    "x-reject,viktor-arkhipov,authority,Supporter Two,,,CL,es,letter,"
    '"Liberen a Viktor ya.",2026-12-15T10:01:00Z,',
    "x-hold,viktor-arkhipov,authority,Supporter Three,,,FR,fr,letter,"
    '"Libérez Viktor.",2026-12-15T10:02:00Z,',
]
NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass
class Built:
    settings: Settings
    store: Store
    report: Report
    folder: Path
    returned: str  # the delivery given a hostile last error

    def write(self, fmt: str) -> Path:
        path = self.folder / f"report.{fmt}"
        write_report(self.report, fmt, path, templates=self.settings.templates)
        return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, module_database_url: str) -> Built:
    folder = tmp_path_factory.mktemp("report")
    settings = Settings(
        outbox=str(folder / "outbox"), render={"processes": 1}, database_url=module_database_url
    )
    store = Store.connect(settings.database_url)
    toml = (FIXTURES / "campaign_reference.toml").read_text(encoding="utf-8")
    toml = toml.replace('"Minister of Security"', json.dumps(HOSTILE_NAME))
    (folder / "campaign.toml").write_text(toml, encoding="utf-8")
    store.save_campaign(
        load_campaign(folder / "campaign.toml"), actor="test", source="campaign.toml", sha256="-"
    )
    import_messages(store, FIXTURES / "messages_sample.csv", source="web", settings=settings)
    store.decide(store.clean_pending(case=None), ReviewState.APPROVED, actor="test")
    asyncio.run(Worker(settings, store).run_once(on_demand=True))

    later = folder / "later.csv"
    later.write_text("\n".join([HEADER, *LATER]) + "\n", encoding="utf-8")
    import_messages(store, later, source="later", settings=settings)
    store.decide(store.resolve(["x-reject"]), ReviewState.REJECTED, actor="test", note="test")
    store.decide(store.resolve(["x-hold"]), ReviewState.HELD, actor="test", note="test")

    by_slug = {d.slug: d for d in store.deliveries_in(list(DeliveryState))}
    fax = by_slug["hn-minister-security"]
    store.transition(fax.id, DeliveryState.RETURNED, actor="test", detail=HOSTILE_ERROR)
    store.record_resolution(fax.id, RESOLUTION, actor="test")
    prison = by_slug["arkhipov-detention-centre"].id
    store.transition(
        prison,
        DeliveryState.ACCEPTED,
        actor="test",
        proof=ProofLevel.CARRIER_SCAN,
        provider_ref="RR123456785GB",
    )
    store.transition(prison, DeliveryState.DELIVERED, actor="test", proof=ProofLevel.SIGNED_RECEIPT)
    report = build_report(store, Scope(), now=NOW)
    return Built(settings=settings, store=store, report=report, folder=folder, returned=fax.id)


# -- JSON ---------------------------------------------------------------------------------


def test_json_numbers_add_up(built: Built) -> None:
    text = built.write("json").read_text(encoding="utf-8")
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    total = data["messages"]["total"]
    assert total == {"received": 8, "approved": 5, "rejected": 1, "held": 1, "pending": 1}
    assert total["approved"] + total["rejected"] + total["held"] + total["pending"] == 8
    by_case = data["messages"]["by_case"]
    assert sum(c["received"] for c in by_case.values()) == total["received"]
    assert by_case["viktor-arkhipov"]["pending"] == 1
    assert sum(c["count"] for c in data["countries"]) == total["received"]
    assert {"code": "CL", "count": 2, "name": "Chile"} in data["countries"]
    assert sum(b["messages"] for b in data["bundles"]) == 5  # the approved ones, bundled
    assert len(data["deliveries"]) == 4
    assert data["generated_at"] == NOW.isoformat()


def test_json_ties_to_the_ledger_and_says_what_waits(built: Built) -> None:
    data = json.loads(built.write("json").read_text(encoding="utf-8"))
    events = list(built.store.events())
    assert data["ledger"]["events"] == len(events)
    assert data["ledger"]["last_hash"] == events[-1].hash
    days = data["timeline"]
    assert sum(states.get("queued", 0) for states in days.values()) == 4
    assert sum(states.get("delivered", 0) for states in days.values()) == 1
    assert "sending" not in {s for states in days.values() for s in states}
    waiting = {d["recipient"]: d for d in data["waiting"]["deliveries"]}
    assert set(waiting) == {"ru-prosecutor-general", "arkhipov-family"}  # spooled e-mail
    assert waiting["arkhipov-family"]["reason"].startswith("written to the outbox")
    review = data["waiting"]["review"]
    assert review["total"] == 1
    assert review["by_rule"] == {"link": 1}
    assert [(m["external_id"], m["rules"]) for m in review["messages"]] == [("x-link", ["link"])]
    proof = {p["recipient"]: (p["proof"], p["state"]) for p in data["proof"]}
    assert proof["arkhipov-detention-centre"] == ("signed-receipt", "delivered")
    assert proof["hn-minister-security"] == ("none", "returned")


def test_a_case_and_a_period_narrow_the_report(built: Built) -> None:
    one = build_report(built.store, Scope(case="honduras-defenders"), now=NOW)
    assert [c for c, _ in one.cases] == ["honduras-defenders"]
    assert one.totals.received == 1
    assert [d.recipient.slug for d in one.deliveries] == ["hn-minister-security"]
    assert sum(sum(s.values()) for s in one.timeline.values()) == 3  # queued, spooled, returned

    today = datetime.now(UTC).date()
    around = build_report(built.store, Scope(since=today, until=today), now=NOW)
    assert around.totals == built.report.totals
    assert len(around.deliveries) == 4
    later = build_report(built.store, Scope(since=today + timedelta(days=1)), now=NOW)
    assert later.totals.received == 0
    assert later.deliveries == ()
    assert later.timeline == {}
    assert later.ledger == built.report.ledger  # the head is always the whole ledger's
    earlier = build_report(built.store, Scope(until=date(2000, 1, 1)), now=NOW)
    assert earlier.totals.received == 0
    assert earlier.deliveries == ()


# -- CSV ----------------------------------------------------------------------------------


def test_csv_is_the_deliveries_table_safe_for_spreadsheets(built: Built) -> None:
    raw = built.write("csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    assert raw.count(b"\r\n") == 5
    assert b"\n" not in raw.replace(b"\r\n", b"")
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert tuple(rows[0]) == DELIVERY_COLUMNS
    assert len(rows) == 4
    fax = next(r for r in rows if r["delivery"] == built.returned)
    assert fax["last_error"] == "'" + HOSTILE_ERROR
    assert fax["recipient_name"] == "'" + HOSTILE_NAME
    assert fax["resolution"] == "'" + RESOLUTION
    assert (fax["channel"], fax["state"], fax["proof"]) == ("fax", "returned", "none")
    prison = next(r for r in rows if r["recipient"] == "arkhipov-detention-centre")
    assert (prison["state"], prison["proof"]) == ("delivered", "signed-receipt")
    assert prison["provider_ref"] == "RR123456785GB"
    for row in rows:
        assert not row["last_error"].startswith(("=", "+", "-", "@", "\t", "\r"))
        assert datetime.fromisoformat(row["updated_at"]).tzinfo is not None


# -- HTML and PDF -------------------------------------------------------------------------


def test_html_has_the_three_charts_and_escapes_names(built: Built) -> None:
    page = built.write("html").read_text(encoding="utf-8")
    charts = re.findall(r"<svg\b.*?</svg>", page, flags=re.DOTALL)
    labels = re.findall(r'<svg\b[^>]*aria-label="([^"]*)"', page)
    assert labels == ["Messages by country", "Proof per recipient", "Deliveries by state per day"]
    for svg in charts:
        ET.fromstring(svg)  # noqa: S314  # our own output: well-formed XML
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<link" not in page  # nothing to fetch: the stylesheet is inline, no image, no script
    assert not re.search(r"\b(src|href)=", page)
    assert "Chile (CL)" in charts[0]


def test_pdf_shows_title_charts_and_page_numbers(built: Built) -> None:
    path = built.write("pdf")
    reader = PdfReader(path)
    pages = len(reader.pages)
    assert pages >= 2
    first = reader.pages[0].extract_text()
    for text in (
        "Write for Rights desk",
        "Delivery report",
        "Human rights defenders of the Aguán valley",
        "everything recorded",
        "2030-01-02 03:04 UTC",
        f"Page 1 of {pages}",
        "Chile (CL)",  # the chart's labels are text in the PDF
        "signed-receipt",
        "delivered · post",
    ):
        assert text in first, text
    assert built.report.ledger.last_hash in first
    last = reader.pages[-1].extract_text()
    assert f"Page {pages} of {pages}" in last
    assert reader.pages[0].mediabox.width == pytest.approx(595.28, abs=1)  # A4 portrait
    assert reader.pages[0].mediabox.height == pytest.approx(841.89, abs=1)

    pdftoppm = shutil.which("pdftoppm")
    assert pdftoppm, "poppler-utils is needed (make installs it)"
    prefix = built.folder / "page"
    subprocess.run(
        [pdftoppm, "-r", "40", "-png", "-singlefile", "-f", "1", "-l", "1", path, prefix],
        check=True,
    )
    with Image.open(prefix.with_suffix(".png")) as image:
        grey = image.convert("L")
        width, height = grey.size
        chart_band = grey.crop((0, height // 3, width, height * 5 // 6))
        dark = sum(chart_band.histogram()[:128])
    assert dark > chart_band.width * chart_band.height // 100  # the charts put ink there
