"""render: lay out a bundle with render_bundle, against raw WeasyPrint on the same HTML.

Ours builds the template context (cleaning and bidi-balancing every message), renders the
Jinja templates, hashes the template files, writes the PDF through the sandboxed URL
fetcher with reproducible identifiers and font timestamps, and builds the manifest. The
baseline gives WeasyPrint the very HTML ours produced, with the templates folder as base
URL and WeasyPrint's own URL fetcher, and writes the PDF.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

from harness import Probe, Result, alternate, measure, progress
from weasyprint import HTML

from delivery.campaign import parse_campaign
from delivery.config import Settings
from delivery.demo import DEMO_CAMPAIGN_TOML, generate_messages
from delivery.models import Message, MessageKind, RecipientKind
from delivery.render.bundle import BundleDocument, render_bundle, render_bundle_html

DEFAULT_MESSAGES = 2_000
QUICK_MESSAGES = 300
SOURCE = "bench"
CREATED_AT = datetime(2026, 12, 21, 9, 0, tzinfo=UTC)


def authority_document(count: int) -> BundleDocument:
    """A bundle of ``count`` demo messages for the first authority of the demo campaign.

    Messages are the generated demo rows addressed to that authority (by kind or by its
    slug), in the order generated, numbered 1..count.
    """
    campaign = parse_campaign(DEMO_CAMPAIGN_TOML, source="demo")
    case, recipient = next(
        (c, r) for c in campaign.cases for r in c.recipients if r.kind is RecipientKind.AUTHORITY
    )
    wanted = (
        row
        for row in generate_messages(count * 50)
        if row["case"] == case.slug and row["to"] in (recipient.slug, recipient.kind.value)
    )
    messages = tuple(
        _message(number, row) for number, row in enumerate(islice(wanted, count), start=1)
    )
    if len(messages) < count:
        raise RuntimeError(f"only {len(messages)} demo messages for {recipient.slug}")
    return BundleDocument(
        bundle_id=f"bench-{recipient.slug}-{count}",
        organisation=campaign.organisation,
        case=case,
        recipient=recipient,
        messages=messages,
        created_at=CREATED_AT,
    )


def _message(number: int, row: dict[str, str]) -> Message:
    return Message(
        id=number,
        source=SOURCE,
        external_id=row["external_id"],
        case=row["case"],
        supporter_name=row["supporter_name"],
        supporter_email=row["supporter_email"],
        supporter_city=row["supporter_city"],
        supporter_country=row["supporter_country"],
        language=row["language"],
        kind=MessageKind(row["kind"]),
        body=row["body"],
        body_sha256=hashlib.sha256(row["body"].encode("utf-8")).hexdigest(),
        submitted_at=datetime.fromisoformat(row["submitted_at"]),
        event=row["event"],
    )


def ours(doc: BundleDocument, templates: Path, probe: Probe) -> tuple[int, dict[str, Any]]:
    with probe:
        rendered = render_bundle(doc, templates)
    return rendered.pages, {"pdf_bytes": len(rendered.pdf)}


def baseline(html: str, templates: Path, probe: Probe) -> tuple[int, dict[str, Any]]:
    base_url = templates.resolve().as_uri() + "/"
    with probe:
        document = HTML(string=html, base_url=base_url).render()
        pdf = document.write_pdf()
    return len(document.pages), {"pdf_bytes": len(pdf)}


def run(*, quick: bool, reps: int, work_dir: Path) -> Result:
    count = QUICK_MESSAGES if quick else DEFAULT_MESSAGES
    templates = Settings(outbox=str(work_dir)).templates
    doc = authority_document(count)
    html = render_bundle_html(doc, templates)
    letters = sum(1 for m in doc.messages if m.kind.needs_body and m.body.strip())
    progress(
        f"render: {count:,} messages for {doc.case.slug}/{doc.recipient.slug}"
        f" ({letters:,} with a body), {len(html):,} characters of HTML"
    )
    progress("render: warm-up, one render each")
    measure(lambda probe: baseline(html, templates, probe))
    measure(lambda probe: ours(doc, templates, probe))
    base_side, our_side = alternate(
        "render",
        reps,
        ("WeasyPrint on the same HTML", lambda probe: baseline(html, templates, probe)),
        ("render_bundle", lambda probe: ours(doc, templates, probe)),
    )
    result = Result(
        name="render",
        unit="pages",
        params={
            "messages": count,
            "with_body": letters,
            "recipient": f"{doc.case.slug}/{doc.recipient.slug}",
            "html_chars": len(html),
            "reps": reps,
        },
        baseline=base_side,
        ours=our_side,
    )
    base_pages = base_side.samples[-1].work
    our_pages = our_side.samples[-1].work
    if base_pages != our_pages:
        result.notes.append(f"page counts differ: baseline {base_pages}, ours {our_pages}")
    return result
