"""A real PDF of 3,000 messages as blocks: each pre-written text printed once, read back."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pypdf
import pytest
from PIL import Image, ImageChops

from delivery.config import SHIPPED_TEMPLATES
from delivery.models import Message, MessageKind, RecipientKind, sha256_hex
from delivery.render.blocks import Block, NameBlock, TextBlock
from delivery.render.bundle import supporter_display
from delivery.render.env import make_environment, render_template
from delivery.render.grouping import build_blocks
from delivery.render.pdf import html_to_pdf, pdf_page_count

pytestmark = pytest.mark.slow

START = datetime(2025, 11, 1, 8, 0, tzinfo=UTC)

GIVEN = (
    "Ana", "Tomás", "Lena", "Omar", "Mei", "Ivan", "Sara", "Noa", "Yuki", "Priya",
    "Jonas", "Amara", "Karim", "Elif", "Mateo", "Ines", "Kofi", "Freya", "Ravi", "Zofia",
    "Lucas", "Hana", "Tariq", "Maja", "Diego", "Aiko", "Nadia", "Emil", "Salma", "Leon",
)  # fmt: skip
FAMILY = (
    "Harbourne", "Lindqvale", "Fairweld", "Westbrake", "Ostmoor", "Carrowby", "Dunholt",
    "Pellingar", "Ravensike", "Thornwick", "Ashcombe", "Brindlemoor", "Kestrow", "Merriden",
    "Quillfort", "Saltmarsh", "Tenwold", "Umberlee", "Varnholm", "Wexcombe", "Yarrowdene",
    "Ellisford", "Hollowmere", "Northam-Reyes", "Casterley", "Bramblecot", "Fenwright",
    "Glenharrow", "Ironside-Vale", "Larkhollow",
)  # fmt: skip
COUNTRIES = ("BR", "GB", "DE", "FR", "ES", "IN", "JP", "KE", "MX", "PL", "SE", "TR")

SHARED_TEXTS = (
    (
        "letter",
        "Dear Minister,\n\nI am writing to ask you to release Rosa Example, a community "
        "teacher detained for organising a peaceful vigil. Marker text one. Peaceful "
        "assembly is a right, not a crime.\n\nYours sincerely,",
    ),
    (
        "letter",
        "Dear Minister,\n\nRosa Example has now spent many months in detention without "
        "trial. Marker text two. I urge you to ensure she has access to a lawyer of her "
        "choosing, to her family and to any medical care she needs, and to release her "
        "while the case against her is reviewed.\n\nWith respect,",
    ),
    (
        "letter",
        "Querida Rosa,\n\nEstamos pensando em você todos os dias. Marker text three. "
        "Você não está sozinha.\n\nCom carinho,",
    ),
    (
        "petition",
        "We, the undersigned, call on the authorities to release Rosa Example immediately "
        "and unconditionally. Marker text four.",
    ),
    (
        "letter",
        "Dear Rosa,\n\nMarker text five. Thousands of people around the world know your "
        "name and are standing with you. Stay strong.",
    ),
)
SHARED_COUNTS = (900, 600, 450, 350, 200)  # 2,500 messages sharing 5 texts
PERSONAL = 200
SIGNATURES = 300


@dataclass(frozen=True)
class Rendered:
    messages: tuple[Message, ...]
    blocks: tuple[Block, ...]
    pdf: bytes
    pages: int
    text: str
    path: Path


def supporter(ident: int) -> str:
    return f"{GIVEN[ident % len(GIVEN)]} {FAMILY[(ident // len(GIVEN)) % len(FAMILY)]}"


def message(ident: int, body: str, kind: MessageKind) -> Message:
    return Message(
        id=ident,
        source="form",
        external_id=f"ext-{ident}",
        case="free-rosa",
        supporter_name=supporter(ident),
        supporter_email=f"supporter{ident}@example.net",
        supporter_city="Springfield",
        supporter_country=COUNTRIES[ident % len(COUNTRIES)],
        language="pt" if "Querida" in body else "en",
        kind=kind,
        body=body,
        body_sha256=sha256_hex(body.encode()),
        submitted_at=START + timedelta(minutes=ident),
        event="",
    )


def reflowed(text: str, ident: int) -> str:
    """The same wording as a form might send it: other line breaks and spacing."""
    return text.replace(". ", ".\n") if ident % 3 == 0 else f"  {text}\n"


def personal_body(ident: int) -> str:
    sentences = "We are thinking of you and of your family. " * (1 + ident % 4)
    return f"Dear Rosa,\n\nPersonal note {ident:04d}. {sentences}\n\nFrom {supporter(ident)}"


def messages() -> tuple[Message, ...]:
    out: list[Message] = []
    ident = 1
    for (kind, text), count in zip(SHARED_TEXTS, SHARED_COUNTS, strict=True):
        message_kind = MessageKind.PETITION if kind == "petition" else MessageKind.EMAIL
        for _ in range(count):
            out.append(message(ident, reflowed(text, ident), message_kind))
            ident += 1
    for _ in range(PERSONAL):
        out.append(message(ident, personal_body(ident), MessageKind.LETTER))
        ident += 1
    for _ in range(SIGNATURES):
        out.append(message(ident, "", MessageKind.SIGNATURE))
        ident += 1
    return tuple(out)


PAGE = """\
{% from "blocks.html.j2" import block %}
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Blocks</title>
{% for sheet in stylesheets %}
<link rel="stylesheet" href="{{ sheet }}">
{% endfor %}
</head>
<body class="kind-{{ kind }}">
<section class="messages">
<h2>Messages</h2>
{% for b in blocks %}
{{ block(b) }}
{% endfor %}
</section>
</body>
</html>
"""


def render_html(blocks: Sequence[Block], kind: RecipientKind, templates: Path) -> str:
    """A minimal page of blocks, over a copy of the shipped templates plus this page."""
    shutil.copytree(SHIPPED_TEMPLATES, templates)
    (templates / "test_blocks_page.html.j2").write_text(PAGE, encoding="utf-8")
    sheets = [s for s in ("page.css", "base.css", "blocks.css") if (templates / s).is_file()]
    env = make_environment(templates)
    return render_template(
        env, "test_blocks_page.html.j2", blocks=blocks, kind=kind.value, stylesheets=sheets
    )


def pdftotext(path: Path) -> str:
    done = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, check=True
    )
    return done.stdout.decode()


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    folder = tmp_path_factory.mktemp("blocks")
    all_messages = messages()
    blocks = build_blocks(all_messages, RecipientKind.AUTHORITY)
    html = render_html(blocks, RecipientKind.AUTHORITY, folder / "templates")
    pdf, pages = html_to_pdf(html, templates=folder / "templates")
    path = folder / "blocks.pdf"
    path.write_bytes(pdf)
    return Rendered(all_messages, blocks, pdf, pages, flat(pdftotext(path)), path)


def test_three_thousand_messages_are_a_few_dozen_pages(rendered: Rendered) -> None:
    assert len(rendered.messages) == 3000
    assert rendered.pages == pdf_page_count(rendered.pdf)
    assert 10 < rendered.pages < 60


def test_each_shared_text_is_printed_once(rendered: Rendered) -> None:
    for number in ("one", "two", "three", "four", "five"):
        assert rendered.text.count(f"Marker text {number}.") == 1, number
    shared = [b for b in rendered.blocks if isinstance(b, TextBlock) and b.shared]
    assert [b.signatory_total for b in shared if b.part == 1] == [900, 600, 450, 200, 350]
    assert [(b.part, b.parts, len(b.signatories)) for b in shared[:2]] == [(1, 2, 600), (2, 2, 300)]
    assert "Sent by 900 people part 1 of 2" in rendered.text
    assert "Sent by 900 people continued, part 2 of 2" in rendered.text
    assert "Sent by 900 people" in rendered.text
    assert "Signed by 350 people" in rendered.text


def test_every_personal_message_is_printed(rendered: Rendered) -> None:
    notes = re.findall(r"Personal note (\d{4})\.", rendered.text)
    assert len(notes) == len(set(notes)) == PERSONAL


def test_every_message_is_printed_once_under_its_supporter(rendered: Rendered) -> None:
    expected = Counter(supporter_display(m, RecipientKind.AUTHORITY) for m in rendered.messages)
    found = {
        shown: len(re.findall(rf"(?<!\w){re.escape(shown)}(?!\w)", rendered.text))
        for shown in expected
    }
    assert found == dict(expected)
    assert "supporter1@example.net" not in rendered.text
    assert f"Signatures ({SIGNATURES})" in rendered.text


def test_blocks_are_anchors_in_the_pdf(rendered: Rendered) -> None:
    html_ids = {b.anchor for b in rendered.blocks}
    assert len(html_ids) == len(rendered.blocks)
    names = [b for b in rendered.blocks if isinstance(b, NameBlock)]
    assert len(names) == 1
    assert names[0].total == SIGNATURES


def test_pages_look_like_a_document(rendered: Rendered, tmp_path: Path) -> None:
    """First pages as PNG: printed, not blank, and A4."""
    reader = pypdf.PdfReader(io.BytesIO(rendered.pdf))
    width, height = (float(v) for v in reader.pages[0].mediabox.upper_right)
    assert (round(width), round(height)) == (595, 842)
    subprocess.run(
        ["pdftoppm", "-r", "50", "-png", "-f", "1", "-l", "3", str(rendered.path),
         str(tmp_path / "page")],
        check=True,
    )  # fmt: skip
    pngs = sorted(tmp_path.glob("page-*.png"))
    assert len(pngs) == 3
    assert all(png.stat().st_size > 5000 for png in pngs)


def test_prison_blocks_are_black_on_white_with_first_names(tmp_path: Path) -> None:
    chosen = (*messages()[:40], *messages()[2500:2504], *messages()[2700:2720])
    blocks = build_blocks(chosen, RecipientKind.PRISON)
    html = render_html(blocks, RecipientKind.PRISON, tmp_path / "templates")
    pdf, pages = html_to_pdf(html, templates=tmp_path / "templates")
    path = tmp_path / "prison.pdf"
    path.write_bytes(pdf)
    text = flat(pdftotext(path))
    assert text.count("Marker text one.") == 1
    assert "Tomás, United Kingdom" in text
    for private in ("Harbourne", "Lindqvale", "Springfield", "example.net"):
        assert private not in text, private
    subprocess.run(
        ["pdftoppm", "-r", "40", "-png", str(path), str(tmp_path / "prison")], check=True
    )
    for png in sorted(tmp_path.glob("prison-*.png")):
        with Image.open(png) as image:
            red, green, blue = image.convert("RGB").split()
        # Grey everywhere (red = green = blue): no colour anywhere on the page.
        assert ImageChops.difference(red, green).getbbox() is None, png.name
        assert ImageChops.difference(green, blue).getbbox() is None, png.name
    assert pages >= 1
