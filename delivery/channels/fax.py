"""The fax spool: a fax-ready PDF and a job file in the outbox.

Nothing leaves the machine. ``fax/<delivery>.pdf`` is the bundle as rendered and
``fax/<delivery>.job.json`` says where it goes, from whom and how many pages, so a person
or a later gateway can send it. Re-sending a parcel rewrites both files with the same bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re

from delivery.channels.base import Parcel, Receipt
from delivery.errors import PermanentChannelError
from delivery.models import ChannelName, DeliveryState, ProofLevel
from delivery.outbox import Artefact, LocalOutbox

E164 = re.compile(r"\+[1-9]\d{7,14}")
# One path component: no separators, no control characters, no leading dot.
_COMPONENT = re.compile(r"[^/\\.\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]*")


def _who(parcel: Parcel) -> str:
    recipient = parcel.recipient
    return f"delivery {parcel.delivery_id} to {recipient.case}/{recipient.slug}"


def _checked_number(parcel: Parcel) -> str:
    number = parcel.recipient.fax
    if not number:
        raise PermanentChannelError(f"{_who(parcel)}: the recipient has no fax number")
    if not E164.fullmatch(number):
        raise PermanentChannelError(
            f"{_who(parcel)}: fax number {number!r} is not in E.164 form (+<country><number>)"
        )
    return number


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
        number = _checked_number(parcel)
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
