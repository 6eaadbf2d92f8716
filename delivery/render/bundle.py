"""A printable PDF bundle of one recipient's messages, with its manifest.

Supporter text reaches the templates only as values (escaped on output) and is cleaned
first: unprintable characters removed, bidi controls balanced per message, so a message
can never change how the next one reads.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from delivery.errors import RenderError
from delivery.models import Address, Case, Message, Organisation, Recipient, RecipientKind
from delivery.render.blocks import Line
from delivery.render.env import make_environment, render_template
from delivery.render.text import (
    country_name,
    direction,
    first_name,
    language_tag,
    plural,
    safe_label,
    safe_text,
)

BUNDLE_TEMPLATE = "bundle.html.j2"
BUNDLE_TEMPLATES = (
    "base.css",
    "blocks.css",
    "blocks.html.j2",
    "bundle.html.j2",
    "cover_authority.html.j2",
    "cover_family.html.j2",
    "cover_prison.html.j2",
    "footer.css",
    "page.css",
    "stamp.css",
)
ANONYMOUS = "A supporter"


@dataclass(frozen=True, kw_only=True)
class BundleDocument:
    bundle_id: str
    organisation: Organisation
    case: Case
    recipient: Recipient
    messages: tuple[Message, ...]
    created_at: datetime  # tz-aware UTC; printed as the letter date


@dataclass(frozen=True, kw_only=True)
class RenderedBundle:
    pdf: bytes
    pages: int
    manifest: dict[str, object]
    template_version: str


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One message as the templates see it: cleaned text, direction, language."""

    who: str
    body: str
    dir: str
    lang: str
    lines: tuple[Line, ...]


@dataclass(frozen=True, kw_only=True)
class CountryCount:
    code: str
    name: str
    count: int


def supporter_display(message: Message, kind: RecipientKind) -> str:
    """The supporter line a recipient of ``kind`` sees.

    authority: full name and country; prison: first name and country only (never the
    e-mail or city); family: first name and city, or country when there is no city.
    """
    country = country_name(message.supporter_country)
    if kind is RecipientKind.AUTHORITY:
        name = safe_label(message.supporter_name) or ANONYMOUS
        place = country
    elif kind is RecipientKind.PRISON:
        name = first_name(message.supporter_name) or ANONYMOUS
        place = country
    else:
        name = first_name(message.supporter_name) or ANONYMOUS
        place = safe_label(message.supporter_city) or country
    return f"{name}, {place}" if place else name


def has_body(message: Message) -> bool:
    """Whether a message is printed as a letter (otherwise it is listed as a name)."""
    return message.kind.needs_body and bool(message.body.strip())


def body_lines(text: str) -> tuple[Line, ...]:
    """Lines of a cleaned body, each with its own direction; runs of blank lines as one gap."""
    lines: list[Line] = []
    for raw in text.split("\n"):
        line = raw.strip()
        if line or (lines and lines[-1].text):
            lines.append(Line(text=line, dir=direction(line)))
    while lines and not lines[-1].text:
        lines.pop()
    return tuple(lines)


def entry(message: Message, kind: RecipientKind, body: str | None = None) -> Entry:
    """A message ready to print: supporter line, cleaned and bidi-balanced body."""
    text = safe_text(message.body if body is None else body).strip()
    return Entry(
        who=supporter_display(message, kind),
        body=text,
        dir=direction(text),
        lang=language_tag(message.language),
        lines=body_lines(text),
    )


def country_counts(messages: tuple[Message, ...]) -> tuple[CountryCount, ...]:
    """Countries the messages came from, by name, with how many each."""
    counts = Counter(safe_label(m.supporter_country).upper() for m in messages)
    counts.pop("", None)
    rows = (CountryCount(code=c, name=country_name(c), count=n) for c, n in counts.items())
    return tuple(sorted(rows, key=lambda row: (row.name.casefold(), row.code)))


