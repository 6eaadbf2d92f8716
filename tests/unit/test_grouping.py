"""Messages as blocks: identical texts printed once, everyone else in exactly one block."""

from __future__ import annotations

import dataclasses
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from delivery.models import Message, MessageKind, RecipientKind, sha256_hex
from delivery.render.blocks import Block, Line, NameBlock, TextBlock
from delivery.render.grouping import build_blocks, estimate_lines, text_key
from delivery.render.text import first_name

START = datetime(2025, 11, 1, 8, 0, tzinfo=UTC)
LETTER = "Dear Minister,\n\nPlease release Rosa Example.\nShe is a teacher.\n\nYours sincerely,"
PETITION_LINE = "Release Rosa Example now."


def message(
    ident: int,
    body: str = LETTER,
    *,
    kind: MessageKind = MessageKind.EMAIL,
    name: str = "",
    minutes: int | None = None,
    language: str = "en",
) -> Message:
    return Message(
        id=ident,
        source="form",
        external_id=f"ext-{ident}",
        case="free-rosa",
        supporter_name=name or f"Person{ident} Lastname{ident}",
        supporter_email=f"person{ident}@example.net",
        supporter_city=f"Town{ident}",
        supporter_country="BR",
        language=language,
        kind=kind,
        body=body,
        body_sha256=sha256_hex(body.encode()),
        submitted_at=START + timedelta(minutes=ident if minutes is None else minutes),
        event="",
    )


def ids(blocks: Sequence[Block]) -> list[int]:
    return [ident for block in blocks for ident in block.message_ids]


def text_blocks(blocks: Sequence[Block]) -> list[TextBlock]:
    return [b for b in blocks if isinstance(b, TextBlock)]


def name_blocks(blocks: Sequence[Block]) -> list[NameBlock]:
    return [b for b in blocks if isinstance(b, NameBlock)]


def mixed(count: int = 60) -> tuple[Message, ...]:
    """Pre-written letters and petitions, personal messages and signatures, shuffled."""
    out: list[Message] = []
    for i in range(1, count + 1):
        if i % 5 == 0:
            out.append(message(i, "", kind=MessageKind.SIGNATURE))
        elif i % 7 == 0:
            out.append(message(i, f"My own words, number {i}.", kind=MessageKind.LETTER))
        elif i % 3 == 0:
            out.append(message(i, PETITION_LINE, kind=MessageKind.PETITION))
        else:
            out.append(message(i, LETTER if i % 2 else LETTER.replace("\n", "\r\n  ")))
    return tuple(sorted(out, key=lambda m: (m.id * 7919) % 1009))  # not in id order


# -- text_key --------------------------------------------------------------------------


def test_text_key_ignores_whitespace_and_normal_form_but_not_wording() -> None:
    composed = "Força, Rosa! Você não está só."
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed
    assert text_key(decomposed) == text_key(composed) == composed
    assert text_key("  Hello\r\n\n  Rosa\t!\u00a0 ") == "Hello Rosa !"
    assert text_key("Hello Rosa") != text_key("hello Rosa")
    assert text_key("Hello Rosa.") != text_key("Hello Rosa")


# -- grouping --------------------------------------------------------------------------


def test_identical_texts_in_other_whitespace_and_forms_are_printed_once() -> None:
    body = "Querida Rosa,\n\nVocê não está sozinha."
    messages = (
        message(1, body),
        message(2, "  Querida Rosa,\r\n\r\n\r\nVocê   não está sozinha.\n"),
        message(3, unicodedata.normalize("NFD", body), kind=MessageKind.LETTER),
        message(4, body.replace("\n\n", " "), kind=MessageKind.FAX),
        message(5, body, kind=MessageKind.TWEET),
    )
    (block,) = build_blocks(messages, RecipientKind.AUTHORITY)
    assert isinstance(block, TextBlock)
    assert block.shared
    assert block.kind == "letter"
    assert block.who == ""
    assert block.signatory_total == 5
    assert block.message_ids == (1, 2, 3, 4, 5)
    assert block.lines == (
        Line(text="Querida Rosa,", dir="ltr"),
        Line(text="", dir="ltr"),
        Line(text="Você não está sozinha.", dir="ltr"),
    )
    assert block.signatories[0] == "Person1 Lastname1, Brazil"


