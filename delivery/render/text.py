"""Pure text helpers for rendering supporter text safely: bidi, control characters, names.

Nothing here interprets supporter text: it is only cleaned of characters that would draw
as empty boxes or leak right-to-left overrides out of the message they belong to.
"""

from __future__ import annotations

import functools
import re
import unicodedata

import pycountry

# Explicit bidi embeddings/overrides close with PDF; isolates close with PDI.
_EMBEDDINGS = frozenset("\u202a\u202b\u202d\u202e")  # LRE RLE LRO RLO
_ISOLATES = frozenset("\u2066\u2067\u2068")  # LRI RLI FSI
_PDF = "\u202c"
_PDI = "\u2069"
BIDI_CONTROLS = _EMBEDDINGS | _ISOLATES | {_PDF, _PDI}
_PARAGRAPH_BREAKS = frozenset("\n\r\x1c\x1d\x1e\x85\u2029")

# C0/C1 controls except tab and newline, and unpaired surrogates: drawn as boxes.
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8}){0,4}$")

_COUNTRY_OVERRIDES = {"XK": "Kosovo"}


def printable(text: str) -> str:
    """``text`` with CRLF/CR as LF and unprintable control characters removed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _UNPRINTABLE.sub("", text)


def _closers(stack: list[str]) -> str:
    return "".join(_PDI if opener in _ISOLATES else _PDF for opener in reversed(stack))


def _close_isolate(stack: list[str]) -> str | None:
    """Closers for everything up to the innermost open isolate, or None if none is open."""
    if not any(opener in _ISOLATES for opener in stack):
        return None
    closed: list[str] = []
    while stack:
        opener = stack.pop()
        if opener in _ISOLATES:
            break
        closed.append(_PDF)
    return "".join(closed) + _PDI


def balance_bidi(text: str) -> str:
    """Close every bidi embedding, override and isolate that ``text`` opens, drop strays.

    Each paragraph of the result is balanced, so no control character in it can change
    the direction of text around it, even without markup-level isolation.
    """
    out: list[str] = []
    stack: list[str] = []
    for char in text:
        if char in _EMBEDDINGS or char in _ISOLATES:
            stack.append(char)
            out.append(char)
        elif char == _PDF:
            if stack and stack[-1] in _EMBEDDINGS:
                stack.pop()
                out.append(char)
        elif char == _PDI:
            closers = _close_isolate(stack)
            if closers is not None:
                out.append(closers)
        elif char in _PARAGRAPH_BREAKS:
            out.append(_closers(stack))
            stack.clear()
            out.append(char)
        else:
            out.append(char)
    out.append(_closers(stack))
    return "".join(out)


def strip_bidi_controls(text: str) -> str:
    """``text`` without explicit bidi controls (for short labels such as names)."""
    return "".join(char for char in text if char not in BIDI_CONTROLS)


def safe_text(text: str) -> str:
    """Supporter text ready for a document: printable and bidi-balanced."""
    return balance_bidi(printable(text))


def safe_label(text: str) -> str:
    """A one-line supporter label: printable, no bidi controls, whitespace collapsed."""
    return " ".join(strip_bidi_controls(printable(text)).split())


def direction(text: str) -> str:
    """``rtl`` or ``ltr`` from the first strong character outside isolates (as dir=auto)."""
    depth = 0
    for char in text:
        if char in _ISOLATES:
            depth += 1
        elif char == _PDI:
            depth = max(0, depth - 1)
        elif depth == 0:
            kind = unicodedata.bidirectional(char)
            if kind in ("R", "AL"):
                return "rtl"
            if kind == "L":
                return "ltr"
    return "ltr"


def language_tag(value: str) -> str:
    """``value`` if it looks like a BCP 47 language tag, else an empty string."""
    value = value.strip()
    return value if _LANGUAGE_TAG.match(value) else ""


def same_language(a: str, b: str) -> bool:
    """Whether two language tags share their primary language (``pt-BR`` ~ ``pt``)."""
    first, second = (t.strip().lower().split("-")[0] for t in (a, b))
    return bool(first) and first == second


@functools.lru_cache(maxsize=512)
def country_name(code: str) -> str:
    """A readable English country name for an ISO 3166 code; the code itself if unknown."""
    code = safe_label(code).upper()
    if not code:
        return ""
    if code in _COUNTRY_OVERRIDES:
        return _COUNTRY_OVERRIDES[code]
    if len(code) == 2:
        country = pycountry.countries.get(alpha_2=code)
    elif len(code) == 3:
        country = pycountry.countries.get(alpha_3=code)
    else:
        country = None
    if country is None:
        return code
    common = getattr(country, "common_name", None)
    if common:
        return str(common)
    name = str(country.name)
    head, sep, tail = name.partition(", ")
    if sep and tail.endswith((" of", " of the")):
        return f"{tail} {head}"
    return name


def first_name(name: str) -> str:
    """The first word of a supporter's name."""
    words = safe_label(name).split()
    return words[0] if words else ""


def shorten(text: str, limit: int = 500) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters, with an ellipsis."""
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip() + "…"


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``1 message`` / ``3 messages``."""
    word = singular if count == 1 else (plural_form or f"{singular}s")
    return f"{count:,} {word}"
