"""The RFC 5322 e-mails that carry a bundle: a digest or cover note, the PDF attached.

A bundle too large for one attachment is cut between pages into parts, and the parts
travel in as few e-mails as the size limits allow, each saying what it carries.

Headers are built only from campaign data (organisation, recipient, case, counts); no
supporter text ever reaches a header. The same inputs always give the same bytes: no
clock, no random boundaries.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path

from jinja2.sandbox import SandboxedEnvironment
from pypdf import PdfReader, PdfWriter
from pypdf.errors import PyPdfError

from delivery.config import EmailSettings
from delivery.errors import RenderError
from delivery.models import Format, Message
from delivery.render.bundle import (
    BundleDocument,
    Entry,
    RenderedBundle,
    country_counts,
    entry,
    has_body,
    letter_date,
)
from delivery.render.env import make_environment, render_template
from delivery.render.text import plural, safe_label, same_language, shorten

TEXT_TEMPLATE = "digest.txt.j2"
HTML_TEMPLATE = "digest.html.j2"
SAMPLE_SIZE = 10
SAMPLE_CHARS = 500
MB = 1_000_000
MARGIN_BYTES = 1_024  # kept free in every e-mail of a split bundle, besides 2 % of the limit
MARGIN_SHARE = 0.02
PART_HEADERS = 512  # the MIME headers and boundary line of one attached part, at most
BASE64_RAW_PER_LINE = 57  # bytes of attachment per base64 line ...
BASE64_LINE_BYTES = 78  # ... which is 76 characters and CRLF on the wire
_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.?)*[A-Za-z0-9]$")


def header_text(value: str) -> str:
    """A one-line header value: control characters, line breaks and bidi controls removed."""
    return safe_label(value)


def _address(name: str, addr_spec: str, what: str) -> Address:
    try:
        return Address(display_name=header_text(name), addr_spec=addr_spec.strip())
    except (ValueError, IndexError) as error:
        raise RenderError(f"{what}: invalid e-mail address {addr_spec!r}: {error}") from error


def _checked(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.match(value):
        raise RenderError(f"{what} {value!r} cannot be used in an e-mail header")
    return value


def sample(doc: BundleDocument) -> tuple[Entry, ...]:
    """Up to ten letters, the recipient's language first, each cut to about 500 chars."""
    letters = [m for m in doc.messages if has_body(m)]
    language = doc.recipient.language

    def first_in_language(message: Message) -> int:
        return 0 if same_language(message.language, language) else 1

    chosen = sorted(letters, key=first_in_language)[:SAMPLE_SIZE]  # stable: keeps order
    kind = doc.recipient.kind
    return tuple(entry(m, kind, shorten(m.body, SAMPLE_CHARS)) for m in chosen)


def subject(doc: BundleDocument) -> str:
    countries = len(country_counts(doc.messages))
    count = plural(len(doc.messages), "message")
    where = f" from {plural(countries, 'country', 'countries')}" if countries else ""
    return header_text(f"{doc.case.name}: {count}{where}")


def digest_context(doc: BundleDocument, rendered: RenderedBundle) -> dict[str, object]:
    countries = country_counts(doc.messages)
    letters = sum(1 for m in doc.messages if has_body(m))
    return {
        "format": doc.recipient.format.value,
        "kind": doc.recipient.kind.value,
        "organisation": doc.organisation,
        "recipient": doc.recipient,
        "recipient_name": safe_label(doc.recipient.name),
        "case": doc.case,
        "bundle_id": doc.bundle_id,
        "filename": f"{doc.bundle_id}.pdf",
        "pages": rendered.pages,
        "message_count": len(doc.messages),
        "letter_count": letters,
        "signature_count": len(doc.messages) - letters,
        "countries": countries,
        "sample": sample(doc) if doc.recipient.format is Format.DIGEST else (),
        "plural": plural,
    }


