"""Screening rules of the review step: which messages a caseworker must see, and why.

Pure functions, no I/O. :func:`screen` runs every rule over one draft and returns one
:class:`~delivery.models.Flag` per rule that fired, in the order of :data:`RULES`; an
empty tuple means the message is clean. :func:`auto_approves` says whether a message may
skip the review queue.

The rules read normalised text (format characters such as zero-width spaces removed,
then NFKC), so full-width letters, ligatures and invisible characters do not evade them.
A flag's detail shows what matched, never longer than :data:`DETAIL_LIMIT` characters.
Signatures have no body: only the rules about the supporter's name and city apply.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from delivery.config import ReviewSettings
from delivery.models import Case, Flag, MessageDraft, MessageKind, Recipient, RecipientKind

RULE_BIDI = "bidi-control"
RULE_MIXED_SCRIPT = "mixed-script-name"
RULE_DANGER_WORD = "danger-word"
RULE_LINK = "link"
RULE_EMAIL = "email-address"
RULE_PHONE = "phone-number"
RULE_LONG_TEXT = "long-text"
RULE_WRONG_SCRIPT = "wrong-script"

RULES: tuple[str, ...] = (
    RULE_BIDI,  # bidirectional control characters in body, name, city or event
    RULE_MIXED_SCRIPT,  # a name or city word mixing scripts: the spoofing pattern
    RULE_DANGER_WORD,  # one of the case's danger words, in a message to a prison
    RULE_LINK,  # a web address, also obfuscated (hxxp://, example[.]org)
    RULE_EMAIL,  # an e-mail address, also spelled out (name at example dot org)
    RULE_PHONE,  # seven digits or more: a phone number
    RULE_LONG_TEXT,  # a body longer than the review settings allow
    RULE_WRONG_SCRIPT,  # a body written in a script the declared language does not use
)

DETAIL_LIMIT = 80
MIN_LETTERS_FOR_SCRIPT = 20  # the wrong-script rule does not judge shorter bodies
MIN_PHONE_DIGITS = 7

# --- text helpers -----------------------------------------------------------------------

_MASK = "\ufffc"  # stands in for a link or address already found; neither letter nor digit


def _normalise(text: str) -> str:
    """Format characters (zero-width, bidi, soft hyphen) removed, then NFKC."""
    visible = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return unicodedata.normalize("NFKC", visible)


def _visible(ch: str) -> str:
    if ch.isspace():
        return " "
    if unicodedata.category(ch) in ("Cc", "Cf", "Cs"):
        return f"<U+{ord(ch):04X}>"
    return ch


def _shorten(text: str, limit: int = DETAIL_LIMIT) -> str:
    """Invisible characters spelled out, cut to `limit` characters with an ellipsis."""
    shown = "".join(_visible(ch) for ch in text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _split(words: str) -> tuple[str, ...]:
    return tuple(words.split())


def _flag(rule: str, found: Iterable[str]) -> Flag | None:
    """One flag listing each distinct match once, in order of appearance."""
    items = list(dict.fromkeys(found))
    return Flag(rule=rule, detail=_shorten(", ".join(items))) if items else None


def _extract(
    pattern: re.Pattern[str],
    text: str,
    accept: Callable[[str], bool] = lambda _: True,
    clean: Callable[[str], str] = str.strip,
) -> tuple[list[str], str]:
    """The accepted matches of `pattern`, and `text` with each of them masked."""
    found: list[str] = []

    def replace(match: re.Match[str]) -> str:
        value = clean(match.group(0))
        if not value or not accept(value):
            return match.group(0)
        found.append(value)
        return _MASK

    return found, pattern.sub(replace, text)


# --- scripts ------------------------------------------------------------------------------

_SCRIPT_ALIASES: Mapping[str, str] = {
    "CJK": "HAN",
    "IDEOGRAPHIC": "HAN",
    "KATAKANA-HIRAGANA": "KATAKANA",
    "HENTAIGANA": "HIRAGANA",
    "MASU": "HIRAGANA",
    "TURNED": "LATIN",
    "ROMAN": "LATIN",
}
# Scripts written together in one word: Japanese mixes kanji with both kana.
_SCRIPT_FAMILY: Mapping[str, str] = {"HAN": "HAN", "HIRAGANA": "HAN", "KATAKANA": "HAN"}


@functools.lru_cache(maxsize=8192)
def _script(ch: str) -> str | None:
    """The script of a letter, from the first word of its Unicode name; None otherwise.

    Marks, digits, punctuation and modifier letters (ʼ, ー, 々) belong to no script.
    """
    category = unicodedata.category(ch)
    if not category.startswith("L") or category == "Lm":
        return None
    name = unicodedata.name(ch, "")
    if not name:
        return None
    first = name.split(" ", 1)[0]
    return _SCRIPT_ALIASES.get(first, first)


def _script_label(script: str) -> str:
    return script.title()


# --- bidi-control -------------------------------------------------------------------------

_BIDI_CONTROLS: Mapping[str, str] = {
    "\u202a": "LRE",
    "\u202b": "RLE",
    "\u202c": "PDF",
    "\u202d": "LRO",
    "\u202e": "RLO",
    "\u2066": "LRI",
    "\u2067": "RLI",
    "\u2068": "FSI",
    "\u2069": "PDI",
    "\u200e": "LRM",
    "\u200f": "RLM",
    "\u061c": "ALM",
}


def _bidi_flag(fields: Sequence[tuple[str, str]]) -> Flag | None:
    """Bidirectional controls can reorder what a reader sees; name each and its field."""
    found = (
        f"{_BIDI_CONTROLS[ch]} (U+{ord(ch):04X}) in {label}"
        for label, text in fields
        for ch in dict.fromkeys(text)
        if ch in _BIDI_CONTROLS
    )
    return _flag(RULE_BIDI, found)


# --- mixed-script-name --------------------------------------------------------------------


def _in_word(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LMN" or unicodedata.category(ch) == "Cf"


def _words(text: str) -> Iterator[str]:
    """Runs of letters, marks, digits and invisible characters; the rest separates."""
    word: list[str] = []
    for ch in text:
        if _in_word(ch):
            word.append(ch)
        elif word:
            yield "".join(word)
            word = []
    if word:
        yield "".join(word)


def _word_scripts(word: str) -> list[str]:
    scripts = (_script(ch) for ch in _normalise(word))
    return list(dict.fromkeys(s for s in scripts if s is not None))


def _mixed_script_flag(name: str, city: str) -> Flag | None:
    """A word whose letters come from scripts not written together (Cyrillic А in Adrianna)."""
    found: list[str] = []
    for word in (*_words(name), *_words(city)):
        scripts = _word_scripts(word)
        if len({_SCRIPT_FAMILY.get(s, s) for s in scripts}) > 1:
            labels = " and ".join(_script_label(s) for s in scripts)
            found.append(f"'{word}' mixes {labels}")
    return _flag(RULE_MIXED_SCRIPT, found)


# --- danger-word --------------------------------------------------------------------------

# Lowercase Cyrillic and Greek letters drawn like Latin ones, so "еscape" with a
# Cyrillic е still matches. Applied to the text and the danger words alike.
_LOOKALIKES = str.maketrans(
    {
        "а": "a",
        "е": "e",
        "о": "o",
        "р": "p",
        "с": "c",
        "у": "y",
        "х": "x",
        "і": "i",
        "ј": "j",
        "ѕ": "s",
        "ԁ": "d",
        "ӏ": "l",
        "һ": "h",
        "ԛ": "q",
        "ԝ": "w",
        "ο": "o",
        "α": "a",
        "ι": "i",
        "κ": "k",
        "ν": "v",
        "ρ": "p",
    }
)
# Scripts written without spaces between words: a danger word needs no boundary there.
_UNSPACED_SCRIPTS = frozenset(
    {"HAN", "HIRAGANA", "KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN"}
)


def _fold(text: str) -> str:
    """Normalised, case-folded, look-alikes mapped, whitespace collapsed: for matching."""
    folded = unicodedata.normalize("NFKC", _normalise(text).casefold())
    folded = folded.replace("i\u0307", "i").translate(_LOOKALIKES)
    return " ".join(folded.split())


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_" or unicodedata.category(ch).startswith("M")


def _boundary(text: str, index: int, edge: str) -> bool:
    """True when the character at `index` does not continue the word ending in `edge`."""
    if index < 0 or index >= len(text) or not _is_word_char(edge):
        return True
    if _script(edge) in _UNSPACED_SCRIPTS:
        return True
    return not _is_word_char(text[index])


def _contains_word(text: str, needle: str) -> bool:
    """`needle` in `text` as a whole word or phrase: "escape" is not in "escaped"."""
    start = text.find(needle)
    while start != -1:
        end = start + len(needle)
        if _boundary(text, start - 1, needle[0]) and _boundary(text, end, needle[-1]):
            return True
        start = text.find(needle, start + 1)
    return False


def _danger_flag(
    body: str, name: str, danger_words: Sequence[str], recipients: Sequence[Recipient]
) -> Flag | None:
    """A danger word in a message a prison will read: in the body or the supporter name."""
    if not any(r.kind == RecipientKind.PRISON for r in recipients):
        return None
    folded_body, folded_name = _fold(body), _fold(name)
    found: list[str] = []
    for word in danger_words:
        needle = _fold(word)
        if not needle:
            continue
        if _contains_word(folded_body, needle):
            found.append(f"'{word.strip()}'")
        elif _contains_word(folded_name, needle):
            found.append(f"'{word.strip()}' in name")
    return _flag(RULE_DANGER_WORD, found)


# --- link and email-address ---------------------------------------------------------------

_TLDS = frozenset(
    _split("""
        com org net edu gov int mil info biz name pro io co me ly gl ai app dev xyz online
        site website news blog live tv fm cc to ws link click top club page eu uk us ca au nz
        ie de fr es it nl be lu pl pt ru ua by kz cn jp kr in ir tr il gr se no dk fi is ch at
        cz sk hu ro bg rs hr si ba mk al ge am az md lt lv ee br ar mx cl pe ve za ng ke gh eg
        ma tn dz sa ae qa kw pk bd lk np th vn id my sg ph hk tw рф
    """)
)
_TLD_PATTERN = "|".join(sorted(_TLDS, key=len, reverse=True))
_OBFUSCATED_DOT = r"\s?(?:\[\.\]|\(\.\)|\{\.\}|\[dot\]|\(dot\)|\{dot\})\s?"
_URL_TAIL = r"[^\s<>\"]*"
_LINK = re.compile(
    rf"(?<![\w+.-])[a-z][a-z0-9+.-]{{0,15}}(?:://|\[:\]//|\(:\)//|\[://\]){_URL_TAIL}"
    rf"|(?<![\w.@/-])www\d{{0,3}}(?:\.|{_OBFUSCATED_DOT})[\w-]{_URL_TAIL}"
    rf"|(?<![\w.@/-])[\w-]+(?:\.[\w-]+)*{_OBFUSCATED_DOT}[\w-]{_URL_TAIL}"
    rf"|(?<![\w.@/-])(?:[\w-]+\.)+(?:{_TLD_PATTERN})/{_URL_TAIL}",
    re.IGNORECASE,
)
_TRAILING = ".,;:!?'\"»”’)]}>"

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+", re.IGNORECASE)
_SPELLED_AT = r"(?:\s*[\[({<]\s*at\s*[\])}>]\s*|\s+at\s+)"
_SPELLED_DOT = r"(?:\s*[\[({<]\s*dot\s*[\])}>]\s*|\s+dot\s+|\.)"
_EMAIL_SPELLED = re.compile(
    rf"(?<![\w.+-])[\w.+-]+{_SPELLED_AT}[\w-]+(?:{_SPELLED_DOT}[\w-]+)+", re.IGNORECASE
)
_SPELLED_SIGN = re.compile(r"[\[({<]|\bdot\b", re.IGNORECASE)
_SPELLED_DOT_RE = re.compile(_SPELLED_DOT, re.IGNORECASE)


def _trim_link(link: str) -> str:
    """Sentence punctuation after a link is not part of it; balanced brackets are."""
    link = link.strip()
    while link and link[-1] in _TRAILING:
        if link[-1] == ")" and link.count("(") >= link.count(")"):
            break
        link = link[:-1]
    return link


def _is_spelled_email(text: str) -> bool:
    """'name at example dot org': needs a spelled dot or a bracket, and a real TLD."""
    last_label = _SPELLED_DOT_RE.split(text)[-1].strip().casefold()
    return bool(_SPELLED_SIGN.search(text)) and last_label in _TLDS


def _find_emails(text: str) -> tuple[list[str], str]:
    plain, text = _extract(_EMAIL, text)
    spelled, text = _extract(_EMAIL_SPELLED, text, accept=_is_spelled_email)
    return plain + spelled, text


# --- phone-number -------------------------------------------------------------------------

_DATE = re.compile(r"(?<!\d)(?:\d{4}([-./])\d{1,2}\1\d{1,2}|\d{1,2}([-./])\d{1,2}\2\d{4})(?!\d)")
_YEARS = re.compile(r"(?<!\d)\d{4}(?:(?:\s?[-\u2010-\u2015]\s?|\s)\d{4})+(?!\d)")
_TIMES = re.compile(r"(?<!\d)\d{1,2}[.:]\d{2}(?:\s?[-\u2010-\u2015]\s?\d{1,2}[.:]\d{2})+(?!\d)")
_PHONE = re.compile(r"(?<![\w+])\+?\s?\(?\d(?:[ .()\-\u2010-\u2015\u2212]{0,3}\d)+")
_GROUPED = re.compile(r"(\d{1,3})([ .])\d{3}(?:\2\d{3})*")
_DIGIT_RUN = re.compile(r"\d+")


def _is_date(text: str) -> bool:
    """2026-12-10, 10.12.2026, 12/10/2026: a plausible year, month and day."""
    parts = [int(p) for p in _DIGIT_RUN.findall(text)]
    year, first, second = (parts[0], parts[1], parts[2]) if parts[0] > 99 else parts[::-1]
    return 1000 <= year <= 2999 and 1 <= min(first, second) <= 12 and max(first, second) <= 31


def _is_years(text: str) -> bool:
    """1989–2026, or 2019 2020 2021: years, not a number to call."""
    return all(1800 <= int(p) <= 2199 for p in _DIGIT_RUN.findall(text))


def _is_times(text: str) -> bool:
    """10.00-12.00: opening hours, not a number to call."""
    parts = [int(p) for p in _DIGIT_RUN.findall(text)]
    return all(h <= 24 and m <= 59 for h, m in zip(parts[::2], parts[1::2], strict=True))


def _is_count(text: str) -> bool:
    """1 000 000 or 12.345.678: a figure grouped in thousands, not a phone number.

    Round figures (ending in 000) and figures led by one or two digits count; three-digit
    groups such as 601 234 567 are how many countries write mobile numbers.
    """
    match = _GROUPED.fullmatch(text)
    if match is None:
        return False
    lead = match.group(1)
    ends_round = int(_DIGIT_RUN.findall(text)[-1]) == 0
    return ends_round or (len(lead) < 3 and int(lead[0]) != 0)


def _is_phone(text: str) -> bool:
    digits = sum(ch.isdecimal() for ch in text)
    return digits >= MIN_PHONE_DIGITS and not _is_count(text)


def _find_phones(text: str) -> list[str]:
    """Seven digits or more, with spaces, dots, dashes, brackets and a leading +.

    Dates, runs of years and hours are masked first, so "on 10.12.2026 from 10.00-12.00"
    stays clean.
    """
    _, text = _extract(_DATE, text, accept=_is_date)
    _, text = _extract(_YEARS, text, accept=_is_years)
    _, text = _extract(_TIMES, text, accept=_is_times)
    found, _ = _extract(_PHONE, text, accept=_is_phone)
    return found


# --- wrong-script -------------------------------------------------------------------------


def _scripts(*names: str) -> frozenset[str]:
    return frozenset(names)


_LATIN = _scripts("LATIN")
_CYRILLIC = _scripts("CYRILLIC")
_ARABIC = _scripts("ARABIC")
_JAPANESE = _scripts("HAN", "HIRAGANA", "KATAKANA")
_LANGUAGE_SCRIPTS: Mapping[str, frozenset[str]] = {
    **dict.fromkeys(("ru", "uk", "be", "bg", "mk", "kk", "ky", "tg"), _CYRILLIC),
    **dict.fromkeys(("ar", "fa", "ur", "ps", "ckb", "sd", "ug"), _ARABIC),
    **dict.fromkeys(("he", "yi"), _scripts("HEBREW")),
    **dict.fromkeys(("hi", "mr", "ne"), _scripts("DEVANAGARI")),
    **dict.fromkeys(("zh", "yue"), _scripts("HAN")),
    **dict.fromkeys(("am", "ti"), _scripts("ETHIOPIC")),
    "sr": _LATIN | _CYRILLIC,
    "uz": _LATIN | _CYRILLIC,
    "mn": _CYRILLIC | _scripts("MONGOLIAN"),
    "ku": _LATIN | _ARABIC,
    "pa": _ARABIC | _scripts("GURMUKHI"),
    "ja": _JAPANESE,
    "ko": _scripts("HANGUL"),
    "el": _scripts("GREEK"),
    "bn": _scripts("BENGALI"),
    "th": _scripts("THAI"),
    "ka": _scripts("GEORGIAN"),
    "hy": _scripts("ARMENIAN"),
    "ta": _scripts("TAMIL"),
    "te": _scripts("TELUGU"),
    "kn": _scripts("KANNADA"),
    "ml": _scripts("MALAYALAM"),
    "gu": _scripts("GUJARATI"),
    "si": _scripts("SINHALA"),
    "my": _scripts("MYANMAR"),
    "km": _scripts("KHMER"),
    "lo": _scripts("LAO"),
    "bo": _scripts("TIBETAN"),
    "dv": _scripts("THAANA"),
    **dict.fromkeys(
        _split("""
            en es fr de pl pt it nl sv tr sw id da no nb nn fi et lv lt cs sk sl hr bs hu ro
            ca eu gl ga gd cy is fo mt sq az tk ms tl fil vi ha yo ig zu xh af so rw mg eo
            la lb ht qu ay gn br co oc rm wo ln lg ny sn st tn ts om
        """),
        _LATIN,
    ),
}
# ISO 15924 script subtags ("sr-Latn", "zh-Hant") override the language's usual script.
_SCRIPT_SUBTAGS: Mapping[str, frozenset[str]] = {
    "latn": _LATIN,
    "cyrl": _CYRILLIC,
    "arab": _ARABIC,
    "hebr": _scripts("HEBREW"),
    "grek": _scripts("GREEK"),
    "hans": _scripts("HAN"),
    "hant": _scripts("HAN"),
    "hani": _scripts("HAN"),
    "jpan": _JAPANESE,
    "kore": _scripts("HANGUL", "HAN"),
    "hang": _scripts("HANGUL"),
    "deva": _scripts("DEVANAGARI"),
    "beng": _scripts("BENGALI"),
    "mong": _scripts("MONGOLIAN"),
}


def _expected_scripts(language: str) -> frozenset[str]:
    """Scripts a language tag's text is written in; empty for unknown languages and "und"."""
    primary, *rest = language.strip().replace("_", "-").casefold().split("-")
    usual = _LANGUAGE_SCRIPTS.get(primary, frozenset())
    if not usual:
        return usual
    declared = next((_SCRIPT_SUBTAGS[s] for s in rest if s in _SCRIPT_SUBTAGS), None)
    return declared if declared is not None else usual


