"""A bundle's messages as printable blocks: a text many supporters sent is printed once.

Most supporters send a pre-written letter or sign a petition. Printing each copy would
make a bundle of 100,000 messages 100,000 pages long; instead identical texts are
grouped and printed once, followed by everyone who sent them. Personal messages keep
their own block, and names without a text are listed compactly.

Identical means identical wording: the key is the text in Unicode NFC with runs of
whitespace collapsed, so line wrapping or composed/decomposed accents do not split a
group, but case, punctuation and spelling do.
"""

from __future__ import annotations

import dataclasses
import math
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from delivery.models import Message, MessageKind, RecipientKind
from delivery.render.blocks import Block, Line, NameBlock, TextBlock
from delivery.render.bundle import body_lines, has_body, supporter_display
from delivery.render.text import direction, language_tag, safe_text, shorten

GroupKind = Literal["letter", "petition"]

DEFAULT_NAMES_PER_PART = 600

# Rough layout of templates/blocks.css on A4, in body-text lines (9.5pt, 1.4 leading).
LINES_PER_PAGE = 52
_TEXT_CHARS_PER_LINE = 95  # a full-width body line, counting wide (CJK) characters as 2
_LIST_CHARS_PER_LINE = 36  # one of three signatory columns
_NAME_CHARS_PER_LINE = 26  # one of four name columns
_LIST_LINE = 0.93  # an 8.5pt list line, in body lines
_BLOCK_LINES = 2  # rule, padding and spacing around every block
_HEADING_LINES = 2  # a list heading with its spacing


@dataclass(frozen=True)
class _Group:
    kind: GroupKind
    messages: tuple[Message, ...]  # by submission: the first one's text is printed


def text_key(body: str) -> str:
    """The wording of ``body``: NFC, whitespace runs (newlines too) as one space, stripped."""
    return " ".join(unicodedata.normalize("NFC", body).split())


def group_kind(message: Message) -> GroupKind:
    """Petition lines group with petition lines; letters, e-mails, faxes and tweets together."""
    return "petition" if message.kind is MessageKind.PETITION else "letter"


def submission_order(message: Message) -> tuple[datetime, int]:
    """Earliest first; the id breaks ties, so the order never depends on the input's."""
    return (message.submitted_at, message.id)


def _groups(messages: Sequence[Message]) -> list[_Group]:
    """Messages with a body, grouped by wording and kind, each group in submission order."""
    grouped: dict[tuple[str, GroupKind], list[Message]] = {}
    for message in sorted(messages, key=submission_order):
        if has_body(message):
            grouped.setdefault((text_key(message.body), group_kind(message)), []).append(message)
    return [_Group(kind=kind, messages=tuple(ms)) for (_, kind), ms in grouped.items()]


def _chunks(items: Sequence[Message], size: int) -> list[tuple[Message, ...]]:
    return [tuple(items[start : start + size]) for start in range(0, len(items), size)]


def _text(message: Message) -> tuple[tuple[Line, ...], str, str]:
    """The cleaned lines of a message body (bidi balanced), its direction and language."""
    text = safe_text(message.body).strip()
    lines = tuple(Line(text=line.text, dir=line.dir) for line in body_lines(text))
    return lines, direction(text), language_tag(message.language)


def _shared_blocks(group: _Group, kind: RecipientKind, names_per_part: int) -> Iterator[Block]:
    lines, text_dir, lang = _text(group.messages[0])
    opening = shorten(" ".join(line.text for line in lines if line.text), 90)
    parts = _chunks(group.messages, names_per_part)
    for number, part in enumerate(parts, start=1):
        yield TextBlock(
            anchor="",
            shared=True,
            kind=group.kind,
            who="",
            lines=lines if number == 1 else (),
            dir=text_dir,
            lang=lang,
            signatories=tuple(supporter_display(m, kind) for m in part),
            signatory_total=len(group.messages),
            part=number,
            parts=len(parts),
            message_ids=tuple(m.id for m in part),
            excerpt="" if number == 1 else opening,
        )


