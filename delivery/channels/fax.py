"""The fax spool: a fax-ready PDF and a job file in the outbox; what every fax channel shares.

Nothing leaves the machine. ``fax/<delivery>.pdf`` is the bundle as rendered and
``fax/<delivery>.job.json`` says where it goes, from whom and how many pages, so a person
or a later gateway can send it. Re-sending a parcel rewrites both files with the same bytes.

The gateways (:mod:`delivery.channels.fax_phaxio`, :mod:`delivery.channels.fax_email`)
use the same number check (:func:`checked_number`) and the same cut of a long bundle
(:func:`split_pages`): part *k* of a bundle split at *m* pages is always pages
``(k-1)*m + 1`` to ``k*m``, so a retry that skips the parts already handed over sends
exactly the pages that are missing, as long as the page limit did not change in between.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
from dataclasses import dataclass

import pikepdf

from delivery.channels.base import Parcel, Receipt
from delivery.errors import ChannelSetupError, PermanentChannelError
from delivery.models import ChannelName, DeliveryState, ProofLevel
from delivery.outbox import Artefact, LocalOutbox

E164 = re.compile(r"\+[1-9]\d{7,14}")
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
        return self.last - self.first + 1


def _cut(whole: pikepdf.Pdf, start: int, stop: int) -> bytes:
    """Pages ``start`` to ``stop - 1`` (0-based) of ``whole`` as a PDF of their own."""
    with pikepdf.Pdf.new() as part:
        part.pages.extend(whole.pages[start:stop])
        out = io.BytesIO()
        part.save(out)
        return out.getvalue()


def split_pages(pdf: bytes, max_pages: int) -> list[FaxPart]:
    """The bundle as faxes of at most ``max_pages`` pages each (one, unchanged, when it fits)."""
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
    """The bundle as faxes of at most ``max_pages`` pages each (unchanged when it fits)."""
    return [part.pdf for part in split_pages(pdf, max_pages)]


def parts_to_send(parcel: Parcel, max_pages: int) -> tuple[int, list[FaxPart]]:
    """How many parts the bundle makes, and those not handed over by an earlier attempt.

    Raises ChannelSetupError when an earlier attempt sent a part number the bundle no
    longer has: the page limit was changed between attempts, and the cut moved with it.
    """
    who = _who(parcel)
    try:
        parts = split_pages(parcel.pdf, max_pages)
    except PermanentChannelError as exc:
        raise PermanentChannelError(f"{who}: {exc}") from exc
    if not parts:
        raise PermanentChannelError(f"{who}: the bundle has no pages")
    count = len(parts)
    beyond = sorted(n for n in parcel.sent_parts if not 1 <= n <= count)
    if beyond:
        raise ChannelSetupError(
            f"{who}: part {beyond[0]} was handed over earlier, but the bundle now makes "
            f"{count} part(s) of at most {max_pages} pages; the page limit changed between "
            "attempts, so the parts already sent cannot be told apart from the rest"
        )
    return count, [p for p in parts if p.number not in parcel.sent_parts]


def _check_parcel(parcel: Parcel) -> None:
    if not _COMPONENT.fullmatch(parcel.delivery_id):
        raise PermanentChannelError(f"{_who(parcel)}: the delivery id is not a safe file name")
    if not parcel.pdf.startswith(b"%PDF-"):
        raise PermanentChannelError(f"{_who(parcel)}: the parcel's bundle is not a PDF")
    if parcel.pages < 1:
        raise PermanentChannelError(f"{_who(parcel)}: the bundle has {parcel.pages} pages")


def job_document(parcel: Parcel, number: str, pdf_path: str) -> bytes:
    """The job file: UTF-8 JSON, sorted keys, two-space indent, one trailing newline."""
    recipient = parcel.recipient
    job = {
        "delivery_id": parcel.delivery_id,
        "bundle_id": parcel.bundle_id,
        "to": number,
        "recipient": {"case": recipient.case, "slug": recipient.slug, "name": recipient.name},
        "from": parcel.organisation.name,
        "pages": parcel.pages,
        "pdf": pdf_path,
        "pdf_sha256": hashlib.sha256(parcel.pdf).hexdigest(),
        "messages": parcel.message_count,
        "idempotency_key": parcel.delivery_id,
    }
    return (json.dumps(job, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


class FaxSpool:
    """Writes ``fax/<delivery>.pdf`` and ``fax/<delivery>.job.json`` for each parcel."""

    name = ChannelName.FAX

    def __init__(self, outbox: LocalOutbox) -> None:
        self._outbox = outbox

    def _spool(self, parcel: Parcel, number: str) -> tuple[Artefact, Artefact]:
        pdf_path = f"fax/{parcel.delivery_id}.pdf"
        pdf = self._outbox.write(pdf_path, parcel.pdf)
        job_path = f"fax/{parcel.delivery_id}.job.json"
        job = self._outbox.write(job_path, job_document(parcel, number, pdf_path))
        return pdf, job

    async def send(self, parcel: Parcel) -> Receipt:
        number = checked_number(parcel)
        _check_parcel(parcel)
        pdf, job = await asyncio.to_thread(self._spool, parcel, number)
        return Receipt(
            state=DeliveryState.SPOOLED,
            proof=ProofLevel.NONE,
            provider_ref=job.path,
            detail=f"fax job for {number} ({parcel.pages} pages) written as {job.path}",
            artefacts=(pdf, job),
        )

    async def close(self) -> tuple[Artefact, ...]:
        return ()
