"""A real PDF in every required script: each character has a font, and every font is embedded."""

from __future__ import annotations

import functools
import html
import shutil
import subprocess
from pathlib import Path

import pytest

from delivery.config import SHIPPED_TEMPLATES
from delivery.render import fonts
from delivery.render.pdf import html_to_pdf

SAMPLES = (
    ("en", "ltr", "Free Rosa! Liberté, égalité, Świętość."),
    ("ru", "ltr", "Свобода Розе! Мы с вами."),
    ("el", "ltr", "Ελευθερία για τη Ρόζα!"),
    ("ar", "rtl", "الحرية لروزا، نحن معك."),
    ("he", "rtl", "חופש לרוזה! אנחנו איתך."),
    ("zh", "ltr", "释放罗莎！我们想念你。"),
    ("ja", "ltr", "ローザさん、あなたのことを思っています。"),
    ("ko", "ltr", "로사에게, 우리는 당신을 생각합니다."),
    ("hi", "ltr", "प्रिय रोज़ा, हम आपके साथ हैं।"),
    ("bn", "ltr", "প্রিয় রোজা, আমরা তোমার পাশে আছি।"),
    ("th", "ltr", "โรซ่าที่รัก เราคิดถึงคุณ"),
    ("ka", "ltr", "ძვირფასო როზა, ჩვენ შენთან ვართ."),
    ("hy", "ltr", "Սիրելի Ռոզա, մենք քեզ հետ ենք։"),
    ("am", "ltr", "ውድ ሮዛ፣ ከአንቺ ጋር ነን።"),
    ("und", "ltr", "🌻💪 ✊🏿 🕊️"),
)

# Families that only these scripts can come from (others may come from several fonts).
SCRIPT_FAMILIES = (
    "Noto Sans Arabic",
    "Noto Sans Hebrew",
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Noto Sans CJK KR",
    "Noto Sans Devanagari",
    "Noto Sans Bengali",
    "Noto Sans Thai",
    "Noto Sans Ethiopic",
    "Noto Color Emoji",
)


def page_html() -> str:
    paragraphs = "".join(
        f'<p lang="{lang}" dir="{direction}">{html.escape(text)}</p>'
        for lang, direction, text in SAMPLES
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<link rel="stylesheet" href="base.css"></head>'
        f"<body>{paragraphs}</body></html>"
    )


@pytest.fixture(scope="module")
def pdf_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fonts")
    templates = folder / "templates"
    shutil.copytree(SHIPPED_TEMPLATES, templates)
    pdf, pages = html_to_pdf(page_html(), templates=templates)
    assert pages == 1
    path = folder / "scripts.pdf"
    path.write_bytes(pdf)
    return path


def pdffonts(path: Path) -> list[list[str]]:
    listing = subprocess.run(["pdffonts", str(path)], capture_output=True, check=True, text=True)
    return [line.split() for line in listing.stdout.splitlines()[2:] if line.strip()]


def family(pdf_name: str) -> str:
    """``ABCDEF+Noto-Sans-CJK-SC`` as fontconfig names it: ``Noto Sans CJK SC``."""
    return pdf_name.split("+", 1)[-1].replace("-", " ")


@functools.cache
def family_files(name: str) -> tuple[Path, ...]:
    listing = subprocess.run(
        ["fc-list", f"{name}", "--format", "%{file}\\n"],
        capture_output=True,
        check=True,
        text=True,
    )
    return tuple(sorted({Path(line) for line in listing.stdout.splitlines() if line}))


def test_samples_pass_preflight() -> None:
    fonts.preflight((text for _, _, text in SAMPLES), what="bundle bnd-scripts")


def test_every_font_is_embedded(pdf_path: Path) -> None:
    assert fonts.unembedded_fonts(pdf_path.read_bytes()) == []
    rows = pdffonts(pdf_path)
    assert rows
    assert all(row[-5] == "yes" for row in rows), rows


def test_script_fonts_are_used(pdf_path: Path) -> None:
    used = {family(row[0]) for row in pdffonts(pdf_path)}
    for name in SCRIPT_FAMILIES:
        assert name in used, (name, used)


def test_the_fonts_in_the_pdf_cover_every_sample(pdf_path: Path) -> None:
    used = {family(row[0]) for row in pdffonts(pdf_path)}
    files = [path for name in used for path in family_files(name)]
    assert files, used
    covered = fonts.build_coverage(files)
    for _, _, text in SAMPLES:
        missing = {char for char in text if not fonts.ignored(char) and ord(char) not in covered}
        assert not missing, (text, sorted(f"U+{ord(char):04X}" for char in missing))
