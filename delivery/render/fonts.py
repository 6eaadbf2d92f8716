"""Every character of a bundle needs a font: coverage, gaps, preflight, embedding check.

Pango draws a character that no font covers as an empty box and carries on, so a bundle
in a script the machine has no font for would be delivered unreadable. :func:`preflight`
runs before a bundle is rendered and refuses it instead, naming each missing script and
the Debian package whose fonts cover it.

:func:`coverage` is the union of the ``cmap`` tables of every font fontconfig knows. It is
kept in memory and on disk (``$XDG_CACHE_HOME/solidarity``, else ``~/.cache/solidarity``),
keyed by the font files with their sizes and modification times, so installing, removing
or upgrading a font package starts a fresh cache. A running process keeps what it read
first; ``coverage.cache_clear()`` reads again.

Only OpenType/TrueType files count: Pango uses no bitmap or Type 1 fonts.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import struct
import subprocess
import tempfile
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pypdf
from fontTools import unicodedata as script_data  # type: ignore[import-untyped]
from fontTools.ttLib import TTCollection, TTFont, TTLibError  # type: ignore[import-untyped]
from pypdf.generic import DictionaryObject

from delivery.errors import RenderError

NOTO_CORE = "fonts-noto-core"
NOTO_CJK = "fonts-noto-cjk"
NOTO_EMOJI = "fonts-noto-color-emoji"
HANAZONO = "fonts-hanazono"
BABELSTONE_HAN = "fonts-babelstone-han"
ANCIENT_SCRIPTS = "fonts-ancient-scripts"
UNIFONT = "fonts-unifont"

# Scripts (ISO 15924) that Debian's fonts-noto-core covers. fonts-noto-extra adds only
# more weights of the same families; it covers no further script.
_NOTO_CORE_SCRIPTS = frozenset(
    """
    Adlm Aghb Ahom Arab Armi Armn Avst Bali Bamu Bass Batk Beng Bhks Brah Brai Bugi Buhd
    Cakm Cans Cari Cham Cher Copt Cprt Cyrl Deva Dogr Dsrt Dupl Egyp Elba Elym Ethi Geor
    Glag Gong Gonm Goth Gran Grek Gujr Guru Hano Hatr Hebr Hluw Hmng Hmnp Hung Ital Java
    Kali Khar Khmr Khoj Knda Kthi Lana Laoo Latn Lepc Limb Lina Linb Lisu Lyci Lydi Mahj
    Mand Mani Marc Medf Mend Merc Mero Mlym Modi Mong Mroo Mtei Mult Mymr Narb Nbat Newa
    Nkoo Nshu Ogam Olck Orkh Orya Osge Osma Palm Pauc Perm Phag Phli Phlp Phnx Plrd Prti
    Rjng Rohg Runr Samr Sarb Saur Sgnw Shaw Shrd Sidd Sind Sinh Sogd Sogo Sora Soyo Sund
    Sylo Syrc Tagb Takr Tale Talu Taml Tang Tavt Telu Tfng Tglg Thaa Thai Tibt Tirh Ugar
    Vaii Wara Wcho Xpeo Xsux Yezi Yiii Zanb
    """.split()  # noqa: SIM905  # a table of ISO 15924 codes reads better as words
)

# Other scripts, each with the packages that cover it, best first.
_SCRIPT_PACKAGES: dict[str, tuple[str, ...]] = {
    "Hani": (NOTO_CJK, HANAZONO, BABELSTONE_HAN),
    "Hira": (NOTO_CJK, HANAZONO),
    "Kana": (NOTO_CJK, HANAZONO),
    "Hang": (NOTO_CJK,),
    "Bopo": (NOTO_CJK, BABELSTONE_HAN),
    **dict.fromkeys(
        "Chrs Cpmn Diak Kawi Kits Maka Nagm Nand Ougr Tnsa Toto Vith".split(),  # noqa: SIM905
        (UNIFONT,),
    ),
}

# Code point ranges whose fonts come from elsewhere than the rest of their script.
_RANGE_PACKAGES: tuple[tuple[int, int, tuple[str, ...]], ...] = (
    (0x13430, 0x143FF, (ANCIENT_SCRIPTS,)),  # Egyptian format controls and Extended-A
    (0x1B000, 0x1B12F, (HANAZONO, BABELSTONE_HAN)),  # Kana Supplement, Kana Extended-A
    (0x1B130, 0x1B16F, (BABELSTONE_HAN,)),  # Small Kana Extension
    (0x20000, 0x2EBEF, (HANAZONO, BABELSTONE_HAN)),  # Han Extensions B to F
    (0x2F800, 0x2FA1F, (HANAZONO, BABELSTONE_HAN)),  # Han Compatibility Supplement
    (0x30000, 0x323AF, (BABELSTONE_HAN,)),  # Han Extensions G and H
)

# Common-script blocks that only the CJK fonts cover.
_CJK_BLOCK_WORDS = (
    "CJK",
    "Ideographic",
    "Kanbun",
    "Hiragana",
    "Katakana",
    "Bopomofo",
    "Hangul",
    "Vertical Forms",
    "Small Form Variants",
    "Halfwidth and Fullwidth",
)

# Symbol blocks whose pictographs are emoji (Misc Symbols and Dingbats, Mahjong to
# Enclosed Alphanumerics, Pictographs to Transport, coloured shapes, Supplemental).
_EMOJI_RANGES = (
    (0x2600, 0x27BF),
    (0x1F000, 0x1F1FF),
    (0x1F300, 0x1F6FF),
    (0x1F7E0, 0x1F7FF),
    (0x1F900, 0x1F9FF),
    (0x1FA70, 0x1FAFF),
)

# Default_Ignorable_Code_Point: shaping hides these, so they never need a glyph.
_IGNORABLE_RANGES = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
_IGNORED_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})
_NOT_A_SCRIPT = frozenset({"Zyyy", "Zinh", "Zzzz"})  # Common, Inherited, Unknown

EMOJI = "Emoji"
UNASSIGNED = "Unassigned"
_DPKG_INFO = Path("/var/lib/dpkg/info")
_CACHE_FORMAT = 1
_MAX_SCRIPTS = 5
_MAX_CODEPOINTS = 3


@dataclass(frozen=True, kw_only=True)
class Gap:
    """A character that no installed font covers."""

    char: str
    codepoint: str  # "U+10900"
    script: str  # "Phoenician", "Han", "Emoji", a block name, or "Unassigned"
    package: str  # the Debian package whose fonts cover it; "" when none is known
    count: int  # how many times it occurs


# ---- fonts and their coverage ------------------------------------------------------


def font_files() -> list[Path]:
    """Every font file fontconfig knows, each once, sorted."""
    try:
        listing = subprocess.run(
            ["fc-list", "--format", "%{file}\\n"],  # noqa: S607  # fontconfig's own tool
            capture_output=True,
            check=True,
            text=True,
            timeout=60,
        )
    except FileNotFoundError as error:
        raise RenderError("fc-list not found: install the Debian package fontconfig") from error
    except (subprocess.SubprocessError, OSError) as error:
        raise RenderError(f"fc-list could not list the installed fonts: {error}") from error
    return sorted({Path(line) for line in listing.stdout.splitlines() if line.strip()})


def fingerprint(files: Iterable[Path]) -> str:
    """A key that changes whenever a font file is added, removed or changed."""
    digest = hashlib.sha256(f"font-coverage {_CACHE_FORMAT}\n".encode())
    for path in files:
        try:
            stat = path.stat()
            state = f"{stat.st_size} {stat.st_mtime_ns}"
        except OSError:
            state = "missing"
        digest.update(f"{path}\0{state}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:20]


@contextmanager
def _faces(path: Path) -> Iterator[list[TTFont]]:
    """The faces of a font file or collection, read lazily while the file is open."""
    with path.open("rb") as handle:
        if path.suffix.lower() in (".ttc", ".otc"):
            yield list(TTCollection(handle, lazy=True).fonts)
        else:
            yield [TTFont(handle, lazy=True)]


def _codepoints(face: TTFont, glyph_names: list[str]) -> set[int]:
    """Code points the face maps to a real glyph, read from its ``cmap`` table alone."""
    # Placeholder glyph names spare reading the post or CFF table for the real ones.
    face.setGlyphOrder(glyph_names[: face["maxp"].numGlyphs])
    best = face["cmap"].getBestCmap() or {}
    notdef = glyph_names[0]
    return {int(code) for code, glyph in best.items() if glyph != notdef}


def build_coverage(files: Iterable[Path]) -> frozenset[int]:
    """The union of the cmaps of ``files``; files that are not OpenType are skipped."""
    glyph_names = [f"g{index}" for index in range(65536)]
    seen: set[bytes] = set()
    covered: set[int] = set()
    for path in files:
        try:
            with _faces(path) as faces:
                covered |= _new_codepoints(faces, seen, glyph_names)
        except (TTLibError, OSError, KeyError, ValueError, AssertionError, struct.error):
            continue  # bitmap, Type 1 or damaged: Pango cannot use it either
    return frozenset(covered)


def _new_codepoints(faces: list[TTFont], seen: set[bytes], glyph_names: list[str]) -> set[int]:
    """Code points of ``faces`` whose cmap is not in ``seen`` (then added to it)."""
    covered: set[int] = set()
    for face in faces:
        if "cmap" not in face:
            continue
        key = hashlib.blake2b(face.reader["cmap"], digest_size=16).digest()
        if key not in seen:  # the faces of a family or collection often share a cmap
            seen.add(key)
            covered |= _codepoints(face, glyph_names)
    return covered


# ---- the cache ---------------------------------------------------------------------


def cache_dir() -> Path | None:
    """Where the coverage cache lives, or None when there is no home to put it in."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        try:
            base = str(Path.home() / ".cache")
        except (RuntimeError, KeyError):
            return None
    return Path(base) / "solidarity"


