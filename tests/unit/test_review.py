"""The review step's screening rules, as a caseworker would check them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from delivery.config import ReviewSettings
from delivery.models import (
    Cadence,
    Case,
    ChannelName,
    Flag,
    Format,
    MessageDraft,
    MessageKind,
    Recipient,
    RecipientKind,
)
from delivery.review import RULES, auto_approves, screen

SETTINGS = ReviewSettings()
CLEAN_BODY = "Please release the prisoner of conscience and let him go home to his family."


def recipient(kind: RecipientKind = RecipientKind.AUTHORITY) -> Recipient:
    return Recipient(
        case="river-defender",
        slug=f"{kind}-desk",
        kind=kind,
        name=f"The {kind} desk",
        language="en",
        channels=(ChannelName.EMAIL,),
        format=Format.BUNDLE,
        cadence=Cadence.ONCE,
        email="desk@example.org",
    )


AUTHORITY = recipient(RecipientKind.AUTHORITY)
PRISON = recipient(RecipientKind.PRISON)
FAMILY = recipient(RecipientKind.FAMILY)


def make_case(
    *,
    auto_approve: frozenset[MessageKind] = frozenset({MessageKind.SIGNATURE}),
    danger_words: tuple[str, ...] = ("escape", "hunger strike", "越狱"),
) -> Case:
    return Case(
        slug="river-defender",
        name="The river defender",
        country="Utopia",
        summary="A defender of a river, jailed for a peaceful protest.",
        demand="Release him now.",
        auto_approve=auto_approve,
        danger_words=danger_words,
        recipients=(AUTHORITY, PRISON, FAMILY),
    )


def make_draft(**overrides: Any) -> MessageDraft:
    fields: dict[str, Any] = {
        "source": "form",
        "external_id": "row-1",
        "line": 2,
        "case": "river-defender",
        "to": "authority-desk",
        "supporter_name": "Ada Example",
        "supporter_email": "ada@example.net",
        "supporter_city": "Springfield",
        "supporter_country": "GB",
        "language": "en",
        "kind": MessageKind.LETTER,
        "body": CLEAN_BODY,
        "submitted_at": datetime(2026, 12, 10, 9, 30, tzinfo=UTC),
        "event": "Write for Rights",
        "metadata": {},
    }
    fields.update(overrides)
    return MessageDraft(**fields)


def run(
    *,
    recipients: tuple[Recipient, ...] = (AUTHORITY,),
    case: Case | None = None,
    settings: ReviewSettings = SETTINGS,
    **overrides: Any,
) -> tuple[Flag, ...]:
    return screen(make_draft(**overrides), case or make_case(), recipients, settings)


def rules(**overrides: Any) -> list[str]:
    return [flag.rule for flag in run(**overrides)]


def detail(rule: str, **overrides: Any) -> str:
    return next(flag.detail for flag in run(**overrides) if flag.rule == rule)


def test_rule_names_for_help_text() -> None:
    assert RULES == (
        "bidi-control",
        "mixed-script-name",
        "danger-word",
        "link",
        "email-address",
        "phone-number",
        "long-text",
        "wrong-script",
    )


def test_a_plain_letter_is_clean() -> None:
    assert run() == ()
    assert run(recipients=(AUTHORITY, PRISON, FAMILY)) == ()


# --- link -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        ("Read https://example.org/x before you decide.", "https://example.org/x"),
        ("See http://example.org/report?id=7.", "http://example.org/report?id=7"),
        ("Files at ftp://files.example.net/a", "ftp://files.example.net/a"),
        ("Visit www.example.org today", "www.example.org"),
        ("hxxp://bad.example/x is the proof", "hxxp://bad.example/x"),
        ("Open hxxps[:]//example.org/p", "hxxps[:]//example.org/p"),
        ("The page example[.]org has it", "example[.]org"),
        ("Go to example.org/path now", "example.org/path"),
        ("Short: bit.ly/3abcDEF", "bit.ly/3abcDEF"),
        ("(see https://example.org/wiki/A_(b))", "https://example.org/wiki/A_(b)"),
        ("Full width ｈｔｔｐｓ：／／example.org/x", "https://example.org/x"),
        ("Hidden htt\u200bps://example.org/x", "https://example.org/x"),
    ],
)
def test_link_is_flagged_with_what_matched(body: str, shown: str) -> None:
    assert detail("link", body=body) == shown


@pytest.mark.parametrize(
    "body",
    [
        CLEAN_BODY,
        "He was arrested on 10.12.2026 and/or held for 3.5 years.",
        "The U.S. and the E.U. must act, e.g. through the U.N.",
        "She wrote from St.Petersburg.Please answer.",
        "The campaign site is example.org and nothing else.",
        "Our petition reached 1,000,000 names.",
    ],
)
def test_prose_is_not_a_link(body: str) -> None:
    assert "link" not in rules(body=body)


def test_every_link_is_listed_once() -> None:
    body = "https://a.example.org/1 and www.b.example.org and https://a.example.org/1"
    assert detail("link", body=body) == "https://a.example.org/1, www.b.example.org"


def test_a_long_link_is_shortened_to_eighty_characters() -> None:
    link = "https://example.org/" + "a" * 200
    shown = detail("link", body=f"Read {link} now")
    assert len(shown) == 80
    assert shown.startswith("https://example.org/aaa")
    assert shown.endswith("…")


# --- email-address --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        ("Write to me: ada.example+news@example.org.", "ada.example+news@example.org"),
        ("Full width ａｄａ＠example.org", "ada@example.org"),
        ("Reach me at ada [at] example [dot] org", "ada [at] example [dot] org"),
        ("Reach me: ada(at)example(dot)org", "ada(at)example(dot)org"),
        ("Reach me: ada at example dot org", "ada at example dot org"),
    ],
)
def test_email_address_is_flagged(body: str, shown: str) -> None:
    assert detail("email-address", body=body) == shown


@pytest.mark.parametrize(
    "body",
    [
        CLEAN_BODY,
        "Follow @freedomnow for news.",
        "Look at example.org for the report.",
        "We met at noon. The dot on the map is the prison.",
    ],
)
def test_prose_is_not_an_email_address(body: str) -> None:
    assert "email-address" not in rules(body=body)


def test_an_address_is_not_also_a_link() -> None:
    assert rules(body="Write to ada [at] example [dot] org please") == ["email-address"]


# --- phone-number ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        ("Call me on +44 20 7946 0000 tonight.", "+44 20 7946 0000"),
        ("My number is (212) 555-0199.", "(212) 555-0199"),
        ("Ring 020 7946 0000 any time", "020 7946 0000"),
        ("Call +7 (495) 123-45-67", "+7 (495) 123-45-67"),
        ("Call 0201234567", "0201234567"),
        ("Mobile 601 234 567", "601 234 567"),
        ("Mobile 06.12.34.56.78", "06.12.34.56.78"),
        ("اتصل على ٠٥٠١٢٣٤٥٦٧", "٠٥٠١٢٣٤٥٦٧"),
        ("फ़ोन ९८७६५ ४३२१०", "९८७६५ ४३२१०"),
        ("Full width ０２０ ７９４６ ００００", "020 7946 0000"),
    ],
)
def test_phone_number_is_flagged(body: str, shown: str) -> None:
    assert detail("phone-number", body=body) == shown


@pytest.mark.parametrize(
    "body",
    [
        "He was arrested on 2026-12-10 and tried on 2027-01-05.",
        "He was arrested on 10.12.2026 and sentenced on 12/01/2027.",
        "The movement began in 1989.",
        "He spent 1989–2026 in and out of prison; 1989 - 2026 is too long.",
        "Cell 1234, block 56, case 2026/117.",
        "More than 1 000 000 people and 12 345 678 voices, 250 000 000 in all.",
        "Signed by 1.250.000 supporters.",
        "Visits from 10.00-12.00 and 14:00 – 16:30 on 10.12.2026.",
        "اعتقل في ٢٠٢٦-١٢-١٠",
        "Read https://example.org/2026/12/10/1234567 first.",
    ],
)
def test_dates_years_counts_and_short_numbers_are_not_phone_numbers(body: str) -> None:
    assert "phone-number" not in rules(body=body)


# --- danger-word ----------------------------------------------------------------------


def test_danger_word_to_a_prison_is_flagged() -> None:
    body = "We will help you escape soon."
    assert detail("danger-word", body=body, recipients=(PRISON,)) == "'escape'"


def test_danger_word_to_an_authority_or_family_is_not_flagged() -> None:
    body = "We will help you escape soon."
    assert "danger-word" not in rules(body=body, recipients=(AUTHORITY, FAMILY))


def test_danger_word_flagged_when_any_recipient_is_a_prison() -> None:
    body = "We will help you escape soon."
    assert "danger-word" in rules(body=body, recipients=(AUTHORITY, PRISON))


@pytest.mark.parametrize(
    "body",
    [
        "ESCAPE is near",
        "Full width ｅｓｃａｐｅ is near",
        "Zero width es\u200bcape is near",
        "Cyrillic look-alike еscаpe is near",
        "Soft hyphen es\u00adcape!",
        "(escape)",
        "We stand with the hunger  strike\nin the jail.",
        "我们支持越狱计划",
    ],
)
def test_danger_word_variants_are_caught(body: str) -> None:
    assert "danger-word" in rules(body=body, recipients=(PRISON,))


@pytest.mark.parametrize(
    "body",
    [
        "The escaped bird sang over the landscape.",
        "No hunger here, and a strike of luck.",
        CLEAN_BODY,
    ],
)
def test_danger_word_needs_whole_words(body: str) -> None:
    assert "danger-word" not in rules(body=body, recipients=(PRISON,))


def test_ligatures_do_not_hide_a_danger_word() -> None:
    case = make_case(danger_words=("file",))
    assert "danger-word" in rules(body="Hide the ﬁle", case=case, recipients=(PRISON,))


def test_danger_word_in_the_supporter_name() -> None:
    shown = detail(
        "danger-word", supporter_name="Escape Artist", recipients=(PRISON,), body=CLEAN_BODY
    )
    assert shown == "'escape' in name"


def test_several_danger_words_are_listed() -> None:
    body = "Start a hunger strike, then escape."
    shown = detail("danger-word", body=body, recipients=(PRISON,))
    assert shown == "'escape', 'hunger strike'"


def test_blank_danger_words_are_ignored() -> None:
    case = make_case(danger_words=("", "   "))
    assert run(case=case, recipients=(PRISON,)) == ()


# --- bidi-control ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("body", "Free him \u202etxet desrever", "RLO (U+202E) in body"),
        ("supporter_name", "Ada \u202eelpmaxE", "RLO (U+202E) in name"),
        ("supporter_city", "\u2066Springfield\u2069", "LRI (U+2066) in city, PDI (U+2069) in city"),
        ("event", "Write for Rights\u200f", "RLM (U+200F) in event"),
        ("body", "\u061cنص", "ALM (U+061C) in body"),
    ],
)
def test_bidi_controls_are_flagged_with_field(field: str, value: str, shown: str) -> None:
    assert detail("bidi-control", **{field: value}) == shown


@pytest.mark.parametrize(
    "body",
    [
        "أطلقوا سراح المدافع عن النهر",
        "שחררו את המגן של הנהר",
        "می\u200cخواهم آزاد شود",  # zero-width non-joiner is ordinary Persian spelling
        "Family 👨\u200d👩\u200d👧",
    ],
)
def test_right_to_left_text_without_controls_is_clean(body: str) -> None:
    assert "bidi-control" not in rules(body=body, language="und")


# --- mixed-script-name ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("\u0410drianna Nowak", "'\u0410drianna' mixes Cyrillic and Latin"),
        ("\u03a1aula Example", "'\u03a1aula' mixes Greek and Latin"),
        ("Ad\u0430\u200bm Example", "'Ad\u0430<U+200B>m' mixes Latin and Cyrillic"),
        ("Jana-\u041c\u0430\u0440\u0438\u044fx", "'\u041c\u0430\u0440\u0438\u044fx' mixes"),
    ],
)
def test_mixed_script_name_is_flagged(name: str, shown: str) -> None:
    assert detail("mixed-script-name", supporter_name=name).startswith(shown)


def test_mixed_script_city_is_flagged() -> None:
    shown = detail("mixed-script-name", supporter_city="L\u043endon")
    assert shown == "'L\u043endon' mixes Latin and Cyrillic"


@pytest.mark.parametrize(
    "name",
    [
        "김민지",
        "Виктор Петров",
        "محمد علي",
        "דנה כהן",
        "山田 花子",
        "山田たろう",
        "タナカ太郎",
        "Λάμπρος Παππάς",
        "Zoë Ångström",
        "José Ñúñez",
        "Nguyễn Thị Minh",
        "Şule Yılmaz",
        "Anna 李",
        "Мар\u02bcяна",
        "अनीता शर्मा",
        "সুমি রায়",
        "ნინო",
        "Kyiv/Київ",
        "Ada Example 3rd",
        "Ｊｏｈａｎｎａ",
    ],
)
def test_names_in_one_script_are_clean(name: str) -> None:
    assert "mixed-script-name" not in rules(supporter_name=name, supporter_city=name)


# --- long-text ------------------------------------------------------------------------


def test_long_text_over_the_limit_is_flagged() -> None:
    settings = ReviewSettings(long_text_chars=100)
    body = "Free him. " * 11
    assert detail("long-text", body=body, settings=settings) == "110 characters, limit 100"


def test_text_at_the_limit_is_not_long() -> None:
    settings = ReviewSettings(long_text_chars=100)
    assert "long-text" not in rules(body="x" * 100, settings=settings, language="und")


# --- wrong-script ---------------------------------------------------------------------

RUSSIAN = "Прошу немедленно освободить защитника реки и вернуть его семье."
ENGLISH = CLEAN_BODY
CHINESE = "我们请求立即释放这位河流守护者，让他回到家人身边。他是和平的抗议者。"
JAPANESE = "川の守り手を直ちに釈放してください。彼は平和的な抗議をしただけです。"
KOREAN = "강의 수호자를 즉시 석방해 주십시오. 그는 평화적으로 항의했을 뿐입니다."
ARABIC = "نطالب بالإفراج الفوري عن المدافع عن النهر وعودته إلى عائلته."
HINDI = "हम नदी के रक्षक की तत्काल रिहाई की मांग करते हैं।"
SERBIAN_LATIN = "Molimo vas da odmah oslobodite branioca reke i vratite ga porodici."
SERBIAN_CYRILLIC = "Молимо вас да одмах ослободите браниоца реке и вратите га породици."


@pytest.mark.parametrize(
    ("language", "body"),
    [
        ("en", ENGLISH),
        ("ru", RUSSIAN),
        ("ru-RU", RUSSIAN),
        ("zh", CHINESE),
        ("zh_Hant", CHINESE),
        ("ja", JAPANESE),
        ("ko", KOREAN),
        ("ar", ARABIC),
        ("hi", HINDI),
        ("sr", SERBIAN_LATIN),
        ("sr", SERBIAN_CYRILLIC),
        ("pt-BR", "Pedimos a libertação imediata do defensor do rio."),
        ("und", RUSSIAN),
        ("xx", RUSSIAN),
        ("", RUSSIAN),
        ("ru", f"{RUSSIAN} See https://example.org/a-very-long-english-path-name-here"),
        ("ru", "Free him now"),
    ],
)
def test_body_in_the_declared_language_script_is_clean(language: str, body: str) -> None:
    assert "wrong-script" not in rules(language=language, body=body)


@pytest.mark.parametrize(
    ("language", "body", "shown"),
    [
        ("ru", ENGLISH, "mostly Latin; 'ru' is written in Cyrillic"),
        ("en", RUSSIAN, "mostly Cyrillic; 'en' is written in Latin"),
        ("ar", ENGLISH, "mostly Latin; 'ar' is written in Arabic"),
        ("zh", KOREAN, "mostly Hangul; 'zh' is written in Han"),
        ("ko", JAPANESE, "mostly Hiragana/Han; 'ko' is written in Hangul"),
        ("zh", JAPANESE, "mostly Hiragana; 'zh' is written in Han"),
        ("sr-Latn", SERBIAN_CYRILLIC, "mostly Cyrillic; 'sr-Latn' is written in Latin"),
    ],
)
def test_body_in_another_script_is_flagged(language: str, body: str, shown: str) -> None:
    assert detail("wrong-script", language=language, body=body) == shown


# --- signatures -----------------------------------------------------------------------


def test_signatures_skip_the_body_rules() -> None:
    body = "escape https://example.org/x ada@example.org +44 20 7946 0000 \u202e" * 100
    draft: dict[str, Any] = {"kind": MessageKind.SIGNATURE, "body": body, "language": "ru"}
    settings = ReviewSettings(long_text_chars=10)
    assert run(recipients=(PRISON,), settings=settings, **draft) == ()


def test_signatures_still_check_name_and_city() -> None:
    found = rules(
        kind=MessageKind.SIGNATURE,
        body="",
        supporter_name="\u0410da Escape",
        supporter_city="\u202eSpringfield",
        recipients=(PRISON,),
    )
    assert found == ["bidi-control", "mixed-script-name", "danger-word"]


# --- order and auto-approval ----------------------------------------------------------


def test_flags_come_in_rule_order_every_time() -> None:
    overrides: dict[str, Any] = {
        "body": (
            "Call +44 20 7946 0000 or ada@example.org, see https://example.org/x, "
            "and plan the escape \u202e" + " Free him now." * 30
        ),
        "supporter_name": "\u0410drianna Nowak",
        "language": "ru",
        "settings": ReviewSettings(long_text_chars=50),
        "recipients": (PRISON,),
    }
    first = run(**overrides)
    assert [flag.rule for flag in first] == list(RULES)
    assert run(**overrides) == first


def test_auto_approves_a_clean_message_of_an_approved_kind() -> None:
    case = make_case(auto_approve=frozenset({MessageKind.SIGNATURE, MessageKind.PETITION}))
    signature = make_draft(kind=MessageKind.SIGNATURE, body="")
    petition = make_draft(kind=MessageKind.PETITION)
    assert auto_approves(signature, case, ())
    assert auto_approves(petition, case, screen(petition, case, (AUTHORITY,), SETTINGS))


def test_does_not_auto_approve_other_kinds() -> None:
    case = make_case(auto_approve=frozenset({MessageKind.SIGNATURE}))
    assert not auto_approves(make_draft(kind=MessageKind.LETTER), case, ())
    assert not auto_approves(make_draft(), make_case(auto_approve=frozenset()), ())


def test_does_not_auto_approve_a_flagged_message() -> None:
    case = make_case(auto_approve=frozenset({MessageKind.SIGNATURE}))
    draft = make_draft(kind=MessageKind.SIGNATURE, body="", supporter_name="\u0410da")
    flags = screen(draft, case, (AUTHORITY,), SETTINGS)
    assert flags
    assert not auto_approves(draft, case, flags)


# --- robustness -----------------------------------------------------------------------


@hypothesis_settings(max_examples=200, database=None, deadline=None)
@given(
    body=st.text(),
    name=st.text(max_size=60),
    city=st.text(max_size=60),
    language=st.sampled_from(["en", "ru", "ja", "sr-Latn", "und", "", "x-y_z"]),
)
def test_screen_never_raises(body: str, name: str, city: str, language: str) -> None:
    flags = run(
        body=body,
        supporter_name=name,
        supporter_city=city,
        language=language,
        recipients=(AUTHORITY, PRISON),
    )
    assert [flag.rule for flag in flags] == [
        rule for rule in RULES if rule in {f.rule for f in flags}
    ]
    assert all(len(flag.detail) <= 80 for flag in flags)