def letter_date(created_at: datetime) -> datetime:
    if created_at.tzinfo is None or created_at.utcoffset() is None:
        raise RenderError(f"bundle created_at {created_at.isoformat()} has no time zone")
    return created_at.astimezone(UTC)


def address_lines(address: Address | None, skip: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Postal lines of ``address`` with the country spelled out, minus lines in ``skip``."""
    if address is None:
        return ()
    lines = list(address.lines())
    if address.country and len(address.country) <= 3 and lines[-1] == address.country:
        lines[-1] = country_name(address.country)
    seen = {s.casefold() for s in skip if s}
    return tuple(line for line in lines if line.casefold() not in seen)


def template_version(templates: Path, names: tuple[str, ...] = BUNDLE_TEMPLATES) -> str:
    """The first 16 hex digits of SHA-256 over the named template files, sorted by name."""
    digest = hashlib.sha256()
    for name in sorted(names):
        try:
            data = (templates / name).read_bytes()
        except OSError as error:
            raise RenderError(f"{templates / name}: cannot read template: {error}") from error
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:16]


def bundle_context(doc: BundleDocument) -> dict[str, object]:
    """What every page of a bundle prints around its blocks: cover, countries, footer id."""
    kind = doc.recipient.kind
    when = letter_date(doc.created_at)
    recipient = doc.recipient
    return {
        "bundle_id": doc.bundle_id,
        "kind": kind.value,
        "organisation": doc.organisation,
        "org_address": address_lines(doc.organisation.address, (doc.organisation.name,)),
        "recipient": recipient,
        "recipient_name": safe_label(recipient.name),
        "recipient_address": address_lines(recipient.address, (recipient.name, recipient.facility)),
        "case": doc.case,
        "date_text": f"{when.day} {when:%B %Y}",
        "created_iso": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "message_count": len(doc.messages),
        "letter_count": sum(1 for m in doc.messages if has_body(m)),
        "signature_count": sum(1 for m in doc.messages if not has_body(m)),
        "countries": country_counts(doc.messages),
        "plural": plural,
    }


def manifest(doc: BundleDocument, version: str) -> dict[str, object]:
    countries = country_counts(doc.messages)
    return {
        "bundle_id": doc.bundle_id,
        "case": doc.case.slug,
        "recipient": doc.recipient.slug,
        "recipient_kind": doc.recipient.kind.value,
        "created_at": letter_date(doc.created_at).isoformat(),
        "template_version": version,
        "message_count": len(doc.messages),
        "country_count": len(countries),
        "countries": [c.code for c in countries],
        "messages": [
            {"id": m.id, "ref": m.ref, "body_mac": m.body_mac}  # keyed: see models.message_ref
            for m in doc.messages
        ],
    }


def render_bundle_html(doc: BundleDocument, templates: Path) -> str:
    """The bundle as one HTML document (cover, countries, every block, the footer)."""
    from delivery.render.grouping import build_blocks  # grouping builds on this module

    env = make_environment(templates)
    context = {
        **bundle_context(doc),
        "blocks": build_blocks(doc.messages, doc.recipient.kind),
        "first_volume": True,
        "show_countries": True,
        "footer": True,
        "envelope": None,
    }
    return render_template(env, BUNDLE_TEMPLATE, **context)


def render_bundle(doc: BundleDocument, templates: Path) -> RenderedBundle:
    """Render ``doc`` as one A4 PDF document and describe it in a manifest.

    The worker merges through :mod:`delivery.render.merge` (volumes, envelopes, fonts
    preflight); this single-document path is the baseline the benchmarks compare against.
    """
    version = template_version(templates)
    html = render_bundle_html(doc, templates)
    from delivery.render.pdf import html_to_pdf  # WeasyPrint loads only to render

    pdf, pages = html_to_pdf(html, templates=templates)
    return RenderedBundle(
        pdf=pdf, pages=pages, manifest=manifest(doc, version), template_version=version
    )