def page_span(first: int, last: int) -> str:
    """``page 7`` or ``pages 1–120`` (1-based, inclusive)."""
    return f"page {first}" if first == last else f"pages {first}–{last}"


@dataclass(frozen=True, kw_only=True)
class PdfPart:
    """One attachment of a split bundle: whole pages ``first_page`` to ``last_page``."""

    number: int
    count: int
    first_page: int
    last_page: int
    filename: str
    pdf: bytes
    oversize: bool  # a single page that alone is larger than the attachment limit

    @property
    def pages(self) -> str:
        return page_span(self.first_page, self.last_page)


@dataclass(frozen=True, kw_only=True)
class Holding:
    """What one e-mail of a split bundle carries, as the templates describe it."""

    email_number: int
    email_count: int
    part_count: int
    parts: tuple[PdfPart, ...]

    @property
    def label(self) -> str:
        """``part 3`` or ``parts 3–4``."""
        first, last = self.parts[0].number, self.parts[-1].number
        return f"part {first}" if first == last else f"parts {first}–{last}"

    @property
    def pages(self) -> str:
        return page_span(self.parts[0].first_page, self.parts[-1].last_page)


def limit_bytes(megabytes: float) -> int:
    """A size limit in bytes; MB read as 10⁶ bytes, the smaller reading, so MiB holds too."""
    return int(megabytes * MB)


def _margin(limit: int) -> int:
    return MARGIN_BYTES + int(limit * MARGIN_SHARE)


def _reader(pdf: bytes) -> PdfReader:
    try:
        reader = PdfReader(io.BytesIO(pdf))
        pages = len(reader.pages)
    except (PyPdfError, ValueError) as error:
        raise RenderError(f"bundle PDF cannot be split: {error}") from error
    if not pages:
        raise RenderError("bundle PDF cannot be split: it has no pages")
    return reader


def _pages_pdf(reader: PdfReader, start: int, stop: int) -> bytes:
    """Pages ``start`` to ``stop - 1`` (0-based) as a PDF of their own, document info kept."""
    writer = PdfWriter()
    for index in range(start, stop):
        writer.add_page(reader.pages[index])
    if reader.metadata:
        writer.add_metadata(reader.metadata)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _take(reader: PdfReader, start: int, limit: int) -> tuple[int, bytes]:
    """The most pages from ``start`` whose PDF fits in ``limit`` bytes, at least one.

    Doubles the page count until a PDF is too large, then bisects. Adding pages to a
    subset only adds objects, so this finds the same cut as adding one page at a time.
    """
    total = len(reader.pages)
    fits, best = start + 1, _pages_pdf(reader, start, start + 1)
    if len(best) > limit:
        return fits, best
    too_many = total + 1
    while fits < total and too_many > total:
        stop = min(start + 2 * (fits - start), total)
        data = _pages_pdf(reader, start, stop)
        if len(data) > limit:
            too_many = stop
        else:
            fits, best = stop, data
    while too_many <= total and too_many - fits > 1:
        stop = (fits + too_many) // 2
        data = _pages_pdf(reader, start, stop)
        if len(data) > limit:
            too_many = stop
        else:
            fits, best = stop, data
    return fits, best


def split_pdf(pdf: bytes, limit: int, bundle_id: str) -> tuple[PdfPart, ...]:
    """``pdf`` cut between pages into parts of at most ``limit`` bytes, in page order.

    A page that alone is larger than ``limit`` becomes a part of its own, marked oversize.
    """
    reader = _reader(pdf)
    cuts: list[tuple[int, int, bytes]] = []
    start = 0
    while start < len(reader.pages):
        stop, data = _take(reader, start, limit)
        cuts.append((start, stop, data))
        start = stop
    count = len(cuts)
    return tuple(
        PdfPart(
            number=number,
            count=count,
            first_page=first + 1,
            last_page=stop,
            filename=f"{bundle_id}-part-{number}-of-{count}.pdf",
            pdf=data,
            oversize=len(data) > limit,
        )
        for number, (first, stop, data) in enumerate(cuts, start=1)
    )


