"""Every fax starts with a cover sheet: read back from the spool, Phaxio and e-mail to fax.

The faxes are the real outputs: the spooled file, the file the fake Phaxio received over
HTTP, the attachment an aiosmtpd server accepted. Each is opened again and its cover read
with pypdf, its drawing operators with pikepdf, its pixels through ``pdftoppm``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import io
import subprocess
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path

import pikepdf
import pytest
from PIL import Image
from pydantic import SecretStr
from pypdf import PageObject, PdfReader

from delivery.channels.base import Parcel
from delivery.channels.fax import (
    FaxSpool,
    bundle_day,
    parts_to_send,
    pdf_day,
    split_pages,
    with_cover,
)
from delivery.channels.fax_email import EmailFax
from delivery.channels.fax_phaxio import PhaxioFax
from delivery.config import FaxSettings, PhaxioSettings, SmtpSettings
from delivery.errors import ChannelSetupError
from delivery.models import (
    Cadence,
    ChannelName,
    Format,
    Recipient,
    RecipientKind,
)
from delivery.outbox import LocalOutbox
from tests.builders import ORG, numbered_pdf
from tests.integration.phaxio_fake import API_KEY, API_SECRET, running_phaxio
from tests.integration.smtp_servers import HOST, Mailbox, server_thread

NUMBER = "+50422201234"
A4 = (595.0, 842.0)
CONTACT = "If this fax is incomplete or reached you in error, please contact cases@example.org"
_PAINT = {"g", "G", "rg", "RG", "k", "K", "sc", "SC", "scn", "SCN"}


def make_parcel(pages: int, **recipient: str) -> Parcel:
    fields: dict[str, str] = {"name": "Minister of Security", "fax": NUMBER, **recipient}
    return Parcel(
        delivery_id="dlv-0042",
        bundle_id="bdl-0042",
        channel=ChannelName.FAX,
        organisation=ORG,
        recipient=Recipient(
            case="honduras-defenders",
            slug="hn-minister-security",
            kind=RecipientKind.AUTHORITY,
            language="en",
            channels=(ChannelName.FAX,),
            format=Format.BUNDLE,
            cadence=Cadence.ONCE,
            **fields,
        ),
        pdf=numbered_pdf(pages),
        pages=pages,
        message_count=128,
        envelope_from="bounces+dlv-0042@bounces.example.org",
    )


def text_of(page: PageObject) -> str:
    """A page's text, its runs of white space made single spaces."""
    return " ".join(page.extract_text().split())


# --- the faxes, as each channel hands them over ------------------------------------------


def spooled(tmp_path: Path, parcel: Parcel) -> list[bytes]:
    outbox = LocalOutbox(tmp_path / "outbox")
    asyncio.run(FaxSpool(outbox).send(parcel))
    return [outbox.read(f"fax/{parcel.delivery_id}.pdf")]


def via_phaxio(tmp_path: Path, parcel: Parcel) -> list[bytes]:
    async def send(base_url: str) -> None:
        channel = PhaxioFax(
            PhaxioSettings(
                api_key=API_KEY, api_secret=SecretStr(API_SECRET), base_url=base_url, timeout=5
            )
        )
        try:
            await channel.send(parcel)
        finally:
            await channel.close()

    with running_phaxio() as fake:
        asyncio.run(send(fake.base_url))
        return [fax.pdf for fax in fake.sent]


