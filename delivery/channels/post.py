"""The post spool: one print job per run, for a mailroom or a print-and-post service.

Nothing leaves the machine. Each parcel becomes an envelope PDF in ``post/<job>/``; close()
adds ``manifest.csv`` (one row per envelope, safe to open in a spreadsheet),
``status.csv`` (the same envelopes, for the mailroom to say what became of each; read back
by :mod:`delivery.tracking.post`) and ``README.txt`` (what to print, the return address,
how to fill in the status file). Re-sending a parcel rewrites the same envelope and
replaces its rows, so files and rows stay the same.

Each envelope is a part of its delivery (:class:`~delivery.models.Part`), known by its
envelope id, so the post office's word about one envelope moves that envelope only.

Every envelope PDF starts with an A4 address sheet whose address block sits in the window
of the job's envelope type (DIN 5008 form B for C5 and DL, the common US #10 window
layout for US10), with a blank back so the letter starts on a new sheet. Every PDF has
an even page count, so printed duplex, no envelope shares a sheet with the next.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pikepdf
from jinja2.sandbox import SandboxedEnvironment

from delivery.address import (
    EnvelopeType,
    country_code,
    envelope_type,
    estimated_weight_g,
    postage_zone,
    postal_lines,
)
from delivery.channels.base import Parcel, Receipt
from delivery.config import SHIPPED_TEMPLATES
from delivery.errors import InputError, PermanentChannelError
from delivery.models import (
    Address,
    ChannelName,
    DeliveryState,
    Organisation,
    Part,
    ProofLevel,
    Recipient,
)
from delivery.outbox import Artefact, Outbox
from delivery.render.env import make_environment, render_template

MANIFEST_COLUMNS = (
    "envelope",
    "delivery",
    "bundle",
    "case",
    "recipient",
    "recipient_name",
    "address",
    "country",
    "sheets",
    "pages",
    "weight_g",
    "postage_zone",
    "envelope_type",
    "pdf",
    "pdf_sha256",
)
# What the mailroom fills in, one row per envelope: see readme_document and tracking/post.py.
STATUS_COLUMNS = ("envelope", "status", "date", "tracking_number", "reason", "signed_by")
ADDRESS_SHEET_TEMPLATE = "address_sheet.html.j2"
_LONG_BLOCK = 6  # address blocks longer than this are set smaller to fit the window
# A spreadsheet reads a cell starting with one of these as a formula.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# One path component: no separators, no control characters, no leading dot.
_COMPONENT = re.compile(r"[^/\\.\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]*")


@dataclass(frozen=True, kw_only=True)
class _Envelope:
    envelope_id: str  # the delivery id, with -e<k> when a delivery needs several envelopes
    delivery_id: str
    bundle_id: str
    case: str
    recipient: str
    recipient_name: str
    address: Address
    envelope_lines: tuple[str, ...]
    pages: int  # every page of the PDF: address sheet, its blank back, the letter
    postage_zone: str
    envelope_type: str
    pdf: str
    pdf_sha256: str

    @property
    def sheets(self) -> int:
        """Sheets of paper when printed on both sides, the address sheet included."""
        return (self.pages + 1) // 2

    @property
    def weight_g(self) -> int:
        return estimated_weight_g(self.sheets, self.envelope_type)

    def row(self) -> tuple[str, ...]:
        cells = (
            self.envelope_id,
            self.delivery_id,
            self.bundle_id,
            self.case,
            self.recipient,
            self.recipient_name,
            " / ".join(self.envelope_lines),
            self.address.country,
            str(self.sheets),
            str(self.pages),
            str(self.weight_g),
            self.postage_zone,
            self.envelope_type,
            self.pdf,
            self.pdf_sha256,
        )
        return tuple(spreadsheet_safe(cell) for cell in cells)


def spreadsheet_safe(text: str) -> str:
    """Prefix ``'`` to a cell a spreadsheet would otherwise run as a formula."""
    return f"'{text}" if text.startswith(_FORMULA_STARTS) else text


def _who(parcel: Parcel) -> str:
    recipient = parcel.recipient
    return f"delivery {parcel.delivery_id} to {recipient.case}/{recipient.slug}"


