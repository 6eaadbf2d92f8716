"""Rendering without PDFs: supporter lines, the template environment, text helpers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import jinja2
import pytest

from delivery.config import SHIPPED_TEMPLATES
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
    sha256_hex,
)
from delivery.render.bundle import (
    BUNDLE_TEMPLATES,
    BundleDocument,
    render_bundle_html,
    supporter_display,
    template_version,
)
from delivery.render.env import autoescape_for, make_environment, render_template
from delivery.render.text import (
    balance_bidi,
    country_name,
    direction,
    printable,
    safe_label,
    shorten,
)

CREATED = datetime(2025, 11, 26, 9, 30, tzinfo=UTC)


def message(
    name: str = "Ana Pereira Souza",
    *,
    city: str = "Porto Alegre",
    country: str = "BR",
    body: str = "Força!",
    kind: MessageKind = MessageKind.LETTER,
    language: str = "pt",
) -> Message:
    return Message(
        id=7,
        source="form",
        external_id="ext-7",
        case="free-rosa",
        supporter_name=name,
        supporter_email="ana@example.net",
        supporter_city=city,
        supporter_country=country,
        language=language,
        kind=kind,
        body=body,
        body_sha256=sha256_hex(body.encode()),
        submitted_at=CREATED,
        event="",
    )


def document(kind: RecipientKind, *messages: Message) -> BundleDocument:
    recipient = Recipient(
        case="free-rosa",
        slug="desk",
        kind=kind,
        name="Rosa Example",
        language="pt",
        channels=(ChannelName.POST,),
        format=Format.BUNDLE,
        cadence=Cadence.ONCE,
        prisoner_number="A-77310",
        facility="Central Detention Centre",
    )
    case = Case(
        slug="free-rosa",
        name="Rosa Example",
        country="AR",
        summary="",
        demand="Release Rosa Example.",
        auto_approve=frozenset(),
        danger_words=(),
        recipients=(recipient,),
    )
    organisation = Organisation(
        name="Open Letters Network",
        email="letters@example.org",
        reply_to="letters@example.org",
        bounce_domain="bounces.example.org",
        address=Address(name="", street="1 Lane", city="Bristol", postal_code="", country="GB"),
    )
    return BundleDocument(
        bundle_id="bnd-unit",
        organisation=organisation,
        case=case,
        recipient=recipient,
        messages=messages,
        created_at=CREATED,
    )


# -- supporter_display ---------------------------------------------------------------


def test_authority_sees_full_name_and_country() -> None:
    assert supporter_display(message(), RecipientKind.AUTHORITY) == "Ana Pereira Souza, Brazil"


def test_prison_sees_first_name_and_country_only() -> None:
    shown = supporter_display(message(), RecipientKind.PRISON)
    assert shown == "Ana, Brazil"
    assert "Porto" not in shown
    assert "example.net" not in shown


def test_family_sees_first_name_and_city_or_country() -> None:
    assert supporter_display(message(), RecipientKind.FAMILY) == "Ana, Porto Alegre"
    assert supporter_display(message(city=""), RecipientKind.FAMILY) == "Ana, Brazil"


def test_supporter_line_without_name_or_country() -> None:
    assert supporter_display(message("  "), RecipientKind.PRISON) == "A supporter, Brazil"
    assert supporter_display(message(country=""), RecipientKind.AUTHORITY) == "Ana Pereira Souza"


def test_supporter_line_drops_bidi_controls_and_line_breaks() -> None:
    shown = supporter_display(message("Evil\u202eName\r\nBcc: x"), RecipientKind.AUTHORITY)
    assert shown == "EvilName Bcc: x, Brazil"


# -- environment -----------------------------------------------------------------------


def test_autoescape_is_on_except_for_plain_text() -> None:
    assert autoescape_for("bundle.html.j2")
    assert autoescape_for("digest.html.j2")
    assert autoescape_for("base.css")
    assert autoescape_for(None)
    assert not autoescape_for("digest.txt.j2")


def test_environment_escapes_values_and_never_compiles_them(tmp_path: Path) -> None:
    (tmp_path / "page.html.j2").write_text("<p>{{ body }}</p>")
    (tmp_path / "page.txt.j2").write_text("{{ body }}")
    env = make_environment(tmp_path)
    body = "<b>{{ 7*7 }}</b>"
    assert render_template(env, "page.html.j2", body=body) == (
        "<p>&lt;b&gt;{{ 7*7 }}&lt;/b&gt;</p>"
    )
    assert render_template(env, "page.txt.j2", body=body) == body


def test_environment_is_sandboxed_and_strict(tmp_path: Path) -> None:
    env = make_environment(tmp_path)
    assert isinstance(env, jinja2.sandbox.SandboxedEnvironment)
    assert env.undefined is jinja2.StrictUndefined
    assert env.trim_blocks
    assert env.lstrip_blocks


def test_undefined_names_the_template_and_line(tmp_path: Path) -> None:
    (tmp_path / "outer.html.j2").write_text("one\n{% include 'inner.html.j2' %}\n")
    (tmp_path / "inner.html.j2").write_text("first\nsecond {{ missing }}\n")
    env = make_environment(tmp_path)
    with pytest.raises(RenderError, match=r"inner\.html\.j2:2: .*'missing' is undefined"):
        render_template(env, "outer.html.j2")


def test_syntax_error_names_the_template_and_line(tmp_path: Path) -> None:
    (tmp_path / "broken.txt.j2").write_text("fine\n{% if %}\n")
    with pytest.raises(RenderError, match=r"broken\.txt\.j2:2: "):
        render_template(make_environment(tmp_path), "broken.txt.j2")


def test_sandbox_refuses_unsafe_attributes(tmp_path: Path) -> None:
    (tmp_path / "evil.html.j2").write_text("{{ ''.__class__.__mro__ }}")
    with pytest.raises(RenderError, match=r"evil\.html\.j2"):
        render_template(make_environment(tmp_path), "evil.html.j2")


def test_missing_template_and_folder_are_render_errors(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match=r"nowhere\.html\.j2"):
        render_template(make_environment(tmp_path), "nowhere.html.j2")
    with pytest.raises(RenderError, match="not found"):
        make_environment(tmp_path / "absent")


# -- bundle HTML -----------------------------------------------------------------------


def test_bundle_html_escapes_bodies_and_marks_direction() -> None:
    doc = document(
        RecipientKind.AUTHORITY,
        message(body="<script>alert(1)</script> {{ 7*7 }}"),
        message(body="مرحبا \u202e", language="ar"),
        message(kind=MessageKind.SIGNATURE, body=""),
    )
    html = render_bundle_html(doc, SHIPPED_TEMPLATES)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; {{ 7*7 }}" in html
    assert "<script>" not in html
    assert '<div class="body rtl" dir="auto" lang="ar">' in html
    assert '<p class="line rtl" dir="auto">مرحبا \u202e\u202c</p>' in html
    assert '<div class="body ltr" dir="auto" lang="pt">' in html
    assert "3 people from 1 country wrote to you about Rosa Example" in " ".join(html.split())


def test_prison_bundle_html_has_no_surname_email_or_city() -> None:
    html = render_bundle_html(document(RecipientKind.PRISON, message()), SHIPPED_TEMPLATES)
    assert "Ana, Brazil" in html
    for private in ("Pereira", "Souza", "ana@example.net", "Porto Alegre"):
        assert private not in html
    assert "A-77310" in html
    assert 'class="kind-prison"' in html
    assert "<img" not in html


def test_body_lines_keep_their_own_direction() -> None:
    doc = document(
        RecipientKind.AUTHORITY,
        message(body="\n\nمرحبا روزا\n\n\n\nHello Rosa\r\nSecond line\n\n", language="ar"),
    )
    html = " ".join(render_bundle_html(doc, SHIPPED_TEMPLATES).split())
    assert (
        '<div class="body rtl" dir="auto" lang="ar">'
        ' <p class="line rtl" dir="auto">مرحبا روزا</p> <p class="gap"></p>'
        ' <p class="line ltr" dir="auto">Hello Rosa</p>'
        ' <p class="line ltr" dir="auto">Second line</p> </div>'
    ) in html


def test_naive_created_at_is_refused() -> None:
    doc = document(RecipientKind.AUTHORITY, message())
    naive = BundleDocument(
        bundle_id=doc.bundle_id,
        organisation=doc.organisation,
        case=doc.case,
        recipient=doc.recipient,
        messages=doc.messages,
        created_at=datetime(2025, 1, 1),  # naive on purpose
    )
    with pytest.raises(RenderError, match="time zone"):
        render_bundle_html(naive, SHIPPED_TEMPLATES)


def test_template_version_hashes_the_bundle_templates(tmp_path: Path) -> None:
    for name in BUNDLE_TEMPLATES:
        (tmp_path / name).write_text(name)
    first = template_version(tmp_path)
    assert len(first) == 16
    assert int(first, 16) >= 0
    assert template_version(tmp_path) == first
    (tmp_path / "base.css").write_text("changed")
    assert template_version(tmp_path) != first
    (tmp_path / "base.css").unlink()
    with pytest.raises(RenderError, match=r"base\.css"):
        template_version(tmp_path)


# -- text helpers ----------------------------------------------------------------------


def test_balance_bidi_closes_what_a_message_opens() -> None:
    assert balance_bidi("a\u202eb") == "a\u202eb\u202c"
    assert balance_bidi("a\u2067b\u202bc") == "a\u2067b\u202bc\u202c\u2069"
    assert balance_bidi("x\u202eline\nnext") == "x\u202eline\u202c\nnext"


def test_balance_bidi_drops_stray_closers() -> None:
    assert balance_bidi("a\u2069b\u202cc") == "abc"
    assert balance_bidi("\u2068a\u202bb\u2069c") == "\u2068a\u202bb\u202c\u2069c"


def test_direction_follows_the_first_strong_character() -> None:
    assert direction("  123 שלום hello") == "rtl"
    assert direction("«مرحبا»") == "rtl"
    assert direction("Hello مرحبا") == "ltr"
    assert direction("\u2067مرحبا\u2069 hello") == "ltr"  # isolates are skipped
    assert direction("123") == "ltr"


def test_printable_removes_control_characters() -> None:
    assert printable("a\x00b\x07c\r\nd\re\tf\x85g") == "abc\nd\ne\tfg"
    assert safe_label("  Ana\t\u202e Pereira\n ") == "Ana Pereira"


def test_country_names() -> None:
    assert country_name("BR") == "Brazil"
    assert country_name("ir") == "Iran"
    assert country_name("PS") == "State of Palestine"
    assert country_name("XK") == "Kosovo"
    assert country_name("DEU") == "Germany"
    assert country_name("ZZ") == "ZZ"
    assert country_name("") == ""


def test_shorten_cuts_at_a_word() -> None:
    text = "word " * 200
    short = shorten(text, 500)
    assert len(short) <= 500
    assert short.endswith("word…")
    assert shorten("short", 500) == "short"