def test_the_earliest_message_gives_the_printed_text() -> None:
    messages = (
        message(1, "Hello  Rosa.\nStay strong.", minutes=30),
        message(2, "Hello Rosa. Stay strong.", minutes=10),
        message(3, "Hello Rosa.\n\nStay   strong.", minutes=10),
    )
    (block,) = build_blocks(messages, RecipientKind.AUTHORITY)
    assert isinstance(block, TextBlock)
    assert [line.text for line in block.lines] == ["Hello Rosa. Stay strong."]
    assert block.message_ids == (2, 3, 1)  # by submission, then id


def test_petitions_are_separate_from_letters_with_the_same_text() -> None:
    messages = (
        *(message(i, PETITION_LINE, kind=MessageKind.PETITION) for i in range(1, 5)),
        *(message(i, PETITION_LINE) for i in range(5, 8)),
    )
    letters, petitions = build_blocks(messages, RecipientKind.AUTHORITY)
    assert isinstance(letters, TextBlock)
    assert isinstance(petitions, TextBlock)
    assert (letters.kind, letters.message_ids) == ("letter", (5, 6, 7))
    assert (petitions.kind, petitions.message_ids) == ("petition", (1, 2, 3, 4))


def test_a_text_sent_once_is_a_personal_message() -> None:
    messages = (message(1, "Only mine.", name="Lena Fairweld"), message(2), message(3))
    shared, personal = build_blocks(messages, RecipientKind.AUTHORITY)
    assert isinstance(shared, TextBlock)
    assert shared.shared
    assert isinstance(personal, TextBlock)
    assert not personal.shared
    assert personal.who == "Lena Fairweld, Brazil"
    assert personal.signatories == ()
    assert personal.signatory_total == 1
    assert (personal.part, personal.parts, personal.message_ids) == (1, 1, (1,))
    assert [line.text for line in personal.lines] == ["Only mine."]


def test_block_order_letters_petitions_personal_then_names() -> None:
    messages = (
        message(1, "", kind=MessageKind.SIGNATURE),
        message(2, "Personal late.", minutes=90),
        message(3, "Personal early.", minutes=1),
        *(message(i, PETITION_LINE, kind=MessageKind.PETITION) for i in range(10, 15)),
        *(message(i, "Small letter.") for i in range(20, 22)),
        *(message(i, LETTER) for i in range(30, 34)),
        message(40, "", kind=MessageKind.SIGNATURE, minutes=0),
    )
    blocks = build_blocks(messages, RecipientKind.AUTHORITY)
    summary = [
        (b.kind, b.shared, b.message_ids[0]) if isinstance(b, TextBlock) else ("names", 0, 0)
        for b in blocks
    ]
    assert summary == [
        ("letter", True, 30),  # 4 copies before 2: largest first
        ("letter", True, 20),
        ("petition", True, 10),  # more copies than either letter, but petitions come after
        ("letter", False, 3),
        ("letter", False, 2),
        ("names", 0, 0),
    ]
    assert [b.anchor for b in blocks] == ["b1", "b2", "b3", "b4", "b5", "b6"]
    (names,) = name_blocks(blocks)
    assert names.message_ids == (40, 1)  # by submission


def test_groups_of_the_same_size_go_by_first_submission() -> None:
    messages = (
        *(message(i, "Text A.", minutes=100 + i) for i in (1, 2)),
        *(message(i, "Text B.", minutes=i) for i in (3, 4)),
    )
    first, second = text_blocks(build_blocks(messages, RecipientKind.AUTHORITY))
    assert first.message_ids == (3, 4)
    assert second.message_ids == (1, 2)