def cache_path(directory: Path, files: Iterable[Path]) -> Path:
    """The cache file for this set of fonts."""
    return directory / f"font-coverage-{fingerprint(files)}.json"


def _ranges(codepoints: frozenset[int]) -> list[int]:
    """``[first, last, first, last, ...]`` of the runs in ``codepoints``."""
    flat: list[int] = []
    for code in sorted(codepoints):
        if flat and flat[-1] == code - 1:
            flat[-1] = code
        else:
            flat += [code, code]
    return flat


def read_cache(path: Path) -> frozenset[int] | None:
    """The coverage stored at ``path``, or None if it is missing or unreadable."""
    try:
        data = json.loads(path.read_bytes())
        flat = data["ranges"] if data.get("format") == _CACHE_FORMAT else None
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return None
    if not isinstance(flat, list) or len(flat) % 2 or not all(type(n) is int for n in flat):
        return None
    pairs = zip(flat[::2], flat[1::2], strict=True)
    return frozenset(code for first, last in pairs for code in range(first, last + 1))


def write_cache(path: Path, codepoints: frozenset[int]) -> None:
    """Store ``codepoints`` at ``path`` atomically and drop caches of older font sets."""
    body = json.dumps({"format": _CACHE_FORMAT, "ranges": _ranges(codepoints)})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, prefix=".font-coverage-", delete=False
        ) as handle:
            handle.write(body)
        os.replace(handle.name, path)
        for stale in path.parent.glob("font-coverage-*.json"):
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError:
        return  # a cache that cannot be written only costs time


