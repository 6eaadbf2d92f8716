"""Real PDFs and e-mails, read back: supporter text stays text, nothing is fetched."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import io
import json
import os
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pypdf
import pytest

from delivery.config import SHIPPED_TEMPLATES, EmailSettings
from delivery.errors import RenderError
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
    body_mac,
    message_ref,
    sha256_hex,
)
from delivery.render import pdf as pdf_module
from delivery.render.bundle import BundleDocument, RenderedBundle, render_bundle
from delivery.render.email import compose_email
from delivery.render.pdf import FetchRefusedError, TemplateFetcher, html_to_pdf, pdf_page_count

CREATED = datetime(2025, 11, 26, 9, 30, tzinfo=UTC)
LINK_KEY = bytes(range(32))  # each message's own key, as the store makes at intake
BUNDLE_ID = "bnd-0a1b2c3d5e6f7a8b"

ORGANISATION = Organisation(
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
)

MULTISCRIPT = (
    ("Ana Pereira", "BR", "pt", "Querida Rosa, estamos pensando em você."),
    ("Ivan Petrov", "RU", "ru", "Дорогая Роза, мы с вами."),
    ("Eleni Papadaki", "GR", "el", "Αγαπητή Ρόζα, σκεφτόμαστε εσένα."),
    ("Sara Ahmad", "EG", "ar", "عزيزتي روزا، نحن نفكر فيك كل يوم."),
    ("Noa Levi", "IL", "he", "רוזה היקרה, אנחנו חושבים עלייך."),
    ("Li Wei", "CN", "zh", "亲爱的罗莎，我们想念你。"),
    ("Yuki Tanaka", "JP", "ja", "ローザさん、あなたのことを思っています。"),
    ("Min-jun Kim", "KR", "ko", "로사에게, 우리는 당신을 생각합니다."),
    ("Priya Sharma", "IN", "hi", "प्रिय रोज़ा, हम आपके साथ हैं।"),
)

ATTACKS = (
    "{{ 7*7 }}",
    "{% for x in range(3) %}x{% endfor %}",
    '<img src="file:///etc/passwd">',
    '<link rel="attachment" href="file:///etc/passwd">',
    "<script>alert(1)</script>",
    "<style>@import url(http://169.254.169.254/)</style>",
    '<div style="background:url(http://169.254.169.254/)">',
)


def message(
    ident: int,
    name: str,
    country: str,
    body: str,
    *,
    language: str = "en",
    city: str = "Springfield",
    kind: MessageKind = MessageKind.LETTER,
) -> Message:
    return Message(
        id=ident,
        source="form",
        external_id=f"ext-{ident}",
        case="free-rosa",
        supporter_name=name,
        supporter_email=f"supporter{ident}@example.net",
        supporter_city=city,
        supporter_country=country,
        language=language,
        kind=kind,
        body=body,
        body_sha256=sha256_hex(body.encode()),
        submitted_at=CREATED,
        event="",
        ref=message_ref(LINK_KEY, "form", f"ext-{ident}"),
        body_mac=body_mac(LINK_KEY, body),
    )


def document(
    messages: tuple[Message, ...],
    kind: RecipientKind = RecipientKind.AUTHORITY,
    fmt: Format = Format.BUNDLE,
    bundle_id: str = BUNDLE_ID,
) -> BundleDocument:
    recipient = Recipient(
        case="free-rosa",
        slug=f"{kind}-desk",
        kind=kind,
        name="Minister of Justice" if kind is RecipientKind.AUTHORITY else "Rosa Example",
        language="pt",
        channels=(ChannelName.EMAIL, ChannelName.POST),
        format=fmt,
        cadence=Cadence.ONCE,
        email="desk@example.gov",
        address=Address(
            name="Ministry of Justice",
            street="Avenida Central 100",
            city="Capital City",
            postal_code="1000",
            country="AR",
        ),
        prisoner_number="A-77310" if kind is RecipientKind.PRISON else "",
        facility="Central Detention Centre" if kind is RecipientKind.PRISON else "",
    )
    case = Case(
        slug="free-rosa",
        name="Rosa Example",
        country="AR",
        summary="A community teacher detained for organising a peaceful vigil.",
        demand="Release Rosa Example immediately and unconditionally.",
        auto_approve=frozenset(),
        danger_words=(),
        recipients=(recipient,),
    )
    return BundleDocument(
        bundle_id=bundle_id,
        organisation=ORGANISATION,
        case=case,
        recipient=recipient,
        messages=messages,
        created_at=CREATED,
    )


def pdf_text(pdf: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return "\n".join(page.extract_text() or "" for page in reader.pages)


def pdftotext(pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / "bundle.pdf"
    path.write_bytes(pdf)
    result = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, check=True
    )
    return result.stdout.decode()


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def multiscript() -> tuple[BundleDocument, RenderedBundle]:
    messages = tuple(
        message(i, name, country, body, language=lang)
        for i, (name, country, lang, body) in enumerate(MULTISCRIPT, start=1)
    )
    signatures = tuple(
        message(100 + i, f"Signer{i} Lastname", "FR", "", kind=MessageKind.SIGNATURE)
        for i in range(12)
    )
    doc = document(messages + signatures)
    return doc, render_bundle(doc, SHIPPED_TEMPLATES)


@pytest.fixture(scope="module")
def attacks() -> tuple[RenderedBundle, list[str]]:
    bodies = (*ATTACKS, "Closing message.")
    messages = tuple(
        message(i, f"Person{i} Example", "CL", body) for i, body in enumerate(bodies, start=1)
    )
    fetched: list[str] = []
    original = TemplateFetcher.fetch

    def spy(self: TemplateFetcher, url: str, headers: object = None) -> object:
        fetched.append(url)
        return original(self, url, headers)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pdf_module.TemplateFetcher, "fetch", spy)
        rendered = render_bundle(document(messages), SHIPPED_TEMPLATES)
    return rendered, fetched


# -- supporter text is text ------------------------------------------------------------


def test_template_syntax_in_a_body_stays_literal(
    attacks: tuple[RenderedBundle, list[str]],
) -> None:
    text = flat(pdf_text(attacks[0].pdf))
    assert "{{ 7*7 }}" in text
    assert "{% for x in range(3) %}x{% endfor %}" in text
    assert "49" not in text
    assert "xxx" not in text


@pytest.mark.parametrize("body", ATTACKS[2:])
def test_markup_in_a_body_stays_literal(
    attacks: tuple[RenderedBundle, list[str]], body: str
) -> None:
    assert body in flat(pdf_text(attacks[0].pdf))


def test_nothing_outside_the_templates_is_fetched(
    attacks: tuple[RenderedBundle, list[str]],
) -> None:
    fetched = attacks[1]
    root = SHIPPED_TEMPLATES.resolve().as_uri() + "/"
    assert fetched, "the stylesheet is fetched through the fetcher"
    assert all(url.startswith(root) for url in fetched), fetched
    assert not any("passwd" in url or "169.254" in url for url in fetched)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "http://169.254.169.254/",
        "https://example.org/style.css",
        "ftp://example.org/file",
        "gopher://example.org/",
        "file://otherhost/etc/passwd",
    ],
)
def test_fetcher_refuses_anything_but_templates(url: str) -> None:
    with pytest.raises(FetchRefusedError):
        TemplateFetcher(SHIPPED_TEMPLATES)(url)


def test_fetcher_refuses_dot_dot_and_escaping_symlinks(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(SHIPPED_TEMPLATES, templates)
    (tmp_path / "secret.txt").write_text("secret")
    (templates / "escape.css").symlink_to(tmp_path / "secret.txt")
    fetcher = TemplateFetcher(templates)
    root = templates.resolve().as_uri()
    for url in (
        f"{root}/../secret.txt",
        f"{root}/%2e%2e/secret.txt",
        f"{root}/escape.css",
        f"{root}/",
        f"{root}/missing.css",
    ):
        with pytest.raises(FetchRefusedError):
            fetcher(url)
    assert fetcher(f"{root}/base.css").read().startswith(b"/*")
    assert fetcher("data:text/plain,hello").read() == b"hello"


@pytest.mark.parametrize(
    "reference",
    ["url(../secret.png)", "url(file:///etc/passwd)", "url(http://169.254.169.254/x.png)"],
)
def test_template_resource_outside_the_templates_stops_the_render(
    tmp_path: Path, reference: str
) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(SHIPPED_TEMPLATES, templates)
    (tmp_path / "secret.png").write_bytes(b"not an image")
    with (templates / "base.css").open("a") as css:
        css.write(f"\nbody {{ background-image: {reference}; }}\n")
    doc = document((message(1, "Ana Pereira", "BR", "Hello"),))
    with pytest.raises(RenderError, match="refused to fetch"):
        render_bundle(doc, templates)


def test_html_to_pdf_refuses_remote_resources_in_its_own_html() -> None:
    html = '<link rel="stylesheet" href="http://169.254.169.254/x.css"><p>hello</p>'
    with pytest.raises(RenderError, match=r"169\.254\.169\.254"):
        html_to_pdf(html, templates=SHIPPED_TEMPLATES)


# -- scripts, directions, fonts --------------------------------------------------------


def test_every_script_is_in_the_text(
    multiscript: tuple[BundleDocument, RenderedBundle], tmp_path: Path
) -> None:
    pdf = multiscript[1].pdf
    text = flat(pdf_text(pdf)) + " " + flat(pdftotext(pdf, tmp_path))
    words = ("você", "Дорогая", "Αγαπητή", "عزيزتي", "רוזה", "罗莎", "ローザ", "로사에게", "प्रिय")
    for word in words:
        assert word in text, word


def test_fonts_are_embedded_noto(
    multiscript: tuple[BundleDocument, RenderedBundle], tmp_path: Path
) -> None:
    path = tmp_path / "bundle.pdf"
    path.write_bytes(multiscript[1].pdf)
    listing = subprocess.run(["pdffonts", str(path)], capture_output=True, check=True, text=True)
    rows = [line.split() for line in listing.stdout.splitlines()[2:] if line.strip()]
    names = {row[0].split("+", 1)[-1] for row in rows}
    for family in (
        "Noto-Sans",
        "Noto-Sans-Arabic",
        "Noto-Sans-Hebrew",
        "Noto-Sans-Devanagari",
        "Noto-Sans-CJK-SC",
        "Noto-Sans-CJK-JP",
        "Noto-Sans-CJK-KR",
    ):
        assert family in names, (family, names)
    assert all(row[-5] == "yes" for row in rows), "every font is embedded (emb column)"


def test_rtl_bodies_and_bidi_controls_stay_in_their_message(tmp_path: Path) -> None:
    messages = (
        message(1, "Sara Ahmad", "EG", "مرحبا روزا، نحن معك", language="ar"),
        message(2, "Evil\u202eName Person", "DE", "Override \u202e never closed here"),
        message(3, "Noa Levi", "IL", "שלום רוזה \u202b still open", language="he"),
        message(4, "Next Person", "CL", "A plain closing line."),
    )
    rendered = render_bundle(document(messages), SHIPPED_TEMPLATES)
    text = pdf_text(rendered.pdf)
    lines = [line.strip() for line in text.splitlines()]
    assert "Next Person, Chile" in lines
    assert "A plain closing line." in lines
    assert "EvilName Person, Germany" in lines
    assert "Noa Levi, Israel" in lines
    for word in ("مرحبا", "שלום"):
        assert word in text


# -- prison privacy ------------------------------------------------------------------


def test_prison_bundle_shows_first_names_and_countries_only() -> None:
    messages = (
        message(1, "Ana Pereira-Souza", "BR", "Força, Rosa!", city="Porto Alegre"),
        message(2, "Tom Whitfield", "GB", "", city="Leeds", kind=MessageKind.SIGNATURE),
    )
    rendered = render_bundle(document(messages, RecipientKind.PRISON), SHIPPED_TEMPLATES)
    reader = pypdf.PdfReader(io.BytesIO(rendered.pdf))
    text = pdf_text(rendered.pdf)
    assert "Ana, Brazil" in text
    assert "Tom, United Kingdom" in text
    for private in ("Pereira", "Souza", "Whitfield", "example.net", "Porto Alegre", "Leeds"):
        assert private not in text, private
    cover = reader.pages[0].extract_text()
    assert "A-77310" in cover
    assert "Central Detention Centre" in cover


# -- pages, footer, reproducibility, manifest ----------------------------------------


def test_footer_counts_pages_and_matches_pypdf(
    multiscript: tuple[BundleDocument, RenderedBundle],
) -> None:
    rendered = multiscript[1]
    reader = pypdf.PdfReader(io.BytesIO(rendered.pdf))
    assert rendered.pages == len(reader.pages) == pdf_page_count(rendered.pdf)
    for number, page in enumerate(reader.pages, start=1):
        footer = page.extract_text()
        assert re.search(rf"page {number} of {rendered.pages}\b", footer, re.IGNORECASE)
        assert BUNDLE_ID in footer
    width, height = (float(v) for v in reader.pages[0].mediabox.upper_right)
    assert (round(width), round(height)) == (595, 842)  # A4 in points


def test_same_document_renders_to_the_same_bytes(
    multiscript: tuple[BundleDocument, RenderedBundle], monkeypatch: pytest.MonkeyPatch
) -> None:
    doc, first = multiscript
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "12345")  # the host's value must not leak in
    again = render_bundle(doc, SHIPPED_TEMPLATES)
    assert os.environ["SOURCE_DATE_EPOCH"] == "12345"
    assert again.pdf == first.pdf
    assert again.manifest == first.manifest
    info = pypdf.PdfReader(io.BytesIO(first.pdf)).metadata
    assert info is not None
    assert info.get("/CreationDate") == "D:20251126093000Z"


def test_manifest_describes_the_bundle(
    multiscript: tuple[BundleDocument, RenderedBundle],
) -> None:
    doc, rendered = multiscript
    manifest = rendered.manifest
    assert manifest["bundle_id"] == BUNDLE_ID
    assert manifest["case"] == "free-rosa"
    assert manifest["recipient"] == "authority-desk"
    assert manifest["recipient_kind"] == "authority"
    assert manifest["created_at"] == "2025-11-26T09:30:00+00:00"
    assert manifest["message_count"] == len(doc.messages) == 21
    assert manifest["country_count"] == 10
    assert manifest["countries"] == ["BR", "CN", "EG", "FR", "GR", "IN", "IL", "JP", "RU", "KR"]
    assert re.fullmatch(r"[0-9a-f]{16}", rendered.template_version)
    assert manifest["template_version"] == rendered.template_version
    messages = manifest["messages"]
    assert isinstance(messages, list)
    # the supporter's id and words appear only keyed: nothing to confirm a guess against
    assert messages[0] == {
        "id": 1,
        "ref": message_ref(LINK_KEY, "form", "ext-1"),
        "body_mac": body_mac(LINK_KEY, doc.messages[0].body),
    }
    text = json.dumps(manifest)
    assert "ext-1" not in text
    assert doc.messages[0].body_sha256 not in text


def test_cover_tells_the_count_and_the_demand(
    multiscript: tuple[BundleDocument, RenderedBundle],
) -> None:
    cover = flat(pypdf.PdfReader(io.BytesIO(multiscript[1].pdf)).pages[0].extract_text())
    assert "21 people from 10 countries wrote to you about Rosa Example" in cover
    assert "Release Rosa Example immediately and unconditionally." in cover
    assert "26 November 2025" in cover
    assert "12 Harbour Lane" in cover


@pytest.mark.slow
def test_a_thousand_messages_render_in_reasonable_time() -> None:
    bodies = [body for _, _, _, body in MULTISCRIPT]
    messages = tuple(
        message(i, f"Person{i} Example", "BR", f"{bodies[i % len(bodies)]} " * (1 + i % 4))
        for i in range(1000)
    )
    started = time.perf_counter()
    rendered = render_bundle(document(messages), SHIPPED_TEMPLATES)
    elapsed = time.perf_counter() - started
    assert rendered.pages == pdf_page_count(rendered.pdf)
    assert 10 < rendered.pages < 200
    assert elapsed < 180


# -- e-mail --------------------------------------------------------------------------


LIMITS = EmailSettings()

HEADERS = [
    "From",
    "To",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
]


def parse(raw: bytes) -> email.message.EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


def test_email_has_exactly_the_expected_headers(
    multiscript: tuple[BundleDocument, RenderedBundle],
) -> None:
    doc, rendered = multiscript
    doc = dataclasses.replace(
        doc, recipient=dataclasses.replace(doc.recipient, format=Format.DIGEST)
    )
    (raw,) = compose_email(
        doc, rendered, delivery_id="dlv-0001", templates=SHIPPED_TEMPLATES, limits=LIMITS
    )
    assert b"\r\n" in raw
    assert raw.count(b"\n") == raw.count(b"\r\n")
    parsed = parse(raw)
    assert list(parsed.keys()) == HEADERS
    assert parsed["Message-ID"] == "<dlv-0001@bounces.example.org>"
    assert parsed["From"].addresses[0].addr_spec == "letters@example.org"
    assert parsed["To"].addresses[0].addr_spec == "desk@example.gov"
    assert parsed["Reply-To"].addresses[0].addr_spec == "caseworkers@example.org"
    assert parsed["Subject"] == "Rosa Example: 21 messages from 10 countries"
    assert parsed["Date"] == "Wed, 26 Nov 2025 09:30:00 +0000"
    assert parsed.get_content_type() == "multipart/mixed"
    attachments = list(parsed.iter_attachments())
    assert len(attachments) == 1
    assert attachments[0].get_content_type() == "application/pdf"
    assert attachments[0].get_filename() == f"{BUNDLE_ID}.pdf"
    assert attachments[0].get_content() == rendered.pdf
    text = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    assert text is not None
    assert html is not None
    content = text.get_content()
    assert "21 people from 10 countries" in content
    assert "The full bundle of 21 messages is attached" in content
    assert content.index("Ana Pereira, Brazil") < content.index("Ivan Petrov")  # pt first


def test_email_is_deterministic_and_bundle_format_is_a_cover_note(
    multiscript: tuple[BundleDocument, RenderedBundle],
) -> None:
    doc, rendered = multiscript
    (first,) = compose_email(
        doc, rendered, delivery_id="dlv-0002", templates=SHIPPED_TEMPLATES, limits=LIMITS
    )
    (second,) = compose_email(
        doc, rendered, delivery_id="dlv-0002", templates=SHIPPED_TEMPLATES, limits=LIMITS
    )
    assert first == second
    text = parse(first).get_body(("plain",))
    assert text is not None
    content = text.get_content()
    assert "the messages are in the attached pdf" in content.lower()
    assert "21 messages about Rosa Example" in content
    assert "Дорогая" not in content  # no sample in a cover note


def test_supporter_text_never_becomes_a_header() -> None:
    hostile = "Mallory\r\nBcc: x@example.org\r\nSubject: hijacked"
    messages = (
        message(1, hostile, "BR", "Body\r\nBcc: y@example.org\r\n\r\n--boundary", language="pt"),
        message(2, "Ana Pereira", "BR", "<b>bold</b> & {{ 7*7 }}", language="pt"),
    )
    doc = document(messages, fmt=Format.DIGEST)
    rendered = RenderedBundle(pdf=b"%PDF-1.7\n%fake\n", pages=1, manifest={}, template_version="x")
    (raw,) = compose_email(
        doc, rendered, delivery_id="dlv-0003", templates=SHIPPED_TEMPLATES, limits=LIMITS
    )
    parsed = parse(raw)
    assert list(parsed.keys()) == HEADERS
    assert "Bcc" not in parsed
    assert parsed["Subject"] == "Rosa Example: 2 messages from 1 country"
    assert len(list(parsed.iter_attachments())) == 1
    html = parsed.get_body(("html",))
    assert html is not None
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; {{ 7*7 }}" in html.get_content()
    assert "<b>bold</b>" not in html.get_content()


def test_header_injection_through_campaign_data_is_refused() -> None:
    doc = document((message(1, "Ana Pereira", "BR", "Hello"),), fmt=Format.DIGEST)
    rendered = RenderedBundle(pdf=b"%PDF-1.7\n", pages=1, manifest={}, template_version="x")
    bad_address = dataclasses.replace(
        doc, recipient=dataclasses.replace(doc.recipient, email="a@example.org\r\nBcc: x@y.z")
    )
    with pytest.raises(RenderError):
        compose_email(
            bad_address, rendered, delivery_id="dlv-1", templates=SHIPPED_TEMPLATES, limits=LIMITS
        )
    with pytest.raises(RenderError):
        compose_email(
            doc,
            rendered,
            delivery_id="dlv-1>\r\nBcc: x",
            templates=SHIPPED_TEMPLATES,
            limits=LIMITS,
        )
    bad_name = dataclasses.replace(
        doc, recipient=dataclasses.replace(doc.recipient, name="Desk\r\nBcc: x@example.org")
    )
    (raw,) = compose_email(
        bad_name, rendered, delivery_id="dlv-1", templates=SHIPPED_TEMPLATES, limits=LIMITS
    )
    parsed = parse(raw)
    assert list(parsed.keys()) == HEADERS
    assert parsed["To"].addresses[0].display_name == "Desk Bcc: x@example.org"