def _envelope_pdfs(parcel: Parcel) -> list[tuple[str, bytes, int]]:
    """(envelope id, PDF, pages) per envelope: the whole bundle, or each page range."""
    if not parcel.envelopes:
        return [(parcel.delivery_id, parcel.pdf, parcel.pages)]
    pieces: list[tuple[str, bytes, int]] = []
    with pikepdf.Pdf.open(io.BytesIO(parcel.pdf)) as whole:
        for number, (first, last) in enumerate(parcel.envelopes, start=1):
            if not 1 <= first <= last <= len(whole.pages):
                raise PermanentChannelError(
                    f"{_who(parcel)}: envelope {number} pages {first}-{last} are not in the bundle"
                )
            with pikepdf.Pdf.new() as part:
                part.pages.extend(whole.pages[first - 1 : last])
                out = io.BytesIO()
                part.save(out, deterministic_id=True)
            pieces.append((f"{parcel.delivery_id}-e{number}", out.getvalue(), last - first + 1))
    return pieces


def name_lines(recipient: Recipient) -> tuple[str, ...]:
    """The addressee above the address: the person (with a prisoner's number), the facility."""
    first = f"{recipient.name}, {recipient.prisoner_number}"
    lines = (first if recipient.prisoner_number else recipient.name, recipient.facility)
    return tuple(line for line in lines if line)


def return_line(sender: Organisation, destination: str) -> str:
    """The organisation's return address on one line, with its country for mail abroad."""
    lines = postal_lines((sender.name,), sender.address, origin_country=destination)
    return " · ".join(lines)


@dataclass(frozen=True, kw_only=True)
class AddressSheet:
    """What goes on an envelope's address sheet."""

    reference: str  # the envelope id, so the mailroom can match sheet and manifest row
    language: str
    lines: tuple[str, ...]
    return_line: str


def address_sheet_html(env: SandboxedEnvironment, sheet: AddressSheet, kind: EnvelopeType) -> str:
    return render_template(
        env,
        ADDRESS_SHEET_TEMPLATE,
        language=sheet.language,
        reference=sheet.reference,
        lines=sheet.lines,
        long=len(sheet.lines) > _LONG_BLOCK,
        return_line=sheet.return_line,
        css_class=kind.css_class,
        folds_mm=kind.folds_mm,
        envelope=kind.code,
        standard=kind.standard,
    )


def with_address_sheet(sheet_pdf: bytes, letter_pdf: bytes) -> tuple[bytes, int]:
    """Address sheet, its blank back, the letter, and a blank last page to an even count."""
    with (
        pikepdf.Pdf.open(io.BytesIO(sheet_pdf)) as sheet,
        pikepdf.Pdf.open(io.BytesIO(letter_pdf)) as letter,
        pikepdf.Pdf.new() as out,
    ):
        if len(sheet.pages) != 1:
            raise PermanentChannelError(f"the address sheet came out as {len(sheet.pages)} pages")
        out.pages.append(sheet.pages[0])
        box = sheet.pages[0].mediabox
        size = (float(box[2]) - float(box[0]), float(box[3]) - float(box[1]))
        out.add_blank_page(page_size=size)
        out.pages.extend(letter.pages)
        if len(out.pages) % 2:
            out.add_blank_page(page_size=size)
        buffer = io.BytesIO()
        out.save(buffer, deterministic_id=True)
        return buffer.getvalue(), len(out.pages)


def _check_parcel(parcel: Parcel) -> Address:
    if parcel.recipient.address is None:
        raise PermanentChannelError(f"{_who(parcel)}: the recipient has no postal address")
    if not _COMPONENT.fullmatch(parcel.delivery_id):
        raise PermanentChannelError(f"{_who(parcel)}: the delivery id is not a safe file name")
    if not parcel.pdf.startswith(b"%PDF-"):
        raise PermanentChannelError(f"{_who(parcel)}: the parcel's bundle is not a PDF")
    if parcel.pages < 1:
        raise PermanentChannelError(f"{_who(parcel)}: the bundle has {parcel.pages} pages")
    return parcel.recipient.address


