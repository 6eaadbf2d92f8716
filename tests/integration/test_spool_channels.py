"""The spool channels write real files into a real outbox folder."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import email
import hashlib
import io
import json
import subprocess
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from pypdf import PdfReader

from delivery.channels.base import Parcel, Receipt
from delivery.channels.email import EmailSpool
from delivery.channels.fax import FaxSpool
from delivery.channels.post import PostSpool
from delivery.config import SHIPPED_TEMPLATES
from delivery.errors import InputError, PermanentChannelError
from delivery.models import (
    Address,
    Cadence,
    ChannelName,
    DeliveryState,
    Format,
    Part,
    ProofLevel,
    Recipient,
    RecipientKind,
)
from delivery.outbox import Artefact, LocalOutbox
from delivery.render.pdf import html_to_pdf
from tests.builders import ORG, make_pdf

DESK = Address(
    name="Office of the Prosecutor",
    street="12 Justice Avenue",
    city="Capital City",
    postal_code="10001",
    country="Examplestan",
)


def make_recipient(**changes: object) -> Recipient:
    base = Recipient(
        case="free-the-poet",
        slug="prosecutor",
        kind=RecipientKind.AUTHORITY,
        name="Office of the Prosecutor",
        language="en",
        channels=(ChannelName.EMAIL, ChannelName.FAX, ChannelName.POST),
        format=Format.BUNDLE,
        cadence=Cadence.DAILY,
        email="desk@prosecutor.example",
        fax="+4420799900011",
        address=DESK,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def make_email(delivery_id: str, to: str) -> bytes:
    message = EmailMessage()
    message["From"] = f"{ORG.name} <{ORG.email}>"
    message["To"] = to
    message["Subject"] = "128 messages for the release of a poet"
    message["Message-ID"] = f"<{delivery_id}@example.org>"
    message.set_content("Dear Prosecutor,\n\nPlease find the messages attached.\n")
    message.add_attachment(
        make_pdf(1), maintype="application", subtype="pdf", filename="bundle.pdf"
    )
    return message.as_bytes(policy=policy.SMTP)


def make_parcel(
    delivery_id: str = "dlv-0001",
    *,
    channel: ChannelName = ChannelName.FAX,
    pages: int = 3,
    recipient: Recipient | None = None,
    with_email: bool = True,
) -> Parcel:
    who = recipient or make_recipient()
    return Parcel(
        delivery_id=delivery_id,
        bundle_id=f"bdl-{delivery_id}",
        channel=channel,
        organisation=ORG,
        recipient=who,
        pdf=make_pdf(pages),
        pages=pages,
        message_count=128,
        emails=(make_email(delivery_id, who.email or "nobody@example.org"),) if with_email else (),
        envelope_from=f"bounces+{delivery_id}@{ORG.bounce_domain}",
    )


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_spooled(receipt: Receipt, main: str) -> None:
    assert receipt.state is DeliveryState.SPOOLED
    assert receipt.proof is ProofLevel.NONE
    assert receipt.provider_ref == main
    assert main in {a.path for a in receipt.artefacts}


def assert_artefacts_match(outbox: LocalOutbox, artefacts: tuple[Artefact, ...]) -> None:
    for artefact in artefacts:
        data = outbox.read(artefact.path)
        assert artefact.sha256 == sha(data)
        assert artefact.size == len(data)


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --- e-mail -------------------------------------------------------------------------------


def test_email_spool_writes_the_composed_bytes_unchanged(tmp_path: Path) -> None:
    outbox = LocalOutbox(tmp_path)
    parcel = make_parcel(channel=ChannelName.EMAIL)
    channel = EmailSpool(outbox)

    receipt = asyncio.run(channel.send(parcel))

    path = "email/free-the-poet/prosecutor/dlv-0001.eml"
    assert_spooled(receipt, path)
    assert_artefacts_match(outbox, receipt.artefacts)
    on_disk = outbox.read(path)
    assert (on_disk,) == parcel.emails
    assert b"\r\n" in on_disk
    parsed = email.message_from_bytes(on_disk, policy=policy.default)
    assert parsed["Message-ID"] == "<dlv-0001@example.org>"
    assert parsed["To"] == "desk@prosecutor.example"
    assert parsed["Subject"] == "128 messages for the release of a poet"
    assert asyncio.run(channel.close()) == ()


def test_email_spool_is_idempotent(tmp_path: Path) -> None:
    outbox = LocalOutbox(tmp_path)
    parcel = make_parcel(channel=ChannelName.EMAIL)
    channel = EmailSpool(outbox)

    first = asyncio.run(channel.send(parcel))
    before = snapshot(tmp_path)
    second = asyncio.run(channel.send(parcel))

    assert snapshot(tmp_path) == before
    assert first == second


@pytest.mark.parametrize(
    ("recipient_email", "with_email"),
    [("", True), ("desk@prosecutor.example", False)],
    ids=["no-address", "no-message"],
)
def test_email_spool_refuses_without_address_or_message(
    tmp_path: Path, recipient_email: str, with_email: bool
) -> None:
    parcel = make_parcel(
        channel=ChannelName.EMAIL,
        recipient=make_recipient(email=recipient_email),
        with_email=with_email,
    )

    with pytest.raises(PermanentChannelError, match=r"dlv-0001.*free-the-poet/prosecutor"):
        asyncio.run(EmailSpool(LocalOutbox(tmp_path)).send(parcel))
    assert snapshot(tmp_path) == {}


def test_email_spool_refuses_a_message_without_message_id(tmp_path: Path) -> None:
    message = EmailMessage()
    message["To"] = "desk@prosecutor.example"
    message["Subject"] = "no id"
    message.set_content("body\n")
    parcel = dataclasses.replace(
        make_parcel(channel=ChannelName.EMAIL), emails=(message.as_bytes(policy=policy.SMTP),)
    )

    with pytest.raises(PermanentChannelError, match="Message-ID"):
        asyncio.run(EmailSpool(LocalOutbox(tmp_path)).send(parcel))
    assert snapshot(tmp_path) == {}


def test_email_spool_refuses_a_slug_that_would_leave_its_folder(tmp_path: Path) -> None:
    parcel = make_parcel(channel=ChannelName.EMAIL, recipient=make_recipient(slug="../x"))

    with pytest.raises(PermanentChannelError, match="safe file name"):
        asyncio.run(EmailSpool(LocalOutbox(tmp_path)).send(parcel))


# --- fax ----------------------------------------------------------------------------------


def test_fax_spool_writes_pdf_and_job_file(tmp_path: Path) -> None:
    outbox = LocalOutbox(tmp_path)
    parcel = make_parcel(pages=3)
    channel = FaxSpool(outbox)

    receipt = asyncio.run(channel.send(parcel))

    assert_spooled(receipt, "fax/dlv-0001.job.json")
    assert [a.path for a in receipt.artefacts] == ["fax/dlv-0001.pdf", "fax/dlv-0001.job.json"]
    assert_artefacts_match(outbox, receipt.artefacts)
    pdf = outbox.read("fax/dlv-0001.pdf")
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == 4  # the cover sheet, then the bundle's 3 pages
    cover = " ".join(reader.pages[0].extract_text().split())
    assert "Pages: 4 including this cover" in cover
    assert "Part " not in cover  # the spool's fax is never split
    assert "Office of the Prosecutor" in cover
    assert "Fax +4420799900011" in cover
    assert "From: Free Voices Network cases@example.org 1 Example Lane" in cover
    assert [page.extract_text().strip() for page in reader.pages[1:]] == ["", "", ""]
    assert receipt.detail == (
        "fax job for +4420799900011 (4 pages with the cover) written as fax/dlv-0001.job.json"
    )
    raw = outbox.read("fax/dlv-0001.job.json")
    job = json.loads(raw.decode("utf-8"))
    assert raw.decode() == json.dumps(job, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert job == {
        "delivery_id": "dlv-0001",
        "bundle_id": "bdl-dlv-0001",
        "to": "+4420799900011",
        "recipient": {
            "case": "free-the-poet",
            "slug": "prosecutor",
            "name": "Office of the Prosecutor",
        },
        "from": "Free Voices Network",
        "pages": 4,
        "bundle_pages": 3,
        "pdf": "fax/dlv-0001.pdf",
        "pdf_sha256": sha(pdf),
        "messages": 128,
        "idempotency_key": "dlv-0001",
    }
    assert asyncio.run(channel.close()) == ()


def test_fax_spool_is_idempotent(tmp_path: Path) -> None:
    outbox = LocalOutbox(tmp_path)
    parcel = make_parcel()
    channel = FaxSpool(outbox)

    first = asyncio.run(channel.send(parcel))
    before = snapshot(tmp_path)
    second = asyncio.run(FaxSpool(outbox).send(parcel))

    assert snapshot(tmp_path) == before
    assert first == second


@pytest.mark.parametrize(
    "number",
    ["", "020 7999 0001", "+0420799900011", "+44207", "+4420799900011\n", "+44207999000111234"],
)
def test_fax_spool_refuses_a_missing_or_malformed_number(tmp_path: Path, number: str) -> None:
    parcel = make_parcel(recipient=make_recipient(fax=number))

    with pytest.raises(PermanentChannelError, match=r"dlv-0001.*free-the-poet/prosecutor"):
        asyncio.run(FaxSpool(LocalOutbox(tmp_path)).send(parcel))
    assert snapshot(tmp_path) == {}


# --- post ---------------------------------------------------------------------------------


def read_manifest(outbox: LocalOutbox, job: str) -> tuple[bytes, list[dict[str, str]]]:
    raw = outbox.read(f"post/{job}/manifest.csv")
    text = raw.decode("utf-8-sig")
    return raw, list(csv.DictReader(io.StringIO(text, newline="")))


def send_all(channel: PostSpool, parcels: list[Parcel]) -> list[Receipt]:
    async def run() -> list[Receipt]:
        return [await channel.send(p) for p in parcels]

    return asyncio.run(run())


def post_parcels() -> list[Parcel]:
    family = make_recipient(
        slug="family",
        kind=RecipientKind.FAMILY,
        name='=HYPERLINK("http://evil.example","click")',
        address=dataclasses.replace(DESK, name="@family", street="-5 Garden Row"),
    )
    return [
        make_parcel("dlv-0003", channel=ChannelName.POST, pages=3, recipient=family),
        make_parcel("dlv-0001", channel=ChannelName.POST, pages=4),
        make_parcel("dlv-0002", channel=ChannelName.POST, pages=1),
    ]


def test_post_spool_writes_envelopes_manifest_and_readme(tmp_path: Path) -> None:
    outbox = LocalOutbox(tmp_path)
    channel = PostSpool(outbox, job_id="job-2024-05-01")
    parcels = post_parcels()

    receipts = send_all(channel, parcels)
    artefacts = asyncio.run(channel.close())

    for parcel, receipt in zip(parcels, receipts, strict=True):
        path = f"post/job-2024-05-01/{parcel.delivery_id}.pdf"
        assert_spooled(receipt, path)
        assert receipt.parts == (
            Part(
                number=1,
                count=1,
                ref=parcel.delivery_id,
                state=DeliveryState.SPOOLED,
                detail="in print job job-2024-05-01",
            ),
        )
        written = PdfReader(io.BytesIO(outbox.read(path)))
        assert len(written.pages) % 2 == 0  # address sheet, blank back, letter, blank
        assert len(written.pages) == 2 + parcel.pages + parcel.pages % 2
    assert [a.path for a in artefacts] == [
        "post/job-2024-05-01/manifest.csv",
        "post/job-2024-05-01/status.csv",
        "post/job-2024-05-01/README.txt",
    ]
    assert_artefacts_match(outbox, artefacts)
    raw, rows = read_manifest(outbox, "job-2024-05-01")
    assert raw.startswith(b"\xef\xbb\xbfenvelope,delivery,bundle,case,")
    assert raw.count(b"\r\n") == 4
    assert [r["envelope"] for r in rows] == ["dlv-0001", "dlv-0002", "dlv-0003"]
    assert [(r["pages"], r["sheets"]) for r in rows] == [("6", "3"), ("4", "2"), ("6", "3")]
    assert [r["weight_g"] for r in rows] == ["25", "20", "25"]  # 5 g a sheet, 10 g the C5
    assert {r["postage_zone"] for r in rows} == {"world"}
    assert {r["envelope_type"] for r in rows} == {"C5"}
    first = rows[0]
    assert first["address"] == (
        "Office of the Prosecutor / 12 Justice Avenue / 10001 Capital City / Examplestan"
    )
    assert first["country"] == "Examplestan"
    assert first["pdf"] == "post/job-2024-05-01/dlv-0001.pdf"
    for row in rows:
        assert row["pdf_sha256"] == sha(outbox.read(row["pdf"]))


def test_post_manifest_escapes_formula_cells(tmp_path: Path) -> None:
    outbox = LocalOutbox(tmp_path)
    channel = PostSpool(outbox, job_id="job-1")

    send_all(channel, post_parcels())
    asyncio.run(channel.close())

    _, rows = read_manifest(outbox, "job-1")
    family = rows[2]
    assert family["recipient_name"] == '\'=HYPERLINK("http://evil.example","click")'
    assert family["address"].startswith("'=HYPERLINK(")  # the addressee block starts with the name
    assert " / @family / -5 Garden Row / " in family["address"]
    assert rows[0]["recipient_name"] == "Office of the Prosecutor"


def test_post_status_template_lists_every_envelope_for_the_mailroom(tmp_path: Path) -> None:
    outbox = LocalOutbox(tmp_path)
    channel = PostSpool(outbox, job_id="job-1")
    family = dataclasses.replace(post_parcels()[0], delivery_id="=dlv-0004")  # a formula id
    send_all(channel, [*post_parcels(), family])
    asyncio.run(channel.close())

    raw = outbox.read("post/job-1/status.csv")
    assert raw.startswith(b"\xef\xbb\xbfenvelope,status,date,tracking_number,reason,signed_by\r\n")
    assert raw.count(b"\r\n") == 5
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert rows[1:] == [
        ["'=dlv-0004", "", "", "", "", ""],
        ["dlv-0001", "", "", "", "", ""],
        ["dlv-0002", "", "", "", "", ""],
        ["dlv-0003", "", "", "", "", ""],
    ]
    readme = outbox.read("post/job-1/README.txt").decode("utf-8")
    assert "status.csv lists every envelope" in readme
    assert "posted, delivered or returned" in readme
    assert "required for returned" in readme


def test_post_readme_counts_and_return_address(tmp_path: Path) -> None:
    outbox = LocalOutbox(tmp_path)
    channel = PostSpool(outbox, job_id="job-1")

    send_all(channel, post_parcels())
    asyncio.run(channel.close())

    readme = outbox.read("post/job-1/README.txt").decode("utf-8")
    assert "3 envelope(s), 16 page(s), 8 sheet(s)" in readme
    assert "A4" in readme
    assert "duplex" in readme
    assert "C5 windowed" in readme
    assert "DIN 5008 form B" in readme
    for line in ORG.address.lines():
        assert line in readme


def test_post_spool_is_idempotent(tmp_path: Path) -> None:
    outbox = LocalOutbox(tmp_path)
    parcels = post_parcels()

    first = PostSpool(outbox, job_id="job-1")
    send_all(first, parcels)
    first_close = asyncio.run(first.close())
    before = snapshot(tmp_path)
    again = PostSpool(outbox, job_id="job-1")
    send_all(again, [*parcels, parcels[0]])
    second_close = asyncio.run(again.close())

    assert snapshot(tmp_path) == before
    assert first_close == second_close


def test_post_spool_refuses_a_recipient_without_address(tmp_path: Path) -> None:
    parcel = make_parcel(channel=ChannelName.POST, recipient=make_recipient(address=None))
    channel = PostSpool(LocalOutbox(tmp_path), job_id="job-1")

    with pytest.raises(PermanentChannelError, match=r"dlv-0001.*free-the-poet/prosecutor"):
        asyncio.run(channel.send(parcel))
    assert asyncio.run(channel.close()) == ()
    assert snapshot(tmp_path) == {}


def test_post_spool_with_no_envelopes_writes_nothing(tmp_path: Path) -> None:
    assert asyncio.run(PostSpool(LocalOutbox(tmp_path), job_id="job-1").close()) == ()
    assert snapshot(tmp_path) == {}


def test_post_spool_refuses_an_unsafe_job_id(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="job id"):
        PostSpool(LocalOutbox(tmp_path), job_id="../elsewhere")


def test_a_bundle_in_envelopes_becomes_one_pdf_and_row_per_envelope(tmp_path: Path) -> None:
    outbox = LocalOutbox(tmp_path)
    channel = PostSpool(outbox, job_id="job-e")
    parcel = make_parcel("dlv-0009", channel=ChannelName.POST, pages=6)
    parcel = dataclasses.replace(parcel, envelopes=((1, 3), (5, 6)))  # page 4: a blank sheet side

    receipt = asyncio.run(channel.send(parcel))
    asyncio.run(channel.close())

    assert [a.path for a in receipt.artefacts] == [
        "post/job-e/dlv-0009-e1.pdf",
        "post/job-e/dlv-0009-e2.pdf",
    ]
    assert [(p.number, p.count, p.ref, p.state) for p in receipt.parts] == [
        (1, 2, "dlv-0009-e1", DeliveryState.SPOOLED),
        (2, 2, "dlv-0009-e2", DeliveryState.SPOOLED),
    ]
    pages = [len(PdfReader(io.BytesIO(outbox.read(a.path))).pages) for a in receipt.artefacts]
    assert pages == [6, 4]  # address sheet and its back first; an even count each
    _, rows = read_manifest(outbox, "job-e")
    assert [(r["envelope"], r["delivery"], r["pages"], r["sheets"]) for r in rows] == [
        ("dlv-0009-e1", "dlv-0009", "6", "3"),
        ("dlv-0009-e2", "dlv-0009", "4", "2"),
    ]
    status = outbox.read("post/job-e/status.csv").decode("utf-8-sig")
    assert [line.split(",")[0] for line in status.splitlines()[1:]] == [
        "dlv-0009-e1",
        "dlv-0009-e2",
    ]


def test_an_envelope_outside_the_bundle_is_refused(tmp_path: Path) -> None:
    channel = PostSpool(LocalOutbox(tmp_path), job_id="job-e")
    parcel = make_parcel("dlv-0010", channel=ChannelName.POST, pages=2)
    parcel = dataclasses.replace(parcel, envelopes=((1, 5),))
    with pytest.raises(PermanentChannelError, match="envelope 1 pages 1-5 are not in the bundle"):
        asyncio.run(channel.send(parcel))


MM = 2.8346  # PDF points in a millimetre


def window_text(pdf: Path, left: float, top: float, width: float, height: float) -> str:
    """The text pdftotext finds in a rectangle (millimetres) of the first page."""
    crop = [str(round(v * MM)) for v in (left, top, width, height)]
    result = subprocess.run(
        ["pdftotext", "-r", "72", "-f", "1", "-l", "1", "-x", crop[0], "-y", crop[1],
         "-W", crop[2], "-H", crop[3], str(pdf), "-"],
        capture_output=True, check=True, text=True,
    )  # fmt: skip
    return result.stdout


def supporter_letter() -> tuple[bytes, int]:
    html = "<p>A letter from Alex Sampleperson of Exampleville.</p>"
    return html_to_pdf(html, templates=SHIPPED_TEMPLATES)


@pytest.mark.parametrize(
    ("envelope", "window"),
    [("C5", (20, 45, 85, 45)), ("DL", (20, 45, 85, 45)), ("US10", (22.225, 63.5, 114.3, 28.575))],
)
def test_the_address_sheet_shows_the_address_in_the_window(
    tmp_path: Path, envelope: str, window: tuple[float, float, float, float]
) -> None:
    outbox = LocalOutbox(tmp_path)
    channel = PostSpool(outbox, job_id="job-w", envelope=envelope)
    letter, pages = supporter_letter()
    recipient = make_recipient(
        name="Ivan Primerov",
        prisoner_number="No. 4521",
        address=Address(
            name="",
            street="ul. Primernaya 1",
            city="Primersk",
            postal_code="123456",
            country="RU",
        ),
    )
    parcel = dataclasses.replace(
        make_parcel("dlv-0020", channel=ChannelName.POST, recipient=recipient),
        pdf=letter,
        pages=pages,
    )

    asyncio.run(channel.send(parcel))
    asyncio.run(channel.close())

    path = tmp_path / "post/job-w/dlv-0020.pdf"
    text = window_text(path, *window)
    assert "Ivan Primerov, No. 4521" in text
    assert "PRIMERSK" in text
    assert "RUSSIAN FEDERATION" in text
    assert "Free Voices Network" in text  # the return line: the organisation's
    assert "1 Example Lane" in text
    assert "Sampleperson" not in text
    reader = PdfReader(io.BytesIO(path.read_bytes()))
    assert len(reader.pages) % 2 == 0
    assert reader.pages[1].extract_text().strip() == ""  # the address sheet's blank back
    assert "Sampleperson" in reader.pages[2].extract_text()
    _, rows = read_manifest(outbox, "job-w")
    assert rows[0]["envelope_type"] == envelope
    assert rows[0]["postage_zone"] == "europe"
    assert rows[0]["weight_g"] == str(int(rows[0]["sheets"]) * 5 + (10 if envelope == "C5" else 5))


def test_domestic_mail_has_no_country_line(tmp_path: Path) -> None:
    outbox = LocalOutbox(tmp_path)
    channel = PostSpool(outbox, job_id="job-d", origin_country="RU")
    where = Address(name="", street="ul. Primernaya 1", city="Primersk", postal_code="123456",
                    country="RU")  # fmt: skip
    parcel = make_parcel(
        "dlv-0021", channel=ChannelName.POST, recipient=make_recipient(address=where)
    )

    asyncio.run(channel.send(parcel))
    asyncio.run(channel.close())

    text = window_text(tmp_path / "post/job-d/dlv-0021.pdf", 20, 45, 85, 45)
    assert "PRIMERSK" in text
    assert "RUSSIAN FEDERATION" not in text
    assert "UNITED KINGDOM" in text  # the return address is abroad
    _, rows = read_manifest(outbox, "job-d")
    assert rows[0]["postage_zone"] == "domestic"


def test_post_spool_refuses_an_unknown_envelope_or_origin(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="envelope type"):
        PostSpool(LocalOutbox(tmp_path), job_id="job-1", envelope="B4")
    with pytest.raises(InputError, match="origin country"):
        PostSpool(LocalOutbox(tmp_path), job_id="job-1", origin_country="Examplestan")
