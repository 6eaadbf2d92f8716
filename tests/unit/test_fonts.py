"""Font coverage, gaps and the preflight that refuses to print empty boxes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pypdf
import pytest
from pypdf.generic import (
    ArrayObject,
    DecodedStreamObject,
    DictionaryObject,
    NameObject,
)

from delivery.errors import RenderError
from delivery.render import fonts

# One line of supporter text in every script a bundle must print.
REQUIRED_SCRIPTS = (
    ("Latin", "Liberté pour Rosa! Świętość, Ñandú, Đorđe, Şükrü"),
    ("Cyrillic", "Свобода Розе! Ми з тобою, Ґанна"),
    ("Greek", "Ελευθερία για τη Ρόζα! Σκεφτόμαστε εσένα"),
    ("Arabic", "الحرية لروزا، نحن معك كل يوم. پیام از ایران"),
    ("Hebrew", "חופש לרוזה! אנחנו חושבים עלייך"),
    ("Han", "释放罗莎！我们想念你。自由屬於每個人"),
    ("Katakana", "ローザさん、あなたのことを思っています。"),
    ("Hangul", "로사에게, 우리는 당신을 생각합니다."),
    ("Devanagari", "प्रिय रोज़ा, हम आपके साथ हैं।"),
    ("Bengali", "প্রিয় রোজা, আমরা তোমার পাশে আছি।"),
    ("Thai", "โรซ่าที่รัก เราคิดถึงคุณ"),
    ("Georgian", "ძვირფასო როზა, ჩვენ შენთან ვართ."),
    ("Armenian", "Սիրելի Ռոզա, մենք քեզ հետ ենք։"),
    ("Ethiopic", "ውድ ሮዛ፣ ከአንቺ ጋር ነን።"),
    ("Emoji", "🌻💪 ✊🏿 👩‍👩‍👧 🇧🇷 #️⃣ ❤️ 🕊️"),
)

EGYPTIAN_EXTENDED = "\U00013460"  # EGYPTIAN HIEROGLYPH-13460 (Unicode 16)
PRIVATE_USE = "\ue000"
BERIA_ERFE = "\U00016ea0"  # Unicode 16; no Debian font has it yet


@pytest.fixture(autouse=True, scope="module")
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Each test run builds its own coverage cache instead of using the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        fonts.coverage.cache_clear()
        yield
    fonts.coverage.cache_clear()


def uncovered(char: str) -> None:
    """Skip when this machine has a font for ``char`` after all."""
    if ord(char) in fonts.coverage():
        pytest.skip(f"U+{ord(char):04X} is covered by an installed font here")


# ---- every required script prints -------------------------------------------------


@pytest.mark.parametrize(("script", "text"), REQUIRED_SCRIPTS, ids=[s for s, _ in REQUIRED_SCRIPTS])
def test_every_required_script_is_covered(script: str, text: str) -> None:
    assert script in {fonts.script_of(char) for char in text}
    assert fonts.gaps([text]) == []


def test_required_scripts_pass_preflight() -> None:
    fonts.preflight((text for _, text in REQUIRED_SCRIPTS), what="bundle bnd-all")


def test_script_names() -> None:
    assert fonts.script_of("ا") == "Arabic"
    assert fonts.script_of("一") == "Han"
    assert fonts.script_of("가") == "Hangul"
    assert fonts.script_of("ሀ") == "Ethiopic"
    assert fonts.script_of("\U00010900") == "Phoenician"
    assert fonts.script_of("🌻") == "Emoji"
    assert fonts.script_of("\U0001fae9") == "Emoji"  # newer than Python's Unicode data
    assert fonts.script_of("\U0001f3fd") == "Emoji"  # skin tone modifier
    assert fonts.script_of(PRIVATE_USE) == "Private Use Area"
    assert fonts.script_of("\u0378") == fonts.UNASSIGNED
    assert fonts.script_of("\u2a00") == "Supplemental Mathematical Operators"


# ---- characters no font covers ----------------------------------------------------


def test_uncovered_character_names_script_and_package() -> None:
    uncovered(EGYPTIAN_EXTENDED)
    found = fonts.gaps([f"ok {EGYPTIAN_EXTENDED} {EGYPTIAN_EXTENDED}"])
    assert found == [
        fonts.Gap(
            char=EGYPTIAN_EXTENDED,
            codepoint="U+13460",
            script="Egyptian Hieroglyphs",
            package=fonts.ANCIENT_SCRIPTS,
            count=2,
        )
    ]


def test_private_use_has_no_package() -> None:
    uncovered(PRIVATE_USE)
    [gap] = fonts.gaps([f"Rosa {PRIVATE_USE}"])
    assert (gap.codepoint, gap.script, gap.package, gap.count) == (
        "U+E000",
        "Private Use Area",
        "",
        1,
    )
    with pytest.raises(RenderError) as raised:
        fonts.preflight([PRIVATE_USE], what="bundle bnd-pua")
    message = str(raised.value)
    assert message.startswith("bundle bnd-pua: cannot print 1 character in the Private Use")
    assert "(U+E000)" in message
    assert "no Debian package provides a font for it" in message


def test_script_without_any_debian_font() -> None:
    uncovered(BERIA_ERFE)
    [gap] = fonts.gaps([BERIA_ERFE])
    assert (gap.script, gap.package) == ("Beria Erfe", "")


def test_gaps_are_counted_and_sorted_by_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fonts, "coverage", lambda: frozenset(map(ord, "Ros")))
    found = fonts.gaps(["Ros xb", "b bb", "Rosa"])
    assert [(gap.char, gap.count) for gap in found] == [("b", 4), ("a", 1), ("x", 1)]
    assert found[0].codepoint == "U+0062"
    assert found[0].script == "Latin"


# ---- what is ignored and what is checked ------------------------------------------


IGNORED = (
    " \t\n\r\u00a0\u2003\u3000"  # whitespace, no-break and ideographic spaces
    "\u200b\u200c\u200d\u2060\ufeff\u00ad"  # ZWSP, ZWNJ, ZWJ, word joiner, BOM, soft hyphen
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"  # bidi
    "\ufe00\ufe0e\ufe0f\U000e0100\U000e01ef\u180b"  # variation selectors
    "\U000e0067\U000e007f\x00\x07\x1b\x7f\x85"  # emoji tags, C0 and C1 controls
)


def test_whitespace_controls_and_joiners_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    assert all(fonts.ignored(char) for char in IGNORED)
    monkeypatch.setattr(fonts, "coverage", frozenset)  # pretend no font at all
    assert fonts.gaps([IGNORED, IGNORED]) == []


def test_combining_marks_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fonts, "coverage", lambda: frozenset(map(ord, "e")))
    [gap] = fonts.gaps(["e\u0301"])
    assert (gap.codepoint, gap.script) == ("U+0301", "Combining Diacritical Marks")
    assert not fonts.ignored("\u0301")
    assert not fonts.ignored("\u0e31")  # THAI CHARACTER MAI HAN-AKAT
    assert not fonts.ignored("\u20e3")  # COMBINING ENCLOSING KEYCAP


def test_real_combining_marks_are_covered() -> None:
    assert fonts.gaps(["e\u0301 \u0915\u094d\u0937 \u05e9\u05c1 \u0627\u064e"]) == []


# ---- which package to install ------------------------------------------------------


def nothing_installed(package: str) -> bool:
    return False


@pytest.mark.parametrize(
    ("char", "package"),
    [
        ("\U00010900", fonts.NOTO_CORE),  # Phoenician
        ("ا", fonts.NOTO_CORE),
        ("ሀ", fonts.NOTO_CORE),
        ("\u2200", fonts.NOTO_CORE),  # a Common-script symbol
        ("一", fonts.NOTO_CJK),
        ("あ", fonts.NOTO_CJK),
        ("가", fonts.NOTO_CJK),
        ("。", fonts.NOTO_CJK),  # Common script, CJK Symbols and Punctuation
        ("！", fonts.NOTO_CJK),  # fullwidth form
        ("🌻", fonts.NOTO_EMOJI),
        ("\U0001f3fd", fonts.NOTO_EMOJI),
        (EGYPTIAN_EXTENDED, fonts.ANCIENT_SCRIPTS),
        ("\U0002a700", fonts.HANAZONO),  # Han Extension C
        ("\U00030000", fonts.BABELSTONE_HAN),  # Han Extension G
        ("\U00010570", fonts.UNIFONT),  # Vithkuqi
        (PRIVATE_USE, ""),
        (BERIA_ERFE, ""),
        ("\u0378", ""),
    ],
)
def test_package_for_a_bare_machine(char: str, package: str) -> None:
    assert fonts.package_for(char, is_installed=nothing_installed) == package


def test_installed_packages_are_not_suggested_again() -> None:
    def only_cjk(package: str) -> bool:
        return package == fonts.NOTO_CJK

    assert fonts.package_for("\u9fff", is_installed=only_cjk) == fonts.HANAZONO
    assert fonts.package_for("ا", is_installed=lambda package: True) == ""


def test_installed_reads_dpkg() -> None:
    if not Path("/var/lib/dpkg/info").is_dir():
        pytest.skip("not a Debian system")
    assert fonts.installed(fonts.NOTO_CORE)
    assert not fonts.installed("fonts-no-such-package")


# ---- the preflight message ---------------------------------------------------------


def fake_machine(monkeypatch: pytest.MonkeyPatch, covered: str = "") -> None:
    monkeypatch.setattr(fonts, "coverage", lambda: frozenset(map(ord, covered)))
    monkeypatch.setattr(fonts, "installed", nothing_installed)


def test_preflight_names_bundle_script_and_package(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_machine(monkeypatch, covered="Rosa ")
    phoenician = "\U00010900\U00010901\U00010902\U00010903"
    with pytest.raises(RenderError) as raised:
        fonts.preflight(["Rosa " + phoenician * 2, "Rosa \U00010900"], what="bundle bnd-7")
    assert str(raised.value) == (
        "bundle bnd-7: cannot print 4 characters in the Phoenician script "
        "(U+10900 U+10901 U+10902 …): no installed font covers them; "
        "install the Debian package fonts-noto-core"
    )


def test_preflight_lists_at_most_five_scripts(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_machine(monkeypatch)
    text = "ا" * 9 + "一" * 8 + "🌻" * 7 + "\U00010570" * 6 + PRIVATE_USE * 5 + "ሀ" * 4 + "a"
    with pytest.raises(RenderError) as raised:
        fonts.preflight([text], what="bundle bnd-8")
    message = str(raised.value)
    parts = message.removeprefix("bundle bnd-8: ").split("; ")
    assert (
        parts[0]
        == "cannot print 1 character in the Arabic script (U+0627): no installed font covers it"
    )
    assert parts[1] == "install the Debian package fonts-noto-core"
    assert "in the Han script (U+4E00)" in parts[2]
    assert "1 emoji (U+1F33B)" in message
    assert "install the Debian package fonts-noto-color-emoji" in message
    assert "Vithkuqi script (U+10570)" in message
    assert "Private Use Area block (U+E000)" in message
    assert "Ethiopic" not in message
    assert "Latin" not in message
    assert message.endswith("; and 2 more scripts")


def test_preflight_passes_clean_text() -> None:
    fonts.preflight(["Rosa", "\u200d", ""], what="bundle bnd-9")
    fonts.preflight([], what="bundle bnd-10")


# ---- coverage and its cache --------------------------------------------------------


def test_coverage_matches_fontconfig() -> None:
    listing = subprocess.run(
        ["fc-list", "--format", "%{charset}\\n"], capture_output=True, check=True, text=True
    )
    charset: set[int] = set()
    for part in listing.stdout.split():
        first, _, last = part.partition("-")
        charset.update(range(int(first, 16), int(last or first, 16) + 1))
    covered = fonts.coverage()
    assert charset - covered == set()
    assert {code for code in covered - charset if code >= 0x20} == set()


def test_coverage_is_kept_in_memory() -> None:
    assert fonts.coverage() is fonts.coverage()


def test_coverage_is_cached_on_disk_and_used(tmp_path: Path) -> None:
    files = fonts.font_files()
    built = fonts.load_coverage(files, tmp_path)
    [cache] = tmp_path.glob("font-coverage-*.json")
    assert cache == fonts.cache_path(tmp_path, files)
    assert fonts.read_cache(cache) == built
    cache.write_text(json.dumps({"format": 1, "ranges": [65, 66]}))
    assert fonts.load_coverage(files, tmp_path) == frozenset({65, 66})


def test_a_fresh_process_reads_the_disk_cache(tmp_path: Path) -> None:
    files = fonts.font_files()
    cache = fonts.cache_path(tmp_path / "solidarity", files)
    cache.parent.mkdir()
    cache.write_text(json.dumps({"format": 1, "ranges": [0x41, 0x5A]}))
    script = "from delivery.render import fonts; print(len(fonts.coverage()))"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, check=True, text=True, env=env
    )
    assert result.stdout.strip() == "26"


def test_a_changed_font_set_gets_a_new_cache(tmp_path: Path) -> None:
    font = tmp_path / "font.ttf"
    font.write_bytes(b"not really a font")
    before = fonts.fingerprint([font])
    os.utime(font, ns=(1, 1))
    assert fonts.fingerprint([font]) != before
    assert fonts.fingerprint([font, tmp_path / "gone.ttf"]) != fonts.fingerprint([font])


def test_stale_and_broken_caches(tmp_path: Path) -> None:
    stale = tmp_path / "font-coverage-0000.json"
    stale.write_text("{}")
    fonts.write_cache(tmp_path / "font-coverage-1111.json", frozenset({1, 2, 3, 7}))
    assert not stale.exists()
    assert fonts.read_cache(tmp_path / "font-coverage-1111.json") == frozenset({1, 2, 3, 7})
    for body in ("", "[]", '{"format": 1, "ranges": [1]}', '{"format": 0, "ranges": []}'):
        stale.write_text(body)
        assert fonts.read_cache(stale) is None
    assert fonts.read_cache(tmp_path / "missing.json") is None


def test_files_that_are_not_fonts_cover_nothing(tmp_path: Path) -> None:
    junk = tmp_path / "junk.ttf"
    junk.write_bytes(b"\x00\x01\x00\x00" + b"\xff" * 64)
    bitmap = tmp_path / "fixed.pcf.gz"
    bitmap.write_bytes(b"\x1f\x8b")
    assert fonts.build_coverage([junk, bitmap, tmp_path / "missing.otf"]) == frozenset()


# ---- fonts embedded in a PDF -------------------------------------------------------


def pdf_with_fonts(fonts_by_name: dict[str, DictionaryObject], *, in_form: bool = False) -> bytes:
    writer = pypdf.PdfWriter()
    page = writer.add_blank_page(width=100, height=100)
    font_dict = DictionaryObject(
        {NameObject(name): writer._add_object(font) for name, font in fonts_by_name.items()}
    )
    resources = DictionaryObject({NameObject("/Font"): font_dict})
    if in_form:
        form = DecodedStreamObject()
        form.update(
            {
                NameObject("/Type"): NameObject("/XObject"),
                NameObject("/Subtype"): NameObject("/Form"),
                NameObject("/Resources"): resources,
            }
        )
        xobjects = DictionaryObject({NameObject("/Fm1"): writer._add_object(form)})
        resources = DictionaryObject({NameObject("/XObject"): xobjects})
    page[NameObject("/Resources")] = resources
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def font(subtype: str, base: str, file_key: str | None = None) -> DictionaryObject:
    entries = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject(subtype),
            NameObject("/BaseFont"): NameObject(base),
        }
    )
    if file_key is not None:
        descriptor = DictionaryObject({NameObject("/Type"): NameObject("/FontDescriptor")})
        if file_key:
            descriptor[NameObject(file_key)] = DecodedStreamObject()
        entries[NameObject("/FontDescriptor")] = descriptor
    return entries


def type0(base: str, descendant: DictionaryObject) -> DictionaryObject:
    parent = font("/Type0", base)
    parent[NameObject("/DescendantFonts")] = ArrayObject([descendant])
    return parent


def test_unembedded_fonts_are_named() -> None:
    pdf = pdf_with_fonts(
        {
            "/F1": font("/Type1", "/Helvetica"),
            "/F2": font("/TrueType", "/ABCDEF+NotoSans", "/FontFile2"),
            "/F3": type0("/Arial", font("/CIDFontType2", "/Arial", "")),
            "/F4": type0(
                "/XYZ+NotoSansCJK", font("/CIDFontType0", "/XYZ+NotoSansCJK", "/FontFile3")
            ),
            "/F5": font("/Type3", "/T3"),
        }
    )
    assert fonts.unembedded_fonts(pdf) == ["Arial", "Helvetica"]


def test_fonts_inside_form_xobjects_are_checked() -> None:
    pdf = pdf_with_fonts({"/F1": font("/TrueType", "/Courier", "")}, in_form=True)
    assert fonts.unembedded_fonts(pdf) == ["Courier"]


def test_unreadable_pdf_is_a_render_error() -> None:
    with pytest.raises(RenderError, match="not a readable PDF"):
        fonts.unembedded_fonts(b"%PDF-1.7 nonsense")
