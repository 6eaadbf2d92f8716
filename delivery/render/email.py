"""The RFC 5322 e-mail that carries a bundle: a digest or cover note, the PDF attached.

Headers are built only from campaign data (organisation, recipient, case, counts); no
supporter text ever reaches a header. The same inputs always give the same bytes: no
clock, no random boundaries.
"""

from __future__ import annotations

import hashlib
import re
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path

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


def _set_headers(msg: EmailMessage, doc: BundleDocument, delivery_id: str) -> None:
    org, recipient = doc.organisation, doc.recipient
    if not recipient.email:
        raise RenderError(f"recipient {recipient.slug}: no e-mail address")
    msg["From"] = _address(org.name, org.email, "organisation")
    msg["To"] = _address(recipient.name, recipient.email, f"recipient {recipient.slug}")
    msg["Reply-To"] = _address(org.name, org.reply_to or org.email, "organisation reply-to")
    msg["Subject"] = subject(doc)
    msg["Date"] = format_datetime(letter_date(doc.created_at))
    domain = _checked(org.bounce_domain, _DOMAIN, "bounce domain")
    msg["Message-ID"] = f"<{_checked(delivery_id, _TOKEN, 'delivery id')}@{domain}>"


def _fix_boundaries(msg: EmailMessage, delivery_id: str) -> None:
    """Boundaries derived from the delivery id: stable, and never inside encoded parts."""
    for index, part in enumerate(msg.walk()):
        if part.is_multipart():
            seed = f"{delivery_id}\0{index}".encode()
            token = hashlib.sha256(seed).hexdigest()[:32]
            part.set_boundary(f"=_{part.get_content_subtype()}_{token}")


def compose_email(
    doc: BundleDocument, rendered: RenderedBundle, *, delivery_id: str, templates: Path
) -> bytes:
    """The bundle as an e-mail (CRLF line ends), ready for SMTP or an .eml file."""
    bundle_id = _checked(doc.bundle_id, _TOKEN, "bundle id")
    env = make_environment(templates)
    context = digest_context(doc, rendered)
    text = render_template(env, TEXT_TEMPLATE, **context)
    html = render_template(env, HTML_TEMPLATE, **context)

    msg = EmailMessage(policy=SMTP)
    _set_headers(msg, doc, delivery_id)
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    msg.add_attachment(
        rendered.pdf, maintype="application", subtype="pdf", filename=f"{bundle_id}.pdf"
    )
    _fix_boundaries(msg, delivery_id)
    return msg.as_bytes(policy=SMTP)