def via_email(tmp_path: Path, parcel: Parcel) -> list[bytes]:
    async def send(port: int) -> None:
        smtp = SmtpSettings(host=HOST, port=port, security="none", timeout=10)
        channel = EmailFax(smtp, FaxSettings(gateway="email", email_domain="fax.example.net"))
        try:
            await channel.send(parcel)
        finally:
            await channel.close()

    mailbox = Mailbox()
    with server_thread() as servers:
        asyncio.run(send(servers.mailbox(mailbox)))
    pdfs: list[bytes] = []
    for held in mailbox.held:
        message = email.message_from_bytes(held.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        (attached,) = message.iter_attachments()
        payload = attached.get_content()
        assert isinstance(payload, bytes)
        pdfs.append(payload)
    return pdfs


@pytest.mark.parametrize(
    ("channel", "fax_pages"),
    [
        (spooled, [61]),  # one fax: the cover and the whole bundle
        (via_phaxio, [50, 12]),  # Phaxio's limit of 50 pages, the cover included
        (via_email, [25, 25, 13]),  # the e-mail gateway's 25: 24 + 24 + 12 bundle pages
    ],
    ids=["spool", "phaxio", "email"],
)
def test_every_fax_starts_with_a_cover_that_counts_its_pages_and_names_its_part(
    tmp_path: Path, channel: Callable[[Path, Parcel], list[bytes]], fax_pages: list[int]
) -> None:
    faxes = channel(tmp_path, make_parcel(60))

    readers = [PdfReader(io.BytesIO(fax)) for fax in faxes]
    assert [len(reader.pages) for reader in readers] == fax_pages
    carried: list[int] = []
    for number, reader in enumerate(readers, start=1):
        cover = text_of(reader.pages[0])
        pages = len(reader.pages)
        assert cover.startswith("FAX")
        assert f"Pages: {pages} including this cover" in cover
        if len(readers) > 1:
            assert f"Part {number} of {len(readers)}" in cover
            assert (
                f"pages {len(carried) + 1}–{len(carried) + pages - 1} of the bundle's 60" in cover
            )
        else:
            assert "Part " not in cover
        assert "Minister of Security" in cover
        assert f"Fax {NUMBER}" in cover
        assert "Free Voices Network" in cover
        assert "1 Example Lane" in cover
        assert "Case honduras-defenders, 128 messages" in cover
        assert "delivery dlv-0042" in cover
        assert "bundle bdl-0042" in cover
        assert CONTACT in cover
        for page in reader.pages:
            width, height = float(page.mediabox.width), float(page.mediabox.height)
            assert abs(width - A4[0]) <= 1  # A4 portrait
            assert abs(height - A4[1]) <= 1
        bundle = [text_of(page) for page in reader.pages[1:]]
        carried += [int(text.removeprefix("Page ")) for text in bundle]
    assert carried == list(range(1, 61))  # every bundle page once, in order


def test_the_second_of_two_faxes_says_part_2_of_2() -> None:
    parcel = make_parcel(60)
    count, parts = parts_to_send(parcel, 50)
    fax = with_cover(parcel, parts[1], day=date(2026, 12, 15))

    cover = text_of(PdfReader(io.BytesIO(fax)).pages[0])
    assert count == 2
    assert "Pages: 12 including this cover" in cover
    assert "Part 2 of 2" in cover
    assert "This part: pages 50–60 of the bundle's 60 pages" in cover
    assert "Date: 2026-12-15" in cover


def test_a_part_of_one_page_says_page_not_pages() -> None:
    parcel = make_parcel(3)
    _, parts = parts_to_send(parcel, 2)
    cover = text_of(PdfReader(io.BytesIO(with_cover(parcel, parts[2]))).pages[0])
    assert "This part: page 3 of the bundle's 3 pages" in cover


# --- black on white ----------------------------------------------------------------------


def cover_only(fax: bytes) -> bytes:
    with pikepdf.Pdf.open(io.BytesIO(fax)) as whole, pikepdf.Pdf.new() as out:
        out.pages.append(whole.pages[0])
        buffer = io.BytesIO()
        out.save(buffer)
        return buffer.getvalue()


def test_the_cover_is_black_on_white_with_no_grey_no_colour_and_no_image(tmp_path: Path) -> None:
    parcel = make_parcel(2)
    (part,) = split_pages(parcel.pdf, 49)
    fax = with_cover(parcel, part, day=date(2026, 12, 15))

    with pikepdf.Pdf.open(io.BytesIO(fax)) as pdf:
        cover = pdf.pages[0]
        paints = [
            (str(op), [Decimal(str(v)) for v in operands])
            for operands, op in pikepdf.parse_content_stream(cover)
            if str(op) in _PAINT
        ]
        xobjects = cover.obj.Resources.get("/XObject", {})
        subtypes = {str(xobjects[name].get("/Subtype")) for name in xobjects}
    assert paints  # it draws: text and rules
    for op, values in paints:
        assert op in {"g", "G", "rg", "RG"}, op  # grey or RGB, never CMYK or a pattern
        assert len(set(values)) == 1, (op, values)  # no colour
        assert values[0] in {0, 1}, (op, values)  # #000 or #fff, no grey
    assert "/Image" not in subtypes

    (tmp_path / "cover.pdf").write_bytes(cover_only(fax))
    subprocess.run(
        ["pdftoppm", "-r", "50", "-png", "-singlefile", "cover.pdf", "cover"],
        cwd=tmp_path, check=True, capture_output=True,
    )  # fmt: skip
    with Image.open(tmp_path / "cover.png") as image:
        rgb = image.convert("RGB")
        width, height = rgb.size
        assert abs(width - 413) <= 1  # A4 portrait at 50 dpi
        assert abs(height - 585) <= 1
        colours = rgb.getcolors(maxcolors=1 << 20)
    assert colours is not None
    assert all(r == g == b for _, (r, g, b) in colours)  # no colour anywhere
    darkest = min(r for _, (r, _, _) in colours)
    black = sum(n for n, (r, _, _) in colours if r < 64)
    assert darkest == 0
    assert black > 2000  # large black type and rules, not a blank page


# --- what the cover says, and what it does not do ----------------------------------------


def test_every_value_on_the_cover_is_data_not_markup() -> None:
    parcel = make_parcel(1, name='<b>Minister</b> {{ 7*7 }} & "Security"')
    (part,) = split_pages(parcel.pdf, 49)
    fax = with_cover(parcel, part, day=date(2026, 12, 15))

    cover = text_of(PdfReader(io.BytesIO(fax)).pages[0])
    assert '<b>Minister</b> {{ 7*7 }} & "Security"' in cover
    assert "49" not in cover


def test_a_long_name_stays_on_the_one_cover_page() -> None:
    parcel = make_parcel(2, name="Office of the Minister of Security and Public Order " * 30)
    (part,) = split_pages(parcel.pdf, 49)
    fax = with_cover(parcel, part, day=date(2026, 12, 15))

    reader = PdfReader(io.BytesIO(fax))
    assert len(reader.pages) == 3
    assert "Pages: 3 including this cover" in text_of(reader.pages[0])
    assert [text_of(page) for page in reader.pages[1:]] == ["Page 1", "Page 2"]


def test_a_cover_template_that_cannot_be_rendered_stops_the_channel(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "fax_cover.html.j2").write_text("{{ cover.no_such_field }}")
    parcel = make_parcel(1)
    (part,) = split_pages(parcel.pdf, 49)

    with pytest.raises(ChannelSetupError, match=r"dlv-0042.*fax_cover\.html\.j2:1"):
        with_cover(parcel, part, templates=templates)


# --- the spool's one fax -----------------------------------------------------------------


def dated_pdf(pages: int, created: str) -> bytes:
    with pikepdf.Pdf.open(io.BytesIO(numbered_pdf(pages))) as pdf:
        pdf.docinfo["/CreationDate"] = created
        out = io.BytesIO()
        pdf.save(out)
        return out.getvalue()


def test_the_spool_dates_its_cover_with_the_bundle_and_writes_the_same_bytes_again(
    tmp_path: Path,
) -> None:
    outbox = LocalOutbox(tmp_path)
    parcel = dataclasses.replace(make_parcel(3), pdf=dated_pdf(3, "D:20261215233000-02'00'"))

    receipt = asyncio.run(FaxSpool(outbox).send(parcel))
    first = outbox.read("fax/dlv-0042.pdf")
    asyncio.run(FaxSpool(outbox).send(parcel))

    assert outbox.read("fax/dlv-0042.pdf") == first
    cover = text_of(PdfReader(io.BytesIO(first)).pages[0])
    assert "Date: 2026-12-16" in cover  # 23:30 at UTC-2 is the next day in UTC
    assert "Pages: 4 including this cover" in cover
    assert "(4 pages with the cover)" in receipt.detail


@pytest.mark.parametrize(
    ("value", "day"),
    [
        ("D:20261215100000Z", date(2026, 12, 15)),
        ("D:20261215233000-02'00'", date(2026, 12, 16)),
        ("D:20261216013000+02'00'", date(2026, 12, 15)),
        ("D:20261215", date(2026, 12, 15)),
        ("D:20261340", None),
        ("15 December 2026", None),
    ],
)
def test_a_pdf_date_is_read_as_its_utc_day(value: str, day: date | None) -> None:
    assert pdf_day(value) == day


def test_a_bundle_without_a_creation_date_has_no_day() -> None:
    assert bundle_day(numbered_pdf(1)) is None
    assert bundle_day(b"%PDF-1.7 not really") is None


# --- the cut: a part holds at most the limit, its cover included ---------------------------


@pytest.mark.parametrize(
    ("pages", "limit", "spans"),
    [
        (49, 50, [(1, 49)]),  # 49 pages and the cover: exactly 50
        (50, 50, [(1, 49), (50, 50)]),
        (60, 50, [(1, 49), (50, 60)]),
        (5, 2, [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]),
    ],
)
def test_each_fax_holds_at_most_the_limit_with_its_cover(
    pages: int, limit: int, spans: list[tuple[int, int]]
) -> None:
    count, parts = parts_to_send(make_parcel(pages), limit)

    assert count == len(spans)
    assert [(p.first, p.last) for p in parts] == spans
    assert {p.count for p in parts} == {count}
    assert all(p.fax_pages <= limit for p in parts)
    assert all(len(PdfReader(io.BytesIO(p.pdf)).pages) == p.pages for p in parts)


def test_a_retry_sends_the_same_pages_under_the_same_part_numbers() -> None:
    parcel = make_parcel(130)
    _, first = parts_to_send(parcel, 50)
    _, retry = parts_to_send(dataclasses.replace(parcel, sent_parts=frozenset({1, 3})), 50)

    assert [(p.number, p.first, p.last) for p in first] == [(1, 1, 49), (2, 50, 98), (3, 99, 130)]
    assert [(p.number, p.first, p.last, p.pdf) for p in retry] == [(2, 50, 98, first[1].pdf)]


def test_a_limit_of_one_page_leaves_no_room_for_the_bundle() -> None:
    with pytest.raises(ChannelSetupError, match="no room for the bundle after the cover"):
        parts_to_send(make_parcel(3), 1)
