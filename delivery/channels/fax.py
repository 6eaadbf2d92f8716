"""The fax spool: a fax-ready PDF and a job file in the outbox; what every fax channel shares.

Nothing leaves the machine. ``fax/<delivery>.pdf`` is a cover sheet followed by the bundle
as rendered, and ``fax/<delivery>.job.json`` says where it goes, from whom and how many
pages (the cover included), so a person or a later gateway can send it. The spool dates
the cover with the bundle's own creation date when the PDF records one, so re-sending a
parcel rewrites both files with the same bytes.

Every fax starts with a cover sheet (:func:`with_cover`, ``templates/fax_cover.html.j2``):
to whom, from whom, the date, the case, "Pages: N including this cover", which part of
how many when the bundle was split, the delivery and bundle ids, and whom to tell when
the fax came in incomplete. It is black on white and A4 portrait, like the bundle.

The gateways (:mod:`delivery.channels.fax_phaxio`, :mod:`delivery.channels.fax_email`)
use the same number check (:func:`checked_number`) and the same cut of a long bundle
(:func:`parts_to_send`). A gateway limit of *m* pages counts the cover, so each fax
carries at most *m - 1* pages of the bundle: part *k* is always bundle pages
``(k-1)*(m-1) + 1`` to ``k*(m-1)``, so a retry that skips the parts already handed over
sends exactly the pages that are missing, as long as the page limit did not change in
between.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pikepdf
from jinja2.sandbox import SandboxedEnvironment

from delivery.channels.base import Parcel, Receipt
from delivery.config import SHIPPED_TEMPLATES
from delivery.errors import ChannelSetupError, PermanentChannelError, RenderError
from delivery.models import ChannelName, DeliveryState, ProofLevel
from delivery.outbox import Artefact, Outbox
from delivery.render.env import make_environment, render_template

E164 = re.compile(r"\+[1-9]\d{7,14}")
FAX_COVER_TEMPLATE = "fax_cover.html.j2"
COVER_PAGES = 1  # every fax starts with one cover sheet
# A PDF date: D:YYYYMMDDHHmmSS, then Z or an offset such as +02'00'.
_PDF_DATE = re.compile(
    r"D:(\d{4})(\d{2})(\d{2})(\d{2})?(\d{2})?(\d{2})?(?:(Z)|([+-])(\d{2})'?(\d{2})?'?)?"
)
# One path component: no separators, no control characters, no leading dot.
_COMPONENT = re.compile(r"[^/\\.\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]*")


def _who(parcel: Parcel) -> str:
    recipient = parcel.recipient
    return f"delivery {parcel.delivery_id} to {recipient.case}/{recipient.slug}"


def checked_number(parcel: Parcel) -> str:
    """The recipient's fax number, once it is in E.164 form; the error names the recipient."""
    number = parcel.recipient.fax
    if not number:
        raise PermanentChannelError(f"{_who(parcel)}: the recipient has no fax number")
    if not E164.fullmatch(number):
        raise PermanentChannelError(
            f"{_who(parcel)}: fax number {number!r} is not in E.164 form (+<country><number>)"
        )
    return number


@dataclass(frozen=True, kw_only=True)
class FaxPart:
    """One fax of a bundle cut at the gateway's page limit: pages ``first`` to ``last``."""

    number: int  # 1-based
    count: int
    first: int  # 1-based page of the bundle
    last: int
    total: int  # pages in the whole bundle
    pdf: bytes

    @property
    def pages(self) -> int:
        """Pages of the bundle in this part."""
        return self.last - self.first + 1

    @property
    def fax_pages(self) -> int:
        """Pages of the fax that carries this part: its cover sheet and its bundle pages."""
        return self.pages + COVER_PAGES


def _cut(whole: pikepdf.Pdf, start: int, stop: int) -> bytes:
    """Pages ``start`` to ``stop - 1`` (0-based) of ``whole`` as a PDF of their own."""
    with pikepdf.Pdf.new() as part:
        part.pages.extend(whole.pages[start:stop])
        out = io.BytesIO()
        part.save(out)
        return out.getvalue()


def split_pages(pdf: bytes, max_pages: int) -> list[FaxPart]:
    """The bundle in parts of at most ``max_pages`` of its pages (one, unchanged, when it fits).

    The cover sheet is not counted here: :func:`parts_to_send` leaves room for it.
    """
    if not pdf.startswith(b"%PDF-"):
        raise PermanentChannelError("the parcel's bundle is not a PDF")
    try:
        with pikepdf.Pdf.open(io.BytesIO(pdf)) as whole:
            total = len(whole.pages)
            if not total:
                return []
            if total <= max_pages:
                return [FaxPart(number=1, count=1, first=1, last=total, total=total, pdf=pdf)]
            starts = range(0, total, max_pages)
            return [
                FaxPart(
                    number=number,
                    count=len(starts),
                    first=start + 1,
                    last=min(start + max_pages, total),
                    total=total,
                    pdf=_cut(whole, start, start + max_pages),
                )
                for number, start in enumerate(starts, start=1)
            ]
    except pikepdf.PdfError as exc:
        raise PermanentChannelError(f"the parcel's bundle cannot be read: {exc}") from exc