def _message_id(delivery_id: str, domain: str, number: int, count: int) -> str:
    token = delivery_id if count == 1 else f"{delivery_id}.{number}"
    return f"<{token}@{domain}>"


def _set_headers(
    msg: EmailMessage, doc: BundleDocument, delivery_id: str, number: int, count: int
) -> None:
    org, recipient = doc.organisation, doc.recipient
    if not recipient.email:
        raise RenderError(f"recipient {recipient.slug}: no e-mail address")
    msg["From"] = _address(org.name, org.email, "organisation")
    msg["To"] = _address(recipient.name, recipient.email, f"recipient {recipient.slug}")
    msg["Reply-To"] = _address(org.name, org.reply_to or org.email, "organisation reply-to")
    suffix = f" (e-mail {number} of {count})" if count > 1 else ""
    msg["Subject"] = subject(doc) + suffix
    msg["Date"] = format_datetime(letter_date(doc.created_at))
    domain = _checked(org.bounce_domain, _DOMAIN, "bounce domain")
    token = _checked(delivery_id, _TOKEN, "delivery id")
    msg["Message-ID"] = _message_id(token, domain, number, count)
    if number > 1:
        first = _message_id(token, domain, 1, count)
        msg["In-Reply-To"] = first
        msg["References"] = first


def _fix_boundaries(msg: EmailMessage, seed_id: str) -> None:
    """Boundaries derived from the delivery id: stable, and never inside encoded parts."""
    for index, part in enumerate(msg.walk()):
        if part.is_multipart():
            seed = f"{seed_id}\0{index}".encode()
            token = hashlib.sha256(seed).hexdigest()[:32]
            part.set_boundary(f"=_{part.get_content_subtype()}_{token}")


def _with_attachments(message: bytes, stand_ins: list[tuple[bytes, bytes]]) -> bytes:
    """``message`` with each stand-in's base64 line replaced by its attachment, encoded.

    The e-mail package encodes and writes a large attachment line by line in Python, which
    costs more than everything else in an e-mail. Each attachment is composed as a 32-byte
    stand-in instead, and its real base64 (the same 76-character lines the package writes,
    CRLF-ended) put in its place afterwards: the bytes are those the package would write.
    """
    for stand_in, data in stand_ins:
        line = base64.b64encode(stand_in) + b"\r\n"
        if message.count(line) != 1:
            raise RenderError("an attachment could not be placed in its e-mail")
        message = message.replace(line, _base64_lines(data))
    return message


def _base64_lines(data: bytes) -> bytes:
    """``data`` in base64, 76 characters a line (57 bytes), each line CRLF-ended."""
    encoded = binascii.b2a_base64(data, newline=False)
    return b"".join(encoded[i : i + 76] + b"\r\n" for i in range(0, len(encoded), 76))


@dataclass(frozen=True, kw_only=True)
class _Composer:
    """Builds the e-mails of one bundle; everything but the attachments is fixed here."""

    env: SandboxedEnvironment
    doc: BundleDocument
    context: dict[str, object]
    delivery_id: str

    def build(self, files: tuple[tuple[str, bytes], ...], holding: Holding | None) -> bytes:
        number, count = (holding.email_number, holding.email_count) if holding else (1, 1)
        context = {**self.context, "split": holding}
        text = render_template(self.env, TEXT_TEMPLATE, **context)
        html = render_template(self.env, HTML_TEMPLATE, **context)
        msg = EmailMessage(policy=SMTP)
        _set_headers(msg, self.doc, self.delivery_id, number, count)
        msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
        msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
        stand_ins = []
        for index, (filename, data) in enumerate(files):
            stand_in = hashlib.sha256(f"{self.delivery_id}\0{number}\0{index}".encode()).digest()
            msg.add_attachment(stand_in, maintype="application", subtype="pdf", filename=filename)
            stand_ins.append((stand_in, data))
        _fix_boundaries(msg, self.delivery_id if count == 1 else f"{self.delivery_id}.{number}")
        return _with_attachments(msg.as_bytes(policy=SMTP), stand_ins)

    def carrying(self, parts: tuple[PdfPart, ...], number: int, count: int) -> bytes:
        """E-mail ``number`` of ``count``, carrying ``parts`` of the split bundle."""
        holding = Holding(
            email_number=number, email_count=count, part_count=parts[0].count, parts=parts
        )
        return self.build(tuple((p.filename, p.pdf) for p in parts), holding)

    def capacity(self, message_limit: int) -> int:
        """The largest attachment (decoded bytes) one e-mail of ``message_limit`` can carry."""
        room = message_limit - _margin(message_limit) - len(self.build((), None)) - PART_HEADERS
        capacity = room * BASE64_RAW_PER_LINE // BASE64_LINE_BYTES
        if capacity < 1:
            raise RenderError(
                f"e-mail limit of {message_limit:,} bytes leaves no room for an attachment"
            )
        return capacity