def load_coverage(files: list[Path], directory: Path | None) -> frozenset[int]:
    """Coverage of ``files``: from the cache in ``directory`` if it is there, else built."""
    path = cache_path(directory, files) if directory is not None else None
    cached = read_cache(path) if path is not None else None
    if cached is not None:
        return cached
    covered = build_coverage(files)
    if path is not None:
        write_cache(path, covered)
    return covered


@functools.cache
def coverage() -> frozenset[int]:
    """Code points that some font known to fontconfig covers."""
    return load_coverage(font_files(), cache_dir())


# ---- scripts and packages ----------------------------------------------------------


def _in(code: int, ranges: Iterable[tuple[int, int]]) -> bool:
    return any(first <= code <= last for first, last in ranges)


def ignored(char: str) -> bool:
    """Whitespace, controls, format characters and other default-ignorables."""
    return (
        char.isspace()
        or unicodedata.category(char) in _IGNORED_CATEGORIES
        or _in(ord(char), _IGNORABLE_RANGES)
    )


def is_emoji(char: str) -> bool:
    """A pictograph from one of the emoji blocks (skin tones included)."""
    if not _in(ord(char), _EMOJI_RANGES):
        return False
    category = unicodedata.category(char)
    # Emoji newer than Python's Unicode data are unassigned there, Common in fontTools'.
    return category in ("So", "Sk") or (category == "Cn" and script_data.script(char) == "Zyyy")