def csv_document(rows: Sequence[Sequence[str]]) -> bytes:
    """Rows as a spreadsheet reads them: UTF-8 with a byte-order mark, CRLF line ends."""
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue().encode("utf-8-sig")


def manifest_document(envelopes: Sequence[_Envelope]) -> bytes:
    """The manifest: one row per envelope, sorted by envelope."""
    ordered = sorted(envelopes, key=lambda e: e.delivery_id)
    return csv_document([MANIFEST_COLUMNS, *(envelope.row() for envelope in ordered)])


def status_document(envelopes: Sequence[_Envelope]) -> bytes:
    """The status file to fill in: every envelope listed, sorted as the manifest, the rest blank."""
    ordered = sorted(envelopes, key=lambda e: e.delivery_id)
    blanks = ("",) * (len(STATUS_COLUMNS) - 1)
    return csv_document(
        [STATUS_COLUMNS, *((spreadsheet_safe(e.envelope_id), *blanks) for e in ordered)]
    )


def readme_document(job_id: str, envelopes: Sequence[_Envelope], sender: Organisation) -> bytes:
    """What a person at the printer needs to know about the job."""
    sender_lines = sender.address.lines()
    if sender.address.name != sender.name:
        sender_lines = (sender.name, *sender_lines)
    sheets = sum(e.sheets for e in envelopes)
    pages = sum(e.pages for e in envelopes)
    kind = envelope_type(envelopes[0].envelope_type if envelopes else "C5")
    lines = [
        f"Print job {job_id}",
        "",
        f"{len(envelopes)} envelope(s), {pages} page(s), {sheets} sheet(s) of paper.",
        "",
        "Print every PDF in this folder on A4, duplex (both sides, long edge).",
        "Each PDF is one envelope. Its first page is the address sheet, with a blank",
        "back, so the letter starts on a new sheet; every PDF has an even number of",
        "pages, so printed duplex no envelope shares a sheet with the next.",
        "",
        f"Envelopes: {kind.code} windowed, address sheet laid out for {kind.standard}.",
        "Fold at the marks on the left edge, address sheet on top and facing the window,",
        "and post each PDF in its own envelope. manifest.csv lists every envelope with",
        "its address, page and sheet count, estimated weight, postage zone, envelope",
        "type and the SHA-256 of its PDF.",
        "",
        "Return address (sender):",
        *(f"    {line}" for line in sender_lines),
        "",
        *_STATUS_HELP,
    ]
    return "\n".join(lines).encode()


_STATUS_HELP = (
    "What became of each envelope: status.csv lists every envelope. Fill in a row",
    "when the envelope is posted, and again when the post office says more; leave",
    "the status empty while there is nothing to say. Then hand the file back, to be",
    "read with `solidarity post mark status.csv` (the same file twice is harmless).",
    "",
    "    envelope         the envelope id, as on the address sheet (already filled in)",
    "    status           posted, delivered or returned",
    "    date             when, as 2024-05-31 or 2024-05-31T14:05 (optional)",
    "    tracking_number  the post office's number for a tracked envelope (optional)",
    "    reason           why it came back; required for returned, e.g.",
    "                     addressee unknown, moved, refused",
    "    signed_by        who signed for it on delivery, when someone did (optional)",
    "",
    "Save it as CSV (UTF-8); commas or semicolons both work. A file with a mistake is",
    "refused whole, each mistake named by line, and nothing is recorded until it is",
    "fixed.",
    "",
)