def split_pdf(pdf: bytes, max_pages: int) -> list[bytes]:
    """The bundle in parts of at most ``max_pages`` pages each (unchanged when it fits)."""
    return [part.pdf for part in split_pages(pdf, max_pages)]


def whole_bundle(parcel: Parcel) -> FaxPart:
    """The whole bundle as the one part of a fax that is not split (the spool's)."""
    try:
        with pikepdf.Pdf.open(io.BytesIO(parcel.pdf)) as whole:
            total = len(whole.pages)
    except pikepdf.PdfError as exc:
        raise PermanentChannelError(
            f"{_who(parcel)}: the parcel's bundle cannot be read: {exc}"
        ) from exc
    if not total:
        raise PermanentChannelError(f"{_who(parcel)}: the bundle has no pages")
    return FaxPart(number=1, count=1, first=1, last=total, total=total, pdf=parcel.pdf)


def parts_to_send(parcel: Parcel, max_pages: int) -> tuple[int, list[FaxPart]]:
    """How many parts the bundle makes, and those not handed over by an earlier attempt.

    ``max_pages`` is the gateway's limit for one fax, its cover sheet included, so each
    part holds at most ``max_pages - 1`` pages of the bundle. Raises ChannelSetupError
    when that leaves no room for the bundle, and when an earlier attempt sent a part
    number the bundle no longer has: the page limit was changed between attempts, and
    the cut moved with it.
    """
    who = _who(parcel)
    per_fax = max_pages - COVER_PAGES
    if per_fax < 1:
        raise ChannelSetupError(
            f"{who}: a fax limit of {max_pages} page(s) leaves no room for the bundle after "
            f"the cover sheet; set it to {COVER_PAGES + 1} or more"
        )
    try:
        parts = split_pages(parcel.pdf, per_fax)
    except PermanentChannelError as exc:
        raise PermanentChannelError(f"{who}: {exc}") from exc
    if not parts:
        raise PermanentChannelError(f"{who}: the bundle has no pages")
    count = len(parts)
    beyond = sorted(n for n in parcel.sent_parts if not 1 <= n <= count)
    if beyond:
        raise ChannelSetupError(
            f"{who}: part {beyond[0]} was handed over earlier, but the bundle now makes "
            f"{count} part(s) of a cover sheet and at most {per_fax} pages; the page limit "
            "changed between attempts, so the parts already sent cannot be told apart from "
            "the rest"
        )
    return count, [p for p in parts if p.number not in parcel.sent_parts]


# --- the cover sheet ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FaxCover:
    """What a fax's cover sheet says: campaign data and counts, never a supporter's."""

    to_name: str
    to_number: str  # E.164
    sender: str
    sender_email: str
    sender_lines: tuple[str, ...]  # the organisation's postal address
    date: str  # ISO 8601, UTC
    case: str  # the case slug
    messages: int
    pages: int  # of this fax, the cover included
    part: int
    parts: int
    first: int  # the bundle pages this fax carries
    last: int
    total: int
    delivery_id: str
    bundle_id: str


def fax_cover(parcel: Parcel, part: FaxPart, day: date) -> FaxCover:
    """The cover sheet of ``part``, a fax dated ``day``."""
    org = parcel.organisation
    address = org.address.lines()
    if address and address[0] == org.name:
        address = address[1:]
    return FaxCover(
        to_name=parcel.recipient.name,
        to_number=parcel.recipient.fax,
        sender=org.name,
        sender_email=org.email,
        sender_lines=address,
        date=day.isoformat(),
        case=parcel.recipient.case,
        messages=parcel.message_count,
        pages=part.fax_pages,
        part=part.number,
        parts=part.count,
        first=part.first,
        last=part.last,
        total=part.total,
        delivery_id=parcel.delivery_id,
        bundle_id=parcel.bundle_id,
    )


def pdf_day(value: str) -> date | None:
    """The UTC day of a PDF date string (``D:20261215100000Z``), or ``None``."""
    found = _PDF_DATE.match(value)
    if found is None:
        return None
    year, month, day, hour, minute, second, zulu, sign, off_h, off_m = found.groups()
    try:
        when = datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0),
            int(second or 0), tzinfo=UTC,
        )  # fmt: skip
    except ValueError:
        return None
    if sign and not zulu:
        offset = timedelta(hours=int(off_h), minutes=int(off_m or 0))
        when = when - offset if sign == "+" else when + offset
    return when.date()


def bundle_day(pdf: bytes) -> date | None:
    """The UTC day the bundle PDF says it was created, if it says."""
    try:
        with pikepdf.Pdf.open(io.BytesIO(pdf)) as whole:
            created = whole.docinfo.get("/CreationDate")
            return pdf_day(str(created)) if created is not None else None
    except pikepdf.PdfError:
        return None