def script_of(char: str) -> str:
    """The script's name ("Arabic", "Han"), "Emoji", a block name, or "Unassigned"."""
    code = str(script_data.script(char))
    if code not in _NOT_A_SCRIPT:
        return str(script_data.script_name(code))
    if is_emoji(char):
        return EMOJI
    block = str(script_data.block(char))
    if code == "Zzzz" and "Private Use" not in block:
        return UNASSIGNED
    return block


def candidate_packages(char: str) -> tuple[str, ...]:
    """Debian packages with fonts that cover ``char``, best first."""
    point = ord(char)
    for first, last, packages in _RANGE_PACKAGES:
        if first <= point <= last:
            return packages
    code = str(script_data.script(char))
    if code in _SCRIPT_PACKAGES:
        return _SCRIPT_PACKAGES[code]
    if code in _NOTO_CORE_SCRIPTS:
        return (NOTO_CORE,)
    if code not in ("Zyyy", "Zinh"):
        return ()  # private use, unassigned, or a script no Debian font covers
    if is_emoji(char):
        return (NOTO_EMOJI,)
    block = str(script_data.block(char))
    return (NOTO_CJK,) if any(word in block for word in _CJK_BLOCK_WORDS) else (NOTO_CORE,)


def installed(package: str) -> bool:
    """Whether dpkg has ``package`` installed."""
    return (_DPKG_INFO / f"{package}.list").exists()


def package_for(char: str, *, is_installed: Callable[[str], bool] | None = None) -> str:
    """The package to install for ``char``: the best one not installed yet, or ""."""
    check = is_installed or installed
    return next((p for p in candidate_packages(char) if not check(p)), "")


# ---- gaps and preflight ------------------------------------------------------------


