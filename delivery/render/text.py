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


# Han and Hangul (and Japanese kana): names in these scripts are written family name
# first, often unspaced.
_HAN_HANGUL = (
    "\u3005\u3007\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
    "\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\uac00-\ud7af\ud7b0-\ud7ff"
)
_EAST_ASIAN_NAME = re.compile(f"^[{_HAN_HANGUL}]+$")
_EAST_ASIAN_WORD = re.compile(f"^[{_HAN_HANGUL}\u3040-\u30ff]+$")
# Katakana alone also spells foreign names, in their own order ("マリア ガルシア").
_KATAKANA_WORD = re.compile("^[\u30a0-\u30ff]+$")
# Two-character family names (Chinese, Korean), so 欧阳修 is 修 and 남궁민수 is 민수.
_COMPOUND_FAMILY_NAMES = frozenset(
    {
        "欧阳", "歐陽", "司马", "司馬", "上官", "诸葛", "諸葛", "东方", "東方", "皇甫",
        "尉迟", "尉遲", "公孙", "公孫", "慕容", "长孙", "長孫", "宇文", "司徒", "夏侯",
        "轩辕", "軒轅", "令狐", "澹台", "南宫", "南宮", "西门", "西門", "端木", "独孤",
        "獨孤", "鲜于", "鮮于", "呼延", "남궁", "황보", "제갈", "선우", "독고",
    }
)  # fmt: skip
# Words after a comma that are not a given name: "Jan Kowalski, Jr." is Jan.
_NAME_SUFFIXES = frozenset(
    {"jr", "sr", "ii", "iii", "iv", "phd", "md", "esq", "dr", "prof", "mr", "mrs", "ms"}
)


def _east_asian_given_name(name: str) -> str:
    """The given name of an unspaced Han or Hangul name of 2 to 4 characters, else ''."""
    if not 2 <= len(name) <= 4 or not _EAST_ASIAN_NAME.match(name):
        return ""
    # Four characters are almost always a two-character family name and a given name.
    compound = len(name) == 4 or (len(name) == 3 and name[:2] in _COMPOUND_FAMILY_NAMES)
    return name[2:] if compound else name[1:]


def _family_name_first(words: list[str]) -> bool:
    """Whether spaced name ``words`` are East Asian, written family name first."""
    return all(_EAST_ASIAN_WORD.match(word) for word in words) and not all(
        _KATAKANA_WORD.match(word) for word in words
    )


def first_name(name: str) -> str:
    """The given name of a supporter, never the family name where it can be told apart.

    Unspaced Han or Hangul names of 2 to 4 characters lose their family name
    (王芳 is 芳, 김민지 is 민지); spaced ones (王 芳) keep what follows the first word;
    "Nowak, Zofia" is Zofia; otherwise the first word.
    """
    label = safe_label(name)
    family, comma, given = label.partition(",")
    given_words = given.replace(",", " ").split()
    if comma and family.strip() and given_words:
        if given_words[0].strip(".").casefold() not in _NAME_SUFFIXES:
            return given_words[0]
        words = family.split()  # "Jan Kowalski, Jr.": the name before the suffix
    else:
        words = label.replace(",", " ").split()
    if not words:
        return ""
    if len(words) == 1:
        return _east_asian_given_name(words[0]) or words[0]
    if _family_name_first(words):
        return " ".join(words[1:])
    return words[0]


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
