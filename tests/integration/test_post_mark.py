"""`post mark`: what the mailroom says about each envelope, applied to real spooled post."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delivery.campaign import load_campaign
from delivery.channels.base import Parcel, Receipt
from delivery.channels.post import PostSpool
from delivery.config import SHIPPED_TEMPLATES, Settings
from delivery.errors import InputError
from delivery.importer import import_messages
from delivery.ledger import Event, verify
from delivery.models import ChannelName, DeliveryState, ProofLevel, ReviewState
from delivery.outbox import LocalOutbox
from delivery.render.bundle import BundleDocument, render_bundle
from delivery.store import Store
from delivery.tracking.post import MarkReport, mark, read_status

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
JOB = "job-2026-12-15"
CASE = "viktor-arkhipov"
PROSECUTOR = "ru-prosecutor-general"
FAMILY = "arkhipov-family"
PRISON = "arkhipov-detention-centre"  # two envelopes: the facility's page limit
HEADER = ("envelope", "status", "date", "tracking_number", "reason", "signed_by")
FORMULA = '=HYPERLINK("http://evil.example","click")'
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Mailroom:
    """A store with three post deliveries spooled into one print job, and a folder for files."""

    store: Store
    outbox: LocalOutbox
    folder: Path
    deliveries: dict[str, str]  # recipient slug → delivery id

    def envelope(self, slug: str, number: int = 1) -> str:
        (part,) = [p for p in self.store.parts(self.deliveries[slug]) if p.number == number]
        return part.ref

    def state(self, slug: str) -> tuple[DeliveryState, ProofLevel]:
        row = self.store.delivery(self.deliveries[slug])
        return row.state, row.proof

    def events(self, slug: str) -> list[Event]:
        return list(self.store.events(subjects=[f"delivery:{self.deliveries[slug]}"]))

    def mark(self, path: Path) -> MarkReport:
        return mark(self.store, self.outbox, path, actor="mailroom")

    def status_file(
        self,
        rows: Sequence[Sequence[str]],
        *,
        name: str = "status.csv",
        header: Sequence[str] = HEADER,
        delimiter: str = ",",
        encoding: str = "utf-8",
    ) -> Path:
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n")
        writer.writerows([header, *rows])
        path = self.folder / name
        path.write_bytes(buffer.getvalue().encode(encoding))
        return path


def _render(store: Store, outbox: LocalOutbox, slug: str) -> Parcel:
    """A real bundle for one recipient, rendered and recorded as the worker would."""
    campaign = store.campaign()
    case = campaign.case(CASE)
    assert case is not None
    recipient = next(r for r in case.recipients if r.slug == slug)
    bundle_id = store.create_bundle(store.recipient_ids()[(CASE, slug)], "once", actor="worker")
    assert bundle_id is not None
    bundle = store.bundle(bundle_id)
    doc = BundleDocument(
        bundle_id=bundle_id,
        organisation=campaign.organisation,
        case=case,
        recipient=recipient,
        messages=store.bundle_messages(bundle_id),
        created_at=bundle.created_at,
    )
    rendered = render_bundle(doc, SHIPPED_TEMPLATES)
    base = f"bundles/{CASE}/{slug}/{bundle_id}"
    store.mark_rendered(
        bundle_id,
        pdf=outbox.write(f"{base}.pdf", rendered.pdf),
        manifest=outbox.write(f"{base}.manifest.json", b"{}"),
        pages=rendered.pages,
        countries=1,
        template_version=rendered.template_version,
        actor="worker",
    )
    delivery_id = store.ensure_delivery(
        store.bundle(bundle_id),
        ChannelName.POST,
        bounce_domain=campaign.organisation.bounce_domain,
        actor="worker",
    )
    assert rendered.pages == 2  # one envelope a page for the facility with a page limit
    return Parcel(
        delivery_id=delivery_id,
        bundle_id=bundle_id,
        channel=ChannelName.POST,
        organisation=campaign.organisation,
        recipient=recipient,
        pdf=rendered.pdf,
        pages=rendered.pages,
        message_count=len(doc.messages),
        envelopes=((1, 1), (2, 2)) if slug == PRISON else (),
    )


def _spool(store: Store, outbox: LocalOutbox, parcels: list[Parcel]) -> None:
    """Send the parcels through one print job and record them as the worker does."""
    spool = PostSpool(outbox, job_id=JOB)

    async def run() -> list[Receipt]:
        receipts = []
        for parcel in parcels:
            store.transition(parcel.delivery_id, DeliveryState.SENDING, actor="worker")
            receipts.append(await spool.send(parcel))
        await spool.close()
        return receipts

    for parcel, receipt in zip(parcels, asyncio.run(run()), strict=True):
        store.transition(
            parcel.delivery_id,
            receipt.state,
            actor="worker",
            proof=receipt.proof,
            provider_ref=receipt.provider_ref,
            detail=receipt.detail,
            artefacts=receipt.artefacts,
            parts=receipt.parts,
        )


@pytest.fixture
def room(tmp_path: Path, database_url: str) -> Mailroom:
    config = Settings(
        outbox=str(tmp_path / "outbox"), render={"processes": 1}, database_url=database_url
    )
    store = Store.connect(config.database_url)
    campaign = load_campaign(FIXTURES / "campaign_reference.toml")
    store.save_campaign(campaign, actor="test", source="campaign.toml", sha256="-")
    import_messages(store, FIXTURES / "messages_sample.csv", source="web", settings=config)
    store.decide(store.clean_pending(case=None), ReviewState.APPROVED, actor="caseworker")
    outbox = LocalOutbox(config.outbox_path)
    parcels = [_render(store, outbox, slug) for slug in (PROSECUTOR, FAMILY, PRISON)]
    _spool(store, outbox, parcels)
    deliveries = {p.recipient.slug: p.delivery_id for p in parcels}
    return Mailroom(store=store, outbox=outbox, folder=tmp_path, deliveries=deliveries)


def _evidence_path(event: Event) -> str:
    (artefact,) = event.data()["artefacts"]
    return str(artefact["path"])


# --- the template ------------------------------------------------------------------------


def test_the_status_template_lists_every_envelope_and_marks_as_nothing(room: Mailroom) -> None:
    raw = room.outbox.read(f"post/{JOB}/status.csv")
    envelopes = [room.envelope(PROSECUTOR), room.envelope(FAMILY)]
    envelopes += [room.envelope(PRISON, 1), room.envelope(PRISON, 2)]

    assert raw.startswith(b"\xef\xbb\xbfenvelope,status,date,tracking_number,reason,signed_by\r\n")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert sorted(row[0] for row in rows[1:]) == sorted(envelopes)
    assert room.envelope(PRISON, 2) == f"{room.deliveries[PRISON]}-e2"
    assert all(row[1:] == [""] * 5 for row in rows[1:])
    readme = room.outbox.read(f"post/{JOB}/README.txt").decode()
    assert "status.csv" in readme
    assert "posted, delivered or returned" in readme
    events = room.store.ledger_size()

    report = room.mark(room.outbox.local_path(f"post/{JOB}/status.csv"))

    assert (report.rows, report.outcomes) == (4, {"not filled in": 4})
    assert room.store.ledger_size() == events
    assert {room.state(slug)[0] for slug in room.deliveries} == {DeliveryState.SPOOLED}


# --- posted, delivered --------------------------------------------------------------------


def test_posted_with_a_tracking_number_is_accepted_on_a_carrier_scan(room: Mailroom) -> None:
    path = room.status_file(
        [
            [room.envelope(PROSECUTOR), "posted", "2026-12-15", "RR123456785GB", "", ""],
            [room.envelope(FAMILY), "Posted", "2026-12-15T16:40", "", "", ""],
        ]
    )

    report = room.mark(path)

    assert report.outcomes == {"accepted": 2}
    assert room.state(PROSECUTOR) == (DeliveryState.ACCEPTED, ProofLevel.CARRIER_SCAN)
    assert room.state(FAMILY) == (DeliveryState.ACCEPTED, ProofLevel.NONE)
    event = room.events(PROSECUTOR)[-1]
    assert event.kind == "delivery.accepted"
    assert event.actor == "mailroom"
    data = event.data()
    assert data["proof"] == "carrier-scan"
    assert data["provider_ref"] == "RR123456785GB"
    assert "posted on 2026-12-15" in data["detail"]
    assert _evidence_path(event) == report.evidence
    assert report.evidence.startswith("evidence/post/")
    assert room.outbox.exists(report.evidence)
    assert verify(room.store.events(), room.outbox.sha256) == []


def test_delivered_signed_for_is_a_signed_receipt(room: Mailroom) -> None:
    path = room.status_file(
        [
            [
                room.envelope(PROSECUTOR),
                "delivered",
                "2026-12-19",
                "RR123456785GB",
                "",
                "Duty clerk",
            ],
            [room.envelope(FAMILY), "DELIVERED", "2026-12-20", "", "", ""],
        ]
    )

    report = room.mark(path)

    assert report.outcomes == {"delivered": 2}
    assert room.state(PROSECUTOR) == (DeliveryState.DELIVERED, ProofLevel.SIGNED_RECEIPT)
    assert room.state(FAMILY) == (DeliveryState.DELIVERED, ProofLevel.CARRIER_SCAN)
    assert "signed for by Duty clerk" in room.events(PROSECUTOR)[-1].data()["detail"]


def test_two_envelopes_are_delivered_only_when_both_are(room: Mailroom) -> None:
    first, second = room.envelope(PRISON, 1), room.envelope(PRISON, 2)
    posted = room.status_file(
        [
            [first, "posted", "", "RR000000011GB", "", ""],
            [second, "posted", "", "RR000000025GB", "", ""],
        ],
        name="posted.csv",
    )
    one = room.status_file([[first, "delivered", "", "", "", "Reception"]], name="one.csv")
    both = room.status_file(
        [[first, "delivered", "", "", "", "Reception"], [second, "delivered", "", "", "", ""]],
        name="both.csv",
    )

    assert room.mark(posted).outcomes == {"envelope accepted": 1, "accepted": 1}
    assert room.state(PRISON) == (DeliveryState.ACCEPTED, ProofLevel.CARRIER_SCAN)
    assert room.mark(one).outcomes == {"envelope delivered": 1}
    assert room.state(PRISON) == (DeliveryState.ACCEPTED, ProofLevel.CARRIER_SCAN)
    parts = {p.ref: p.state for p in room.store.parts(room.deliveries[PRISON])}
    assert parts == {first: DeliveryState.DELIVERED, second: DeliveryState.ACCEPTED}

    assert room.mark(both).outcomes == {"already recorded": 1, "delivered": 1}
    # as proved as the weaker envelope: one signed for, one scanned
    assert room.state(PRISON) == (DeliveryState.DELIVERED, ProofLevel.CARRIER_SCAN)


# --- returned -----------------------------------------------------------------------------


def test_returned_marks_the_address_suspect_with_the_reason(room: Mailroom) -> None:
    path = room.status_file([[room.envelope(FAMILY), "returned", "2027-01-04", "", "moved", ""]])
    recipient = room.store.recipient_ids()[(CASE, FAMILY)]

    report = room.mark(path)

    assert report.outcomes == {"returned": 1}
    assert report.suspect == [f"{CASE}/{FAMILY}"]
    assert room.state(FAMILY)[0] is DeliveryState.RETURNED
    assert room.store.delivery(room.deliveries[FAMILY]).last_error.endswith(
        "reason: moved; status file line 2"
    )
    assert room.store.address_suspect(recipient) == "moved"
    (suspect,) = room.store.events(subjects=[f"recipient:{CASE}/{FAMILY}"])
    assert (suspect.kind, suspect.data(), suspect.actor) == (
        "address.suspect",
        {"reason": "moved"},
        "mailroom",
    )
    assert [d.id for d in room.store.not_arrived()] == [room.deliveries[FAMILY]]


# --- marked again, late rows ----------------------------------------------------------------


def test_the_same_file_marked_twice_records_once(room: Mailroom) -> None:
    delivered = room.status_file(
        [[room.envelope(PROSECUTOR), "delivered", "2026-12-19", "", "", ""]], name="first.csv"
    )
    room.mark(delivered)
    path = room.status_file(
        [
            [room.envelope(PROSECUTOR), "posted", "2026-12-15", "", "", ""],  # late
            [room.envelope(FAMILY), "returned", "", "", "addressee unknown", ""],
            [room.envelope(PRISON, 1), "posted", "", "", "", ""],
        ]
    )
    first = room.mark(path)
    assert first.outcomes == {"noted": 1, "returned": 1, "envelope accepted": 1}
    events = room.store.ledger_size()
    evidence = sorted(room.outbox.walk("evidence"))

    again = room.mark(path)

    assert again.outcomes == {"already recorded": 3}
    assert again.evidence == first.evidence
    assert room.store.ledger_size() == events
    assert sorted(room.outbox.walk("evidence")) == evidence
    suspect = list(room.store.events(subjects=[f"recipient:{CASE}/{FAMILY}"]))
    assert [e.kind for e in suspect] == ["address.suspect"]


def test_a_marking_that_stopped_half_way_is_finished_by_marking_again(room: Mailroom) -> None:
    posted = [room.envelope(PROSECUTOR), "posted", "", "RR123456785GB", "", ""]
    path = room.status_file([posted, [room.envelope(FAMILY), "returned", "", "", "moved", ""]])
    # as if the first marking kept the file, applied its first row and stopped
    assert room.mark(room.status_file([posted], name="first-row.csv")).outcomes == {"accepted": 1}
    kept = read_status(path.read_bytes(), name=path.name).evidence()
    evidence = room.outbox.write(f"evidence/post/{hashlib.sha256(kept).hexdigest()[:32]}.csv", kept)

    report = room.mark(path)

    assert report.evidence == evidence.path
    assert report.outcomes == {"already recorded": 1, "returned": 1}
    assert report.suspect == [f"{CASE}/{FAMILY}"]
    assert room.state(FAMILY)[0] is DeliveryState.RETURNED


def test_a_late_posted_row_is_only_noted_never_moved_back(room: Mailroom) -> None:
    envelope = room.envelope(PROSECUTOR)
    room.mark(room.status_file([[envelope, "delivered", "", "", "", "Duty clerk"]], name="a.csv"))

    report = room.mark(room.status_file([[envelope, "posted", "", "RR1GB", "", ""]], name="b.csv"))

    assert report.outcomes == {"noted": 1}
    assert room.state(PROSECUTOR) == (DeliveryState.DELIVERED, ProofLevel.SIGNED_RECEIPT)
    (part,) = room.store.parts(room.deliveries[PROSECUTOR])
    assert part.state is DeliveryState.DELIVERED
    note = room.events(PROSECUTOR)[-1]
    assert note.kind == "note.late-report"
    assert note.data()["reported"] == "accepted"
    assert _evidence_path(note) == report.evidence


# --- files refused whole ------------------------------------------------------------------------


def test_a_file_with_bad_rows_is_refused_whole_naming_each(room: Mailroom) -> None:
    path = room.status_file(
        [
            [room.envelope(PROSECUTOR), "posted", "2026-12-15", "RR123456785GB", "", ""],  # fine
            [room.envelope(FAMILY), "lost", "", "", "", ""],
            [room.envelope(PRISON, 1), "returned", "", "", "", ""],
            ["dlv-00000000000000000000", "delivered", "", "", "", ""],
            [room.envelope(PRISON, 2), "posted", "31/12/2026", "", "", ""],
            ["", "posted", "", "", "", ""],
            [room.envelope(FAMILY), "", "2026-12-15", "", "", ""],
            ["dlv-11111111111111111111", "sent", "", "", "", ""],
        ],
        name="mailroom-week-51.csv",
    )
    events = room.store.ledger_size()

    with pytest.raises(InputError) as caught:
        room.mark(path)

    lines = str(caught.value).splitlines()
    assert lines[0].startswith("mailroom-week-51.csv: 8 problems; nothing was marked")
    assert lines[1:] == [
        "mailroom-week-51.csv:3: status: 'lost' is not one of posted, delivered, returned",
        "mailroom-week-51.csv:4: reason: is required when the envelope was returned (e.g. moved)",
        "mailroom-week-51.csv:5: envelope: 'dlv-00000000000000000000' is no envelope of any "
        "print job",
        "mailroom-week-51.csv:6: date: '31/12/2026' is not an ISO 8601 date (2024-05-31) or "
        "date and time (2024-05-31T14:05)",
        "mailroom-week-51.csv:7: envelope: is required",
        "mailroom-week-51.csv:8: status: is required when the row says anything "
        "(posted, delivered, returned)",
        "mailroom-week-51.csv:9: status: 'sent' is not one of posted, delivered, returned",
        "mailroom-week-51.csv:9: envelope: 'dlv-11111111111111111111' is no envelope of any "
        "print job",
    ]
    assert room.store.ledger_size() == events
    assert {room.state(slug)[0] for slug in room.deliveries} == {DeliveryState.SPOOLED}
    assert list(room.outbox.walk("evidence")) == []


def test_a_header_without_the_required_columns_is_refused(room: Mailroom) -> None:
    path = room.status_file([["x", "posted"]], header=("envelope_id", "status"))

    with pytest.raises(InputError, match=r"status.csv:1: header: lacks column 'envelope'"):
        room.mark(path)


def test_a_file_that_is_not_utf8_names_its_line(room: Mailroom) -> None:
    rows = [[room.envelope(FAMILY), "returned", "", "", "déménagé", ""]]
    path = room.status_file(rows, delimiter=";", encoding="cp1252")

    with pytest.raises(InputError, match=r"status.csv:2: file: byte 0xe9 is not UTF-8"):
        room.mark(path)


# --- what spreadsheets write -----------------------------------------------------------------


def test_semicolons_a_bom_and_columns_in_any_order_are_read(room: Mailroom) -> None:
    header = ("Status", "Envelope", "Notes", "Reason", "Tracking_Number")
    rows = [
        ["Returned", room.envelope(FAMILY), "came back; torn, re-taped", "refused", ""],
        ["POSTED", room.envelope(PROSECUTOR), "", "", "RR123456785GB"],
        ["", "", "", "", ""],  # the empty row a spreadsheet leaves at the end
    ]
    path = room.status_file(rows, header=header, delimiter=";", encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbfStatus;Envelope;")

    report = room.mark(path)

    assert (report.rows, report.outcomes) == (2, {"returned": 1, "accepted": 1})
    assert room.state(FAMILY)[0] is DeliveryState.RETURNED
    assert room.state(PROSECUTOR) == (DeliveryState.ACCEPTED, ProofLevel.CARRIER_SCAN)
    family = room.store.recipient_ids()[(CASE, FAMILY)]
    assert room.store.address_suspect(family) == "refused"
    kept = room.outbox.read(report.evidence).decode("utf-8-sig")
    assert "came back; torn, re-taped" in kept  # the whole file, extra columns included


def test_a_formula_reason_is_stored_as_text_and_never_written_as_a_formula(
    room: Mailroom,
) -> None:
    rows = [[room.envelope(FAMILY), "returned", "", "-1", FORMULA, ""]]
    path = room.status_file(
        rows, header=("envelope", "status", "signed_by", "date", "reason", "+x")
    )
    with pytest.raises(InputError) as caught:  # "-1" is no date
        room.mark(path)
    assert "date: '-1' is not an ISO 8601 date" in str(caught.value)

    rows = [[room.envelope(FAMILY), "returned", "", "", FORMULA, "@SUM(1)"]]
    report = room.mark(room.status_file(rows, header=(*HEADER[:5], "+x")))

    family = room.store.recipient_ids()[(CASE, FAMILY)]
    assert room.store.address_suspect(family) == FORMULA
    assert (
        room.events(FAMILY)[-1].data()["detail"]
        == f"returned; reason: {FORMULA}; status file line 2"
    )
    written = [
        room.outbox.read(report.evidence),
        room.outbox.read(f"post/{JOB}/manifest.csv"),
        room.outbox.read(f"post/{JOB}/status.csv"),
    ]
    for raw in written:
        for row in csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")):
            assert not [cell for cell in row if cell.startswith(FORMULA_STARTS)]
    kept = list(csv.reader(io.StringIO(written[0].decode("utf-8-sig"), newline="")))
    assert kept[0][-1] == "'+x"
    assert kept[1][4] == f"'{FORMULA}"
    assert kept[1][5] == "'@SUM(1)"


# --- the reader on any cell --------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    reason=st.text(max_size=40),
    signed_by=st.text(max_size=20),
    delimiter=st.sampled_from([",", ";"]),
    bom=st.booleans(),
)
def test_any_cell_reads_back_as_written_or_as_a_named_problem(
    reason: str, signed_by: str, delimiter: str, bom: bool
) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n")
    writer.writerows([HEADER, ["dlv-1", "delivered", "", "", reason, signed_by]])
    data = buffer.getvalue().encode("utf-8-sig" if bom else "utf-8")
    cells = {"reason": reason, "signed_by": signed_by}
    expected = {name: unicodedata.normalize("NFC", v).strip() for name, v in cells.items()}
    bad = {name for name, value in expected.items() if CONTROL.search(value)}

    read = read_status(data, name="status.csv")

    assert {(p.line, p.field) for p in read.problems} == {(2, name) for name in bad}
    if not bad:
        (row,) = read.rows
        assert (row.reason, row.signed_by) == (expected["reason"], expected["signed_by"])
    for kept in csv.reader(io.StringIO(read.evidence().decode("utf-8-sig"), newline="")):
        assert not [cell for cell in kept if cell.startswith(FORMULA_STARTS)]
