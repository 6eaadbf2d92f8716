"""What a bundle prints, as blocks: the unit that volumes and envelopes are cut from.

A block is never split between volumes or envelopes. Long signatory and name lists are
cut into several blocks ("part 2 of 5") so that no block is larger than a few pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, kw_only=True)
class Line:
    """One line of a text, with its own base direction (an empty one is a gap)."""

    text: str
    dir: str  # "ltr" or "rtl"


@dataclass(frozen=True, kw_only=True)
class TextBlock:
    """A text printed once: one personal message, or a text many people sent or signed."""

    anchor: str  # unique within the bundle; the HTML id of the block
    shared: bool  # True: identical text from several supporters, printed once
    kind: Literal["letter", "petition"]  # a letter (letter, e-mail, fax, tweet) or a petition
    who: str  # personal: the supporter line; shared: ""
    lines: tuple[Line, ...]
    dir: str
    lang: str
    signatories: tuple[str, ...]  # shared: the supporter lines of this part
    signatory_total: int  # shared: everyone who sent or signed this text
    part: int  # 1-based part of a long signatory list; 1 for a personal message
    parts: int
    message_ids: tuple[int, ...]  # the messages this block prints, in order
    excerpt: str = ""  # later parts: the opening of the text they continue


@dataclass(frozen=True, kw_only=True)
class NameBlock:
    """Names only (signatures without a text), in a compact multi-column list."""

    anchor: str
    names: tuple[str, ...]
    total: int
    part: int
    parts: int
    message_ids: tuple[int, ...]


Block = TextBlock | NameBlock