def _pack(
    composer: _Composer, parts: tuple[PdfPart, ...], message_limit: int
) -> tuple[tuple[PdfPart, ...], ...]:
    """The parts, in order, in as few e-mails as keep each within ``message_limit``.

    Each candidate e-mail is composed and measured (with the largest e-mail count, so the
    final text is never longer); a safety margin is kept besides. Taking parts greedily
    in order gives the fewest e-mails. A part too large for any e-mail goes alone.
    """
    budget = message_limit - _margin(message_limit)
    groups: list[tuple[PdfPart, ...]] = []
    current: tuple[PdfPart, ...] = ()
    for part in parts:
        trial = (*current, part)
        if current and len(composer.carrying(trial, len(groups) + 1, len(parts))) > budget:
            groups.append(current)
            trial = (part,)
        current = trial
    groups.append(current)
    return tuple(groups)


def compose_email(
    doc: BundleDocument,
    rendered: RenderedBundle,
    *,
    delivery_id: str,
    templates: Path,
    limits: EmailSettings,
) -> tuple[bytes, ...]:
    """The bundle as RFC 5322 e-mails (CRLF line ends), ready for SMTP or ``.eml`` files.

    One e-mail, the PDF attached whole, when the PDF fits ``max_attachment_mb`` and the
    e-mail fits ``max_message_mb``. Otherwise the PDF is cut between pages into parts
    that fit both, and the parts are packed in order into as few e-mails as fit
    ``max_message_mb``; every e-mail says which parts and pages it carries.

    Headers, in order: From, To, Reply-To, Subject, Date, Message-ID, then for e-mails
    after the first of several In-Reply-To and References (both the first e-mail's
    Message-ID), then MIME-Version and Content-Type. One e-mail has Message-ID
    ``<delivery_id@bounce_domain>``; e-mail k of n has ``<delivery_id.k@bounce_domain>``
    and its Subject ends `` (e-mail k of n)``. The first e-mail carries the digest;
    later ones a short note.
    """
    bundle_id = _checked(doc.bundle_id, _TOKEN, "bundle id")
    composer = _Composer(
        env=make_environment(templates),
        doc=doc,
        context=digest_context(doc, rendered),
        delivery_id=delivery_id,
    )
    attachment_limit = limit_bytes(limits.max_attachment_mb)
    message_limit = limit_bytes(limits.max_message_mb)
    if len(rendered.pdf) <= attachment_limit:
        whole = composer.build(((f"{bundle_id}.pdf", rendered.pdf),), None)
        if len(whole) <= message_limit:
            return (whole,)
    part_limit = min(attachment_limit, composer.capacity(message_limit), len(rendered.pdf) - 1)
    groups = _pack(composer, split_pdf(rendered.pdf, part_limit, bundle_id), message_limit)
    count = len(groups)
    return tuple(composer.carrying(g, k, count) for k, g in enumerate(groups, start=1))