def _personal_block(message: Message, kind: RecipientKind) -> TextBlock:
    lines, text_dir, lang = _text(message)
    return TextBlock(
        anchor="",
        shared=False,
        kind=group_kind(message),
        who=supporter_display(message, kind),
        lines=lines,
        dir=text_dir,
        lang=lang,
        signatories=(),
        signatory_total=1,
        part=1,
        parts=1,
        message_ids=(message.id,),
    )


def _name_blocks(messages: Sequence[Message], kind: RecipientKind, size: int) -> Iterator[Block]:
    parts = _chunks(messages, size)
    for number, part in enumerate(parts, start=1):
        yield NameBlock(
            anchor="",
            names=tuple(supporter_display(m, kind) for m in part),
            total=len(messages),
            part=number,
            parts=len(parts),
            message_ids=tuple(m.id for m in part),
        )


def _largest_first(group: _Group) -> tuple[int, datetime, int]:
    return (-len(group.messages), *submission_order(group.messages[0]))


def _anchored(blocks: Iterator[Block]) -> tuple[Block, ...]:
    return tuple(
        dataclasses.replace(block, anchor=f"b{number}")
        for number, block in enumerate(blocks, start=1)
    )


def _all_blocks(
    messages: Sequence[Message], kind: RecipientKind, names_per_part: int
) -> Iterator[Block]:
    groups = _groups(messages)
    shared = sorted((g for g in groups if len(g.messages) > 1), key=_largest_first)
    for group_type in ("letter", "petition"):
        for group in shared:
            if group.kind == group_type:
                yield from _shared_blocks(group, kind, names_per_part)
    personal = sorted((g.messages[0] for g in groups if len(g.messages) == 1), key=submission_order)
    for message in personal:
        yield _personal_block(message, kind)
    names = sorted((m for m in messages if not has_body(m)), key=submission_order)
    yield from _name_blocks(names, kind, names_per_part * 2)


def build_blocks(
    messages: Sequence[Message],
    kind: RecipientKind,
    *,
    names_per_part: int = DEFAULT_NAMES_PER_PART,
) -> tuple[Block, ...]:
    """Every message in exactly one block, in print order, anchored ``b1``, ``b2``, ...

    Shared letters (largest group first), shared petitions, personal messages by
    submission, then names without a text. Signatory lists are cut every
    ``names_per_part`` names, name lists every twice that.
    """
    if names_per_part < 1:
        raise ValueError(f"names_per_part must be at least 1, not {names_per_part}")
    return _anchored(_all_blocks(messages, kind, names_per_part))


def _width(text: str) -> int:
    """Printed width in narrow characters: wide and full-width characters count twice."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def _wrapped(text: str, chars_per_line: int) -> int:
    return max(1, math.ceil(_width(text) / chars_per_line))


def _text_lines(lines: Sequence[Line]) -> float:
    return sum(_wrapped(line.text, _TEXT_CHARS_PER_LINE) if line.text else 0.5 for line in lines)


def _list_lines(names: Sequence[str], columns: int, chars_per_line: int) -> float:
    rows = math.ceil(sum(_wrapped(name, chars_per_line) for name in names) / columns)
    return rows * _LIST_LINE


def estimate_lines(block: Block) -> int:
    """Rough printed height of ``block`` in body-text lines (about 52 to an A4 page).

    Never less for a longer text or more names, so volumes can be cut on it.
    """
    if isinstance(block, NameBlock):
        height = _HEADING_LINES + _list_lines(block.names, 4, _NAME_CHARS_PER_LINE)
    elif block.shared:
        height = _text_lines(block.lines) + _HEADING_LINES
        height += _list_lines(block.signatories, 3, _LIST_CHARS_PER_LINE)
    else:
        height = 1 + _text_lines(block.lines)  # the supporter line, then the text
    return _BLOCK_LINES + math.ceil(height)
