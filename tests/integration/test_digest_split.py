"""A bundle too large for one attachment is cut between pages and spread over e-mails."""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import io
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from pypdf import PdfReader

from delivery.channels.base import Parcel
from delivery.channels.email import EmailSpool
from delivery.config import SHIPPED_TEMPLATES, EmailSettings
from delivery.errors import PermanentChannelError
from delivery.models import (
    Address,
    Cadence,
    Case,
    ChannelName,
    Format,
    Message,
    MessageKind,
    Organisation,
    Recipient,
    RecipientKind,
    sha256_hex,
)
from delivery.outbox import LocalOutbox
from delivery.render.bundle import BundleDocument, RenderedBundle
from delivery.render.email import compose_email
from delivery.render.pdf import html_to_pdf

CREATED = datetime(2025, 11, 26, 9, 30, tzinfo=UTC)
BUNDLE_ID = "bnd-5p1itb0und1e"
DELIVERY_ID = "dlv-split-0001"
PAGES = 40
TINY = EmailSettings(max_attachment_mb=0.01, max_message_mb=0.05)
ATTACHMENT_LIMIT = 10_000  # bytes: the limits are read in decimal megabytes
MESSAGE_LIMIT = 50_000
SUBJECT = "Free Rosa: 3 messages from 3 countries"
HEADERS = ["From", "To", "Reply-To", "Subject", "Date", "Message-ID"]
MIME = ["MIME-Version", "Content-Type"]
THREAD = ["In-Reply-To", "References"]
WRITERS = (
    ("Ana Pereira", "BR", "pt", "Querida Rosa, estamos pensando em você."),
    ("Ivan Petrov", "RU", "ru", "Дорогая Роза, мы с вами."),
    ("Sara Ahmad", "EG", "ar", "عزيزتي روزا، نحن نفكر فيك كل يوم."),
)


def message(ident: int, name: str, country: str, language: str, body: str) -> Message:
    return Message(
        id=ident,
        source="form",
        external_id=f"ext-{ident}",
        case="free-rosa",
        supporter_name=name,
        supporter_email=f"supporter{ident}@example.net",
        supporter_city="Springfield",
        supporter_country=country,
        language=language,
        kind=MessageKind.LETTER,
        body=body,
        body_sha256=sha256_hex(body.encode()),
        submitted_at=CREATED,
        event="",
    )


def document(fmt: Format = Format.DIGEST) -> BundleDocument:
    recipient = Recipient(
        case="free-rosa",
        slug="justice-desk",
        kind=RecipientKind.AUTHORITY,
        name="Minister of Justice",
        language="pt",
        channels=(ChannelName.EMAIL,),
        format=fmt,
        cadence=Cadence.DAILY,
        email="desk@example.gov",
    )
    case = Case(
        slug="free-rosa",
        name="Free Rosa",
        country="AR",
        summary="A teacher detained for a peaceful vigil.",
        demand="Release Rosa immediately and unconditionally.",
        auto_approve=frozenset(),
        danger_words=(),
        recipients=(recipient,),
    )
    return BundleDocument(
        bundle_id=BUNDLE_ID,
        organisation=Organisation(
            name="Open Letters Network",
            email="letters@example.org",
            reply_to="caseworkers@example.org",
            bounce_domain="bounces.example.org",
            address=Address(
                name="Open Letters Network",
                street="12 Harbour Lane",
                city="Bristol",
                postal_code="BS1 4XX",
                country="GB",
            ),
        ),
        case=case,
        recipient=recipient,
        messages=tuple(message(i, *w) for i, w in enumerate(WRITERS, start=1)),
        created_at=CREATED,
    )