def test_long_signatory_lists_are_split_into_parts() -> None:
    messages = tuple(message(i) for i in range(1, 26))
    blocks = text_blocks(build_blocks(messages, RecipientKind.AUTHORITY, names_per_part=10))
    assert [(b.part, b.parts, len(b.signatories)) for b in blocks] == [
        (1, 3, 10),
        (2, 3, 10),
        (3, 3, 5),
    ]
    assert all(b.shared and b.signatory_total == 25 for b in blocks)
    assert blocks[0].lines
    assert blocks[1].lines == blocks[2].lines == ()
    assert blocks[2].message_ids == tuple(range(21, 26))
    assert [b.anchor for b in blocks] == ["b1", "b2", "b3"]


def test_names_are_split_at_twice_the_signatory_part() -> None:
    messages = tuple(message(i, "", kind=MessageKind.SIGNATURE) for i in range(1, 46))
    blocks = name_blocks(build_blocks(messages, RecipientKind.AUTHORITY, names_per_part=10))
    assert [(b.part, b.parts, len(b.names), b.total) for b in blocks] == [
        (1, 3, 20, 45),
        (2, 3, 20, 45),
        (3, 3, 5, 45),
    ]
    assert blocks[0].names[0] == "Person1 Lastname1, Brazil"


def test_a_blank_body_is_a_signature() -> None:
    messages = (message(1, " \n\t "), message(2, "", kind=MessageKind.PETITION))
    (names,) = build_blocks(messages, RecipientKind.AUTHORITY)
    assert isinstance(names, NameBlock)
    assert names.message_ids == (1, 2)


def test_every_message_is_in_exactly_one_block() -> None:
    messages = mixed(300)
    blocks = build_blocks(messages, RecipientKind.AUTHORITY, names_per_part=7)
    listed = ids(blocks)
    assert len(listed) == len(set(listed)) == len(messages)
    assert set(listed) == {m.id for m in messages}
    for block in blocks:
        if isinstance(block, TextBlock):
            assert len(block.message_ids) == max(1, len(block.signatories))
        else:
            assert len(block.message_ids) == len(block.names)


def test_nothing_in_nothing_out() -> None:
    assert build_blocks((), RecipientKind.PRISON) == ()
    with pytest.raises(ValueError, match="names_per_part"):
        build_blocks((message(1),), RecipientKind.PRISON, names_per_part=0)


def test_same_messages_in_any_order_give_the_same_blocks() -> None:
    messages = mixed(120)
    first = build_blocks(messages, RecipientKind.FAMILY, names_per_part=9)
    again = build_blocks(tuple(reversed(messages)), RecipientKind.FAMILY, names_per_part=9)
    assert first == again
    assert first == build_blocks(messages, RecipientKind.FAMILY, names_per_part=9)


def test_text_is_cleaned_and_bidi_balanced_per_message() -> None:
    messages = (
        message(1, "مرحبا روزا \u202e\x00", language="ar"),
        message(2, "Next \u202bline\x07", language="not a tag!"),
    )
    first, second = text_blocks(build_blocks(messages, RecipientKind.AUTHORITY))
    assert (first.dir, first.lang) == ("rtl", "ar")
    assert first.lines == (Line(text="مرحبا روزا \u202e\u202c", dir="rtl"),)
    assert (second.dir, second.lang) == ("ltr", "")
    assert second.lines == (Line(text="Next \u202bline\u202c", dir="ltr"),)


# -- privacy ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [RecipientKind.PRISON, RecipientKind.FAMILY])
def test_prison_and_family_see_first_names_only(kind: RecipientKind) -> None:
    messages = (
        *(message(i, name=f"Given{i} Family{i}") for i in range(1, 4)),
        message(4, name="王芳"),
        message(5, name="Nowak, Zofia"),
        message(6, "Only mine.", name="Tomás Harbourne"),
        message(7, "", kind=MessageKind.SIGNATURE, name="김민지"),
    )
    blocks = build_blocks(messages, kind)
    printed = [
        *(b.who for b in text_blocks(blocks)),
        *(name for b in text_blocks(blocks) for name in b.signatories),
        *(name for b in name_blocks(blocks) for name in b.names),
    ]
    joined = " | ".join(printed)
    for private in ("Family", "王", "Nowak", "Harbourne", "김", "example.net", "@"):
        assert private not in joined, private
    assert "Given1" in joined
    assert "芳" in joined
    assert "Zofia" in joined
    assert "민지" in joined
    if kind is RecipientKind.PRISON:
        assert "Town" not in joined
        assert "Given1, Brazil" in printed