class PostSpool:
    """Collects one print job per run in ``post/<job_id>/``."""

    name = ChannelName.POST

    def __init__(
        self,
        outbox: Outbox,
        *,
        job_id: str,
        templates: Path = SHIPPED_TEMPLATES,
        envelope: str = "C5",
        origin_country: str = "GB",
    ) -> None:
        if not _COMPONENT.fullmatch(job_id):
            raise InputError(f"print job id {job_id!r} is not a safe folder name")
        try:
            self._envelope_type = envelope_type(envelope)
        except ValueError as error:
            raise InputError(str(error)) from error
        origin = country_code(origin_country)
        if origin is None:
            raise InputError(f"origin country {origin_country!r} is not a known country")
        self._origin = origin
        self._templates = templates
        self._env = make_environment(templates)
        self._outbox = outbox
        self._job_id = job_id
        self._envelopes: dict[str, _Envelope] = {}
        self._sender: Organisation | None = None

    def _check_sender(self, parcel: Parcel) -> None:
        if self._sender is not None and parcel.organisation != self._sender:
            raise PermanentChannelError(
                f"{_who(parcel)}: print job {self._job_id} already carries the return "
                f"address of {self._sender.name}, not {parcel.organisation.name}"
            )

    async def send(self, parcel: Parcel) -> Receipt:
        address = _check_parcel(parcel)
        self._check_sender(parcel)
        self._sender = parcel.organisation
        pieces = await asyncio.to_thread(_envelope_pdfs, parcel)
        artefacts: list[Artefact] = []
        for envelope_id, letter, _ in pieces:
            pdf, pages = await self._envelope_pdf(parcel, address, envelope_id, letter)
            path = f"post/{self._job_id}/{envelope_id}.pdf"
            artefact = await asyncio.to_thread(self._outbox.write, path, pdf)
            artefacts.append(artefact)
            self._envelopes[envelope_id] = _Envelope(
                envelope_id=envelope_id,
                delivery_id=parcel.delivery_id,
                bundle_id=parcel.bundle_id,
                case=parcel.recipient.case,
                recipient=parcel.recipient.slug,
                recipient_name=parcel.recipient.name,
                address=address,
                envelope_lines=parcel.recipient.envelope_lines(),
                pages=pages,
                postage_zone=postage_zone(self._origin, address.country),
                envelope_type=self._envelope_type.code,
                pdf=artefact.path,
                pdf_sha256=artefact.sha256,
            )
        count = len(pieces)
        return Receipt(
            state=DeliveryState.SPOOLED,
            proof=ProofLevel.NONE,
            provider_ref=artefacts[0].path,
            detail=f"{count} envelope{'s' if count != 1 else ''} added to print job {self._job_id}",
            artefacts=tuple(artefacts),
            parts=_parts(pieces, self._job_id),
        )

    async def _envelope_pdf(
        self, parcel: Parcel, address: Address, envelope_id: str, letter: bytes
    ) -> tuple[bytes, int]:
        """The envelope's PDF (address sheet first) and its page count."""
        sheet = AddressSheet(
            reference=envelope_id,
            language=parcel.recipient.language or "en",
            lines=postal_lines(name_lines(parcel.recipient), address, origin_country=self._origin),
            return_line=return_line(parcel.organisation, address.country),
        )
        html = address_sheet_html(self._env, sheet, self._envelope_type)
        from delivery.render.pdf import html_to_pdf  # WeasyPrint loads only to render

        sheet_pdf, _ = await asyncio.to_thread(html_to_pdf, html, templates=self._templates)
        return await asyncio.to_thread(with_address_sheet, sheet_pdf, letter)

    async def close(self) -> tuple[Artefact, ...]:
        if not self._envelopes or self._sender is None:
            return ()
        envelopes = sorted(self._envelopes.values(), key=lambda e: e.envelope_id)
        folder = f"post/{self._job_id}"
        files = {
            "manifest.csv": manifest_document(envelopes),
            "status.csv": status_document(envelopes),
            "README.txt": readme_document(self._job_id, envelopes, self._sender),
        }
        return await asyncio.to_thread(self._write_job, folder, files)

    def _write_job(self, folder: str, files: dict[str, bytes]) -> tuple[Artefact, ...]:
        return tuple(self._outbox.write(f"{folder}/{name}", data) for name, data in files.items())


def _parts(pieces: Sequence[tuple[str, bytes, int]], job_id: str) -> tuple[Part, ...]:
    """One part per envelope, known by its envelope id, all of them spooled.

    An envelope an earlier attempt already spooled (``Parcel.sent_parts``) is written again
    unchanged, so every envelope is listed: the job holds them all.
    """
    return tuple(
        Part(
            number=number,
            count=len(pieces),
            ref=envelope_id,
            state=DeliveryState.SPOOLED,
            detail=f"in print job {job_id}",
        )
        for number, (envelope_id, _, _) in enumerate(pieces, start=1)
    )