def _largest_other(counts: Counter[str], expected: frozenset[str]) -> tuple[int, str]:
    """Letters in the biggest family of scripts outside `expected`, and its label.

    Kanji and kana count together, so a Japanese body is judged as one whole.
    """
    families: dict[str, Counter[str]] = {}
    for script, n in counts.most_common():
        if script not in expected:
            families.setdefault(_SCRIPT_FAMILY.get(script, script), Counter())[script] = n
    if not families:
        return 0, ""
    top = max(families.values(), key=lambda family: family.total())
    return top.total(), "/".join(_script_label(s) for s in top)


def _wrong_script_flag(text: str, language: str) -> Flag | None:
    """The body's letters are mostly of a script the declared language is not written in."""
    expected = _expected_scripts(language)
    if not expected:
        return None
    counts = Counter(s for s in map(_script, text) if s is not None)
    if counts.total() < MIN_LETTERS_FOR_SCRIPT:
        return None
    outside, label = _largest_other(counts, expected)
    if outside <= sum(counts[s] for s in expected):
        return None
    wanted = " or ".join(_script_label(s) for s in sorted(expected))
    detail = f"mostly {label}; '{language.strip()}' is written in {wanted}"
    return Flag(rule=RULE_WRONG_SCRIPT, detail=_shorten(detail))