def noise(chars: int) -> str:
    """Deterministic hexadecimal noise: text that compresses poorly."""
    digests = (hashlib.sha256(f"noise-{i}".encode()).hexdigest() for i in range(chars // 64 + 1))
    return "".join(digests)[:chars]


def paged_pdf(pages: int, noisy: int = 0) -> RenderedBundle:
    """A real WeasyPrint PDF, one numbered page of text each; page ``noisy`` dense with noise."""
    sections = "".join(
        f'<section style="page-break-after: always"><h1>Page marker {n}</h1>'
        f"<p>{'Words of solidarity for Rosa. ' * 30}</p>"
        + (
            f'<p style="font-size: 5pt; word-break: break-all">{noise(8_000)}</p>'
            if n == noisy
            else ""
        )
        + "</section>"
        for n in range(1, pages + 1)
    )
    html = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"></head>'
        f"<body>{sections}</body></html>"
    )
    pdf, count = html_to_pdf(html, templates=SHIPPED_TEMPLATES)
    assert count == pages
    return RenderedBundle(pdf=pdf, pages=count, manifest={}, template_version="test")


@pytest.fixture(scope="module")
def rendered() -> RenderedBundle:
    return paged_pdf(PAGES)


def compose(
    rendered: RenderedBundle, limits: EmailSettings, fmt: Format = Format.DIGEST
) -> tuple[bytes, ...]:
    return compose_email(
        document(fmt), rendered, delivery_id=DELIVERY_ID, templates=SHIPPED_TEMPLATES, limits=limits
    )


def parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def text_of(parsed: EmailMessage, subtype: str) -> str:
    body = parsed.get_body((subtype,))
    assert body is not None
    content = body.get_content()
    assert isinstance(content, str)
    return " ".join(content.split())


def attachments(parsed: EmailMessage) -> list[tuple[str, bytes]]:
    found = []
    for part in parsed.iter_attachments():
        assert part.get_content_type() == "application/pdf"
        data = part.get_content()
        assert isinstance(data, bytes)
        found.append((str(part.get_filename()), data))
    return found


def page_texts(pdf: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]


def span(first: int, last: int) -> str:
    return f"page {first}" if first == last else f"pages {first}–{last}"


def test_default_limits_keep_one_email_with_the_whole_pdf(rendered: RenderedBundle) -> None:
    emails = compose(rendered, EmailSettings())
    assert len(emails) == 1
    assert emails == compose(rendered, EmailSettings(max_attachment_mb=500, max_message_mb=900))
    parsed = parse(emails[0])
    assert list(parsed.keys()) == HEADERS + MIME
    assert parsed["Message-ID"] == f"<{DELIVERY_ID}@bounces.example.org>"
    assert parsed["Subject"] == SUBJECT
    assert attachments(parsed) == [(f"{BUNDLE_ID}.pdf", rendered.pdf)]
    text = text_of(parsed, "plain")
    assert f"The full bundle of 3 messages is attached as {BUNDLE_ID}.pdf (40 pages)." in text
    assert "part" not in text


@pytest.fixture(scope="module")
def split(rendered: RenderedBundle) -> tuple[bytes, ...]:
    return compose(rendered, TINY)


def carried_parts(emails: tuple[bytes, ...]) -> list[list[tuple[str, bytes]]]:
    return [attachments(parse(raw)) for raw in emails]


def test_a_large_bundle_is_cut_between_pages_within_the_limits(
    rendered: RenderedBundle, split: tuple[bytes, ...]
) -> None:
    files = carried_parts(split)
    part_count = sum(len(f) for f in files)
    assert 3 <= len(split) < part_count  # several e-mails, some carrying more than one part
    assert all(len(raw) <= MESSAGE_LIMIT for raw in split)
    assert all(len(data) <= ATTACHMENT_LIMIT for f in files for _, data in f)
    names = [name for f in files for name, _ in f]
    assert names == [f"{BUNDLE_ID}-part-{n}-of-{part_count}.pdf" for n in range(1, part_count + 1)]
    pages = [text for f in files for _, data in f for text in page_texts(data)]
    assert len(pages) == PAGES
    assert pages == page_texts(rendered.pdf)
    assert all(f"Page marker {n}" in text for n, text in enumerate(pages, start=1))
    assert compose(rendered, TINY) == split


def test_split_emails_are_numbered_and_thread_to_the_first(split: tuple[bytes, ...]) -> None:
    count = len(split)
    first_id = f"<{DELIVERY_ID}.1@bounces.example.org>"
    for number, raw in enumerate(split, start=1):
        parsed = parse(raw)
        assert list(parsed.keys()) == HEADERS + (THREAD if number > 1 else []) + MIME
        assert parsed["Message-ID"] == f"<{DELIVERY_ID}.{number}@bounces.example.org>"
        assert parsed["Subject"] == f"{SUBJECT} (e-mail {number} of {count})"
        if number > 1:
            assert parsed["In-Reply-To"] == first_id
            assert parsed["References"] == first_id


def test_each_split_email_says_what_it_holds(split: tuple[bytes, ...]) -> None:
    count, files = len(split), carried_parts(split)
    part_count = sum(len(f) for f in files)
    part, page = 1, 1
    for number, (raw, carried) in enumerate(zip(split, files, strict=True), start=1):
        parsed, first_part, first_page = parse(raw), part, page
        lines = []
        for name, data in carried:
            pages = len(page_texts(data))
            lines.append(f"part {part} ({span(page, page + pages - 1)}): {name}")
            part, page = part + 1, page + pages
        label = f"part {first_part}" if part - first_part == 1 else f"parts {first_part}–{part - 1}"
        statement = (
            f"This is e-mail {number} of {count}: {label} of {part_count} of the bundle"
            f" ({span(first_page, page - 1)}). The other e-mails carry the rest."
        )
        assert statement in text_of(parsed, "plain")
        assert statement in text_of(parsed, "html")
        assert all(line in text_of(parsed, "plain") for line in lines)


def test_the_first_split_email_carries_the_digest_and_the_rest_a_short_note(
    split: tuple[bytes, ...],
) -> None:
    first, *later = (text_of(parse(raw), "plain") for raw in split)
    assert "3 people from 3 countries wrote to you about Free Rosa" in first
    assert "Дорогая Роза" in first
    for text in later:
        assert "Дорогая Роза" not in text
        assert "wrote to you" not in text
        assert "This e-mail carries more of the bundle about Free Rosa." in text


def test_parts_that_fit_one_email_are_listed_in_it(rendered: RenderedBundle) -> None:
    limits = EmailSettings(max_attachment_mb=0.01, max_message_mb=1)
    (raw,) = compose(rendered, limits, Format.BUNDLE)
    parsed = parse(raw)
    assert list(parsed.keys()) == HEADERS + MIME
    assert parsed["Message-ID"] == f"<{DELIVERY_ID}@bounces.example.org>"
    assert parsed["Subject"] == SUBJECT
    carried = attachments(parsed)
    assert len(carried) > 1
    assert all(len(data) <= ATTACHMENT_LIMIT for _, data in carried)
    text = text_of(parsed, "plain")
    assert f"The full bundle of 3 messages (40 pages) is attached in {len(carried)} parts:" in text
    first_pages = len(page_texts(carried[0][1]))
    assert f"part 1 ({span(1, first_pages)}): {carried[0][0]}" in text
    assert "e-mail 1 of" not in text
    assert [t for _, data in carried for t in page_texts(data)] == page_texts(rendered.pdf)


def test_a_page_larger_than_the_limit_goes_alone_and_is_noted() -> None:
    rendered = paged_pdf(8, noisy=5)
    limits = EmailSettings(max_attachment_mb=0.012, max_message_mb=1)
    (raw,) = compose(rendered, limits)
    parsed = parse(raw)
    carried = attachments(parsed)
    pages = [page_texts(data) for _, data in carried]
    big = [n for n, (_, data) in enumerate(carried) if len(data) > 12_000]
    assert len(big) == 1
    assert len(pages[big[0]]) == 1
    assert "Page marker 5" in pages[big[0]][0]
    assert [t for part in pages for t in part] == page_texts(rendered.pdf)
    text = text_of(parsed, "plain")
    number = big[0] + 1
    assert re.search(
        rf"part {number} \(page 5\): \S+-part-{number}-of-{len(carried)}\.pdf"
        r" \(this page alone is larger than the attachment size limit\)",
        text,
    )
    assert text.count("this page alone is larger") == 1


def parcel(emails: tuple[bytes, ...]) -> Parcel:
    doc = document()
    return Parcel(
        delivery_id=DELIVERY_ID,
        bundle_id=BUNDLE_ID,
        channel=ChannelName.EMAIL,
        organisation=doc.organisation,
        recipient=doc.recipient,
        pdf=b"%PDF-1.7\n",
        pages=PAGES,
        message_count=3,
        emails=emails,
    )


def test_the_spool_writes_one_file_per_email(tmp_path: Path, split: tuple[bytes, ...]) -> None:
    emails = split
    outbox = LocalOutbox(tmp_path)
    receipt = asyncio.run(EmailSpool(outbox).send(parcel(emails)))
    count = len(emails)
    paths = [
        f"email/free-rosa/justice-desk/{DELIVERY_ID}-{k}-of-{count}.eml"
        for k in range(1, count + 1)
    ]
    assert receipt.provider_ref == paths[0]
    assert [a.path for a in receipt.artefacts] == paths
    for artefact, raw in zip(receipt.artefacts, emails, strict=True):
        assert outbox.read(artefact.path) == raw
        assert artefact.sha256 == hashlib.sha256(raw).hexdigest()
        assert artefact.size == len(raw)
    assert sorted(p.name for p in (tmp_path / "email/free-rosa/justice-desk").iterdir()) == sorted(
        Path(p).name for p in paths
    )


def test_the_spool_writes_nothing_when_one_email_lacks_a_message_id(
    tmp_path: Path, split: tuple[bytes, ...]
) -> None:
    emails = split
    broken = parse(emails[1])
    del broken["Message-ID"]
    bad = (emails[0], broken.as_bytes(policy=email.policy.SMTP), *emails[2:])
    with pytest.raises(PermanentChannelError, match=f"e-mail 2 of {len(emails)} has no Message-ID"):
        asyncio.run(EmailSpool(LocalOutbox(tmp_path)).send(parcel(bad)))
    assert not any(p.is_file() for p in tmp_path.rglob("*"))