def _join(cover_pdf: bytes, part_pdf: bytes) -> bytes:
    """The cover's one page, then every page of the part."""
    with (
        pikepdf.Pdf.open(io.BytesIO(cover_pdf)) as cover,
        pikepdf.Pdf.open(io.BytesIO(part_pdf)) as part,
        pikepdf.Pdf.new() as out,
    ):
        if len(cover.pages) != COVER_PAGES:
            raise RenderError(f"the cover sheet came out as {len(cover.pages)} pages")
        out.pages.extend(cover.pages)
        out.pages.extend(part.pages)
        buffer = io.BytesIO()
        out.save(buffer, deterministic_id=True)
        return buffer.getvalue()


def with_cover(
    parcel: Parcel,
    part: FaxPart,
    *,
    templates: Path = SHIPPED_TEMPLATES,
    env: SandboxedEnvironment | None = None,
    day: date | None = None,
) -> bytes:
    """The part's PDF with its cover sheet first; the fax is dated ``day`` (today, UTC).

    Renders a PDF, so it is CPU-bound: async code calls it through ``asyncio.to_thread``.
    A cover that cannot be rendered is a ChannelSetupError (the templates are at fault,
    and every fax would fail the same way); a part that cannot be read is permanent.
    """
    cover = fax_cover(parcel, part, day or datetime.now(UTC).date())
    try:
        html = render_template(env or make_environment(templates), FAX_COVER_TEMPLATE, cover=cover)
        from delivery.render.pdf import html_to_pdf  # WeasyPrint loads only to render

        cover_pdf, _ = html_to_pdf(html, templates=templates)
    except RenderError as exc:
        raise ChannelSetupError(f"{_who(parcel)}: the fax cover sheet: {exc}") from exc
    try:
        return _join(cover_pdf, part.pdf)
    except RenderError as exc:
        raise ChannelSetupError(f"{_who(parcel)}: {exc}") from exc
    except pikepdf.PdfError as exc:
        raise PermanentChannelError(
            f"{_who(parcel)}: part {part.number} of the bundle cannot be read: {exc}"
        ) from exc


def _check_parcel(parcel: Parcel) -> None:
    if not _COMPONENT.fullmatch(parcel.delivery_id):
        raise PermanentChannelError(f"{_who(parcel)}: the delivery id is not a safe file name")
    if not parcel.pdf.startswith(b"%PDF-"):
        raise PermanentChannelError(f"{_who(parcel)}: the parcel's bundle is not a PDF")
    if parcel.pages < 1:
        raise PermanentChannelError(f"{_who(parcel)}: the bundle has {parcel.pages} pages")


def job_document(parcel: Parcel, number: str, pdf_path: str, pdf: bytes, pages: int) -> bytes:
    """The job file: UTF-8 JSON, sorted keys, two-space indent, one trailing newline.

    ``pages`` counts every page of the fax-ready PDF ``pdf``, its cover sheet included;
    ``bundle_pages`` the bundle's own.
    """
    recipient = parcel.recipient
    job = {
        "delivery_id": parcel.delivery_id,
        "bundle_id": parcel.bundle_id,
        "to": number,
        "recipient": {"case": recipient.case, "slug": recipient.slug, "name": recipient.name},
        "from": parcel.organisation.name,
        "pages": pages,
        "bundle_pages": parcel.pages,
        "pdf": pdf_path,
        "pdf_sha256": hashlib.sha256(pdf).hexdigest(),
        "messages": parcel.message_count,
        "idempotency_key": parcel.delivery_id,
    }
    return (json.dumps(job, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


class FaxSpool:
    """Writes ``fax/<delivery>.pdf`` and ``fax/<delivery>.job.json`` for each parcel.

    The PDF is one fax: a cover sheet, then the whole bundle (a person or a later gateway
    splits it if it must). The cover is dated with the bundle's creation date, so the
    same parcel always gives the same bytes.
    """

    name = ChannelName.FAX

    def __init__(self, outbox: Outbox, *, templates: Path = SHIPPED_TEMPLATES) -> None:
        self._outbox = outbox
        self._templates = templates
        self._env = make_environment(templates)

    def _spool(self, parcel: Parcel, number: str) -> tuple[Artefact, Artefact, int]:
        part = whole_bundle(parcel)
        fax = with_cover(
            parcel, part, templates=self._templates, env=self._env, day=bundle_day(parcel.pdf)
        )
        pdf_path = f"fax/{parcel.delivery_id}.pdf"
        job_file = job_document(parcel, number, pdf_path, fax, part.fax_pages)
        pdf = self._outbox.write(pdf_path, fax)
        job = self._outbox.write(f"fax/{parcel.delivery_id}.job.json", job_file)
        return pdf, job, part.fax_pages

    async def send(self, parcel: Parcel) -> Receipt:
        number = checked_number(parcel)
        _check_parcel(parcel)
        pdf, job, pages = await asyncio.to_thread(self._spool, parcel, number)
        return Receipt(
            state=DeliveryState.SPOOLED,
            proof=ProofLevel.NONE,
            provider_ref=job.path,
            detail=f"fax job for {number} ({pages} pages with the cover) written as {job.path}",
            artefacts=(pdf, job),
        )

    async def close(self) -> tuple[Artefact, ...]:
        return ()