def gaps(texts: Iterable[str]) -> list[Gap]:
    """Characters of ``texts`` that no installed font covers, most frequent first."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(text)
    covered = coverage()
    found = [
        Gap(
            char=char,
            codepoint=f"U+{ord(char):04X}",
            script=script_of(char),
            package=package_for(char),
            count=count,
        )
        for char, count in counts.items()
        if ord(char) not in covered and not ignored(char)
    ]
    return sorted(found, key=lambda gap: (-gap.count, ord(gap.char)))


def _subject(script: str, chars: int) -> str:
    noun = "character" if chars == 1 else "characters"
    if script == EMOJI:
        return f"{chars} emoji"
    if script == UNASSIGNED:
        return f"{chars} unassigned code point{'' if chars == 1 else 's'}"
    code = script_data.script_code(script, default=None)
    kind = "script" if code is not None and code not in _NOT_A_SCRIPT else "block"
    return f"{chars} {noun} in the {script} {kind}"


def _remedy(script: str, package: str, chars: int) -> str:
    them = "it" if chars == 1 else "them"
    if package:
        return f"no installed font covers {them}; install the Debian package {package}"
    if script == UNASSIGNED:
        return (
            f"{them} {'is' if chars == 1 else 'are'} not in the Unicode data known here, "
            f"so no Debian package is known to provide a font for {them}"
        )
    if "Private Use" in script:
        return (
            f"private-use characters have no agreed glyphs: "
            f"no Debian package provides a font for {them}"
        )
    return f"no installed font covers {them}, and no Debian package is known to provide one"


def _describe(script: str, package: str, group: list[Gap]) -> str:
    codes = " ".join(gap.codepoint for gap in group[:_MAX_CODEPOINTS])
    more = " …" if len(group) > _MAX_CODEPOINTS else ""
    return (
        f"cannot print {_subject(script, len(group))} ({codes}{more}): "
        f"{_remedy(script, package, len(group))}"
    )


def gap_message(what: str, found: list[Gap]) -> str:
    """One line naming ``what``, each missing script (at most five) and its package."""
    groups: defaultdict[tuple[str, str], list[Gap]] = defaultdict(list)
    for gap in found:
        groups[(gap.script, gap.package)].append(gap)
    ranked = sorted(groups.items(), key=lambda item: -sum(gap.count for gap in item[1]))
    parts = [_describe(script, package, group) for (script, package), group in ranked]
    if len(parts) > _MAX_SCRIPTS:
        rest = len(parts) - _MAX_SCRIPTS
        parts = [*parts[:_MAX_SCRIPTS], f"and {rest} more script{'' if rest == 1 else 's'}"]
    return f"{what}: " + "; ".join(parts)


def preflight(texts: Iterable[str], *, what: str) -> None:
    """Raise :class:`RenderError` if some character of ``texts`` has no font."""
    found = gaps(texts)
    if found:
        raise RenderError(gap_message(what, found))


# ---- embedded fonts ----------------------------------------------------------------


def _resolve(value: object) -> object:
    return value.get_object() if isinstance(value, pypdf.generic.IndirectObject) else value


def _is_embedded(font: DictionaryObject) -> bool:
    subtype = font.get("/Subtype")
    if subtype == "/Type3":
        return True  # its glyphs are drawn by content streams inside the PDF
    if subtype == "/Type0":
        descendants = _resolve(font.get("/DescendantFonts"))
        if not isinstance(descendants, list) or not descendants:
            return False
        return all(
            isinstance(child := _resolve(item), DictionaryObject) and _is_embedded(child)
            for item in descendants
        )
    descriptor = _resolve(font.get("/FontDescriptor"))
    if not isinstance(descriptor, DictionaryObject):
        return False
    return any(key in descriptor for key in ("/FontFile", "/FontFile2", "/FontFile3"))


def _fonts(resources: object, seen: set[int]) -> Iterator[DictionaryObject]:
    """Fonts of a resource dictionary and of the form XObjects it draws, once each."""
    resources = _resolve(resources)
    if not isinstance(resources, DictionaryObject) or id(resources) in seen:
        return
    seen.add(id(resources))
    fonts = _resolve(resources.get("/Font"))
    if isinstance(fonts, DictionaryObject):
        for value in fonts.values():
            if isinstance(font := _resolve(value), DictionaryObject):
                yield font
    xobjects = _resolve(resources.get("/XObject"))
    if isinstance(xobjects, DictionaryObject):
        for value in xobjects.values():
            xobject = _resolve(value)
            if isinstance(xobject, DictionaryObject) and xobject.get("/Subtype") == "/Form":
                yield from _fonts(xobject.get("/Resources"), seen)


def unembedded_fonts(pdf: bytes) -> list[str]:
    """Names of the fonts ``pdf`` uses without embedding them (sorted, each once)."""
    try:
        reader = pypdf.PdfReader(io.BytesIO(pdf))
        seen: set[int] = set()
        missing = {
            str(font.get("/BaseFont", "(unnamed)")).lstrip("/")
            for page in reader.pages
            for font in _fonts(page.get("/Resources"), seen)
            if not _is_embedded(font)
        }
    except pypdf.errors.PyPdfError as error:
        raise RenderError(f"not a readable PDF: {error}") from error
    return sorted(missing)