def test_authority_sees_full_names() -> None:
    blocks = build_blocks((message(1), message(2)), RecipientKind.AUTHORITY)
    (block,) = text_blocks(blocks)
    assert block.signatories == ("Person1 Lastname1, Brazil", "Person2 Lastname2, Brazil")


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("Ana Pereira Souza", "Ana"),
        ("  Ana\t Pereira ", "Ana"),
        ("王芳", "芳"),
        ("李小龙", "小龙"),
        ("欧阳修", "修"),
        ("欧阳娜娜", "娜娜"),
        ("김민지", "민지"),
        ("남궁민수", "민수"),
        ("田中花子", "花子"),
        ("王 芳", "芳"),
        ("たなか はなこ", "はなこ"),
        ("マリア ガルシア", "マリア"),
        ("Nowak, Zofia", "Zofia"),
        ("Nowak, Zofia Anna", "Zofia"),
        ("Jan Kowalski, Jr.", "Jan"),
        (", Zofia", "Zofia"),
        ("芳", "芳"),
        ("Evil\u202eName Person", "EvilName"),
        ("", ""),
        ("   ", ""),
    ],
)
def test_first_name(name: str, shown: str) -> None:
    assert first_name(name) == shown


# -- estimate_lines --------------------------------------------------------------------


def text_block(lines: Sequence[str], signatories: int = 0) -> TextBlock:
    return TextBlock(
        anchor="b1",
        shared=signatories > 0,
        kind="letter",
        who="" if signatories else "Ana, Brazil",
        lines=tuple(Line(text=t, dir="ltr") for t in lines),
        dir="ltr",
        lang="en",
        signatories=tuple(f"Person{i} Lastname, Brazil" for i in range(signatories)),
        signatory_total=max(1, signatories),
        part=1,
        parts=1,
        message_ids=tuple(range(max(1, signatories))),
    )


def name_block(count: int) -> NameBlock:
    names = tuple(f"Person{i} Lastname, Brazil" for i in range(count))
    return NameBlock(
        anchor="b1", names=names, total=count, part=1, parts=1, message_ids=tuple(range(count))
    )


def test_estimate_lines_grows_with_text_and_names() -> None:
    texts = [text_block(["word " * n]) for n in range(0, 400, 7)]
    heights = [estimate_lines(b) for b in texts]
    assert heights == sorted(heights)
    assert heights[-1] > heights[0] >= 1
    more_lines = [estimate_lines(text_block(["Line."] * n)) for n in range(1, 60)]
    assert more_lines == sorted(more_lines)
    assert more_lines[-1] > more_lines[0]
    shared = [estimate_lines(text_block(["Dear Minister,"], n)) for n in range(1, 900, 13)]
    assert shared == sorted(shared)
    assert shared[-1] > shared[0]
    names = [estimate_lines(name_block(n)) for n in range(0, 1300, 17)]
    assert names == sorted(names)
    assert names[-1] > names[0]


def test_estimate_lines_is_about_a_page_of_52_lines() -> None:
    assert 40 <= estimate_lines(text_block(["A line of text."] * 50)) <= 60
    page_of_signatories = estimate_lines(text_block([], 3 * 52))
    assert 45 <= page_of_signatories <= 65
    assert 45 <= estimate_lines(name_block(4 * 52)) <= 65
    wide = text_block(["字" * 190])  # wide characters take twice the room
    narrow = text_block(["a" * 190])
    assert estimate_lines(wide) > estimate_lines(narrow)


def test_estimate_lines_for_real_blocks() -> None:
    blocks = build_blocks(mixed(200), RecipientKind.AUTHORITY, names_per_part=30)
    for block in blocks:
        assert estimate_lines(block) >= 3
    later = [b for b in text_blocks(blocks) if b.part > 1]
    assert later
    first = dataclasses.replace(later[0], lines=text_blocks(blocks)[0].lines)
    assert estimate_lines(first) > estimate_lines(later[0])