# --- the body rules together --------------------------------------------------------------


def _long_text_flag(body: str, limit: int) -> Flag | None:
    if len(body) <= limit:
        return None
    return Flag(rule=RULE_LONG_TEXT, detail=f"{len(body)} characters, limit {limit}")


def _body_flags(body: str, language: str, settings: ReviewSettings) -> list[Flag | None]:
    """Addresses are found first and masked, so a link's digits are no phone number."""
    if not body:
        return []
    text = _normalise(body)
    emails, text = _find_emails(text)
    links, text = _extract(_LINK, text, clean=_trim_link)
    return [
        _flag(RULE_LINK, links),
        _flag(RULE_EMAIL, emails),
        _flag(RULE_PHONE, _find_phones(text)),
        _long_text_flag(body, settings.long_text_chars),
        _wrong_script_flag(text, language),
    ]


# --- public -------------------------------------------------------------------------------


def screen(
    draft: MessageDraft,
    case: Case,
    recipients: Sequence[Recipient],
    settings: ReviewSettings,
) -> tuple[Flag, ...]:
    """Every rule over one draft addressed to `recipients`; flags in the order of RULES.

    An empty tuple means no rule wants a human to look.
    """
    body = draft.body if draft.kind.needs_body else ""
    fields = (
        ("body", body),
        ("name", draft.supporter_name),
        ("city", draft.supporter_city),
        ("event", draft.event),
    )
    flags = [
        _bidi_flag(fields),
        _mixed_script_flag(draft.supporter_name, draft.supporter_city),
        _danger_flag(body, draft.supporter_name, case.danger_words, recipients),
        *_body_flags(body, draft.language, settings),
    ]
    found = [f for f in flags if f is not None]
    return tuple(sorted(found, key=lambda f: RULES.index(f.rule)))


def auto_approves(draft: MessageDraft, case: Case, flags: Sequence[Flag]) -> bool:
    """True when the case approves this kind of message by itself and no rule flagged it."""
    return MessageKind(draft.kind) in case.auto_approve and not flags
