"""The campaign file: the reference loads, and every problem is named precisely."""

from __future__ import annotations

from pathlib import Path

import pytest

from delivery.campaign import CampaignFileError, load_campaign, parse_campaign
from delivery.errors import CampaignError
from delivery.models import Cadence, ChannelName, Format, MessageKind, RecipientKind

REFERENCE = Path(__file__).parent.parent / "fixtures" / "campaign_reference.toml"
TEXT = REFERENCE.read_text(encoding="utf-8")

VIKTOR = "case 'viktor-arkhipov'"
PROSECUTOR = f"{VIKTOR}, recipient 'ru-prosecutor-general'"
PRISON = f"{VIKTOR}, recipient 'arkhipov-detention-centre'"
FAMILY = f"{VIKTOR}, recipient 'arkhipov-family'"
HONDURAS = "case 'honduras-defenders'"
MINISTER = f"{HONDURAS}, recipient 'hn-minister-security'"


def variant(*edits: tuple[str, str]) -> str:
    """The reference text with each (old, new) edit applied once; old must be present."""
    text = TEXT
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def problems_of(text: str) -> tuple[str, ...]:
    with pytest.raises(CampaignFileError) as caught:
        parse_campaign(text, source="campaign.toml")
    return caught.value.problems


def only_problem(text: str) -> str:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    return problems[0]


def test_reference_file_loads() -> None:
    campaign = load_campaign(REFERENCE)

    assert [case.slug for case in campaign.cases] == ["viktor-arkhipov", "honduras-defenders"]
    viktor = campaign.case("viktor-arkhipov")
    assert viktor is not None
    assert viktor.country == "RU"
    assert viktor.auto_approve == {MessageKind.SIGNATURE, MessageKind.PETITION}
    assert viktor.danger_words == ("escape", "co-defendant")
    prosecutor, prison, family = viktor.recipients
    assert prosecutor.kind is RecipientKind.AUTHORITY
    assert prosecutor.channels == (ChannelName.EMAIL, ChannelName.FAX, ChannelName.POST)
    assert prosecutor.format is Format.DIGEST
    assert prosecutor.cadence is Cadence.DAILY
    assert prosecutor.fax == "+74951234567"
    assert prosecutor.case == "viktor-arkhipov"
    assert prison.kind is RecipientKind.PRISON
    assert prison.channels == (ChannelName.POST,)
    assert prison.page_limit == 10
    assert prison.prisoner_number == "A-1047"
    assert prison.address is not None
    assert prison.address.city == "Moscow"
    assert family.kind is RecipientKind.FAMILY
    assert family.page_limit is None


def test_reference_organisation_and_second_case() -> None:
    campaign = load_campaign(REFERENCE)

    organisation = campaign.organisation
    assert organisation.email == "write4rights@example.org"
    assert organisation.reply_to == "casework@example.org"
    assert organisation.bounce_domain == "bounces.example.org"
    assert organisation.address.country == "GB"
    honduras = campaign.case("honduras-defenders")
    assert honduras is not None
    assert honduras.danger_words == ()
    (minister,) = honduras.recipients
    assert minister.channels == (ChannelName.FAX, ChannelName.EMAIL)
    assert minister.cadence is Cadence.ONCE


def test_extra_recipient_keys_are_kept() -> None:
    text = variant(
        (
            "  page_limit = 10 ",
            '  visiting_day = "Tuesday"\n  envelope_colours = ["white", "brown"]\n'
            "  page_limit = 10 ",
        )
    )

    campaign = parse_campaign(text, source="campaign.toml")

    prison = campaign.cases[0].recipients[1]
    assert prison.extra == {"visiting_day": "Tuesday", "envelope_colours": ["white", "brown"]}
    assert campaign.cases[0].recipients[0].extra == {}


def test_defaults_for_reply_to_format_and_cadence() -> None:
    text = variant(
        ('reply_to = "casework@example.org"\n', ""),
        ('  format = "bundle"\n  cadence = "once"\n', ""),
    )

    campaign = parse_campaign(text, source="campaign.toml")

    assert campaign.organisation.reply_to == "write4rights@example.org"
    minister = campaign.cases[1].recipients[0]
    assert minister.format is Format.BUNDLE
    assert minister.cadence is Cadence.WEEKLY


@pytest.mark.parametrize(
    ("edit", "where", "field", "says"),
    [
        pytest.param(
            ('fax = "+74951234567"', 'fax = "+7495"'),
            PROSECUTOR,
            "fax",
            "'+7495' is not an E.164 number (+ and 8 to 15 digits)",
            id="short-fax",
        ),
        pytest.param(
            ('fax = "+50422201234"', 'fax = "0042 2220 1234"'),
            MINISTER,
            "fax",
            "is not an E.164 number",
            id="fax-not-e164",
        ),
        pytest.param(
            ('kind = "prison"', 'kind = "jail"'),
            PRISON,
            "kind",
            "'jail' is not a recipient kind (authority, prison, family)",
            id="unknown-kind",
        ),
        pytest.param(
            ('channels = ["post"]', 'channels = ["pigeon"]'),
            PRISON,
            "channels",
            "'pigeon' is not a channel (email, fax, post)",
            id="unknown-channel",
        ),
        pytest.param(
            ('channels = ["post"]', 'channels = ["post", "post"]'),
            PRISON,
            "channels",
            "'post' is listed more than once",
            id="repeated-channel",
        ),
        pytest.param(
            ('channels = ["post"]', "channels = []"),
            PRISON,
            "channels",
            "must not be empty",
            id="no-channels",
        ),
        pytest.param(
            ('format = "digest"', 'format = "zine"'),
            PROSECUTOR,
            "format",
            "'zine' is not a format (bundle, digest)",
            id="unknown-format",
        ),
        pytest.param(
            ('cadence = "daily"', 'cadence = "hourly"'),
            PROSECUTOR,
            "cadence",
            "'hourly' is not a cadence (once, daily, weekly)",
            id="unknown-cadence",
        ),
        pytest.param(
            ('auto_approve = ["signature", "petition"]', 'auto_approve = ["signature", "sms"]'),
            VIKTOR,
            "auto_approve",
            "'sms' is not a message kind",
            id="unknown-auto-approve-kind",
        ),
        pytest.param(
            ('email = "family.arkhipov@example.net"', 'email = "family.arkhipov@"'),
            FAMILY,
            "email",
            "'family.arkhipov@' is not a valid e-mail address",
            id="bad-recipient-email",
        ),
        pytest.param(
            ('email = "write4rights@example.org"', 'email = "write4rights example.org"'),
            "organisation",
            "email",
            "is not a valid e-mail address",
            id="bad-organisation-email",
        ),
        pytest.param(
            ('country = "HN"', 'country = "XH"'),
            HONDURAS,
            "country",
            "'XH' is not an ISO 3166-1 alpha-2 country code",
            id="bad-case-country",
        ),
        pytest.param(
            (
                'postal_code = "170100"\n    country = "RU"',
                'postal_code = "170100"\n    country = "SU"',
            ),
            FAMILY,
            "address.country",
            "'SU' is not an ISO 3166-1 alpha-2 country code",
            id="bad-address-country",
        ),
        pytest.param(
            ('country = "GB"', 'country = "UK"'),
            "organisation",
            "address.country",
            "'UK' is not an ISO 3166-1 alpha-2 country code",
            id="bad-organisation-country",
        ),
        pytest.param(
            ('  email = "family.arkhipov@example.net"\n', ""),
            FAMILY,
            "channels",
            "'email' is listed but the recipient has no email",
            id="email-channel-without-email",
        ),
        pytest.param(
            ('  fax = "+50422201234"\n', ""),
            MINISTER,
            "channels",
            "'fax' is listed but the recipient has no fax",
            id="fax-channel-without-fax",
        ),
        pytest.param(
            (
                '    [case.recipient.address]\n    name = "Arkhipov family"\n'
                '    street = "ul. Sadovaya 21, kv. 7"\n    city = "Tver"\n'
                '    postal_code = "170100"\n    country = "RU"\n',
                "",
            ),
            FAMILY,
            "channels",
            "'post' is listed but the recipient has no address",
            id="post-channel-without-address",
        ),
        pytest.param(
            (
                'channels = ["email", "post"]\n  format = "bundle"',
                'channels = ["post"]\n  format = "digest"',
            ),
            FAMILY,
            "format",
            "'digest' is sent by e-mail, but 'email' is not in channels",
            id="digest-without-email",
        ),
        pytest.param(
            ("page_limit = 10", "page_limit = 0"),
            PRISON,
            "page_limit",
            "0 is not a positive integer",
            id="page-limit-zero",
        ),
        pytest.param(
            ("page_limit = 10", 'page_limit = "10"'),
            PRISON,
            "page_limit",
            "'10' is not a positive integer",
            id="page-limit-text",
        ),
        pytest.param(
            ("page_limit = 10", "page_limit = 2.5"),
            PRISON,
            "page_limit",
            "2.5 is not a positive integer",
            id="page-limit-float",
        ),
        pytest.param(
            ('  name = "Minister of Security"\n', ""),
            MINISTER,
            "name",
            "is required",
            id="missing-recipient-name",
        ),
        pytest.param(
            ('  language = "es"\n', ""),
            MINISTER,
            "language",
            "is required",
            id="missing-language",
        ),
        pytest.param(
            ('demand = "Protect the defenders', 'demands = "Protect the defenders'),
            HONDURAS,
            "demand",
            "is required",
            id="missing-case-demand",
        ),
    ],
)
def test_each_problem_names_case_recipient_and_field(
    edit: tuple[str, str], where: str, field: str, says: str
) -> None:
    problem = problems_of(variant(edit))[0]

    assert problem.startswith(f"campaign.toml: {where}, field '{field}': ")
    assert says in problem


def test_error_message_is_the_problem_line() -> None:
    with pytest.raises(CampaignError) as caught:
        parse_campaign(variant(('fax = "+74951234567"', 'fax = "+7495"')), source="campaign.toml")

    assert str(caught.value) == (
        "campaign.toml: case 'viktor-arkhipov', recipient 'ru-prosecutor-general', "
        "field 'fax': '+7495' is not an E.164 number (+ and 8 to 15 digits)"
    )


def test_duplicate_case_slug() -> None:
    text = variant(('slug = "honduras-defenders"', 'slug = "viktor-arkhipov"'))

    problem = only_problem(text)

    assert problem == (
        "campaign.toml: case 'viktor-arkhipov', field 'slug': is used by more than one case"
    )


def test_duplicate_recipient_slug_across_cases() -> None:
    text = variant(('slug = "hn-minister-security"', 'slug = "ru-prosecutor-general"'))

    problem = only_problem(text)

    assert problem.startswith(
        "campaign.toml: case 'honduras-defenders', recipient 'ru-prosecutor-general', "
        "field 'slug': "
    )
    assert "case 'viktor-arkhipov'" in problem


def test_duplicate_recipient_slug_within_a_case() -> None:
    text = variant(('slug = "arkhipov-family"', 'slug = "arkhipov-detention-centre"'))

    problem = only_problem(text)

    assert problem.startswith(
        f"campaign.toml: {VIKTOR}, recipient 'arkhipov-detention-centre', field 'slug': "
    )


@pytest.mark.parametrize("slug", ["Viktor", "-viktor", "viktor_arkhipov", "v" * 64, "víktor"])
def test_bad_case_slugs(slug: str) -> None:
    problem = only_problem(variant(('slug = "viktor-arkhipov"', f'slug = "{slug}"')))

    assert problem.startswith(f"campaign.toml: case '{slug}', field 'slug': '{slug}' is not a slug")


def test_bad_recipient_slug() -> None:
    problem = only_problem(variant(('slug = "arkhipov-family"', 'slug = "Arkhipov Family"')))

    assert problem.startswith(
        f"campaign.toml: {VIKTOR}, recipient 'Arkhipov Family', field 'slug': "
    )


def test_recipient_without_slug_is_named_by_position() -> None:
    problem = only_problem(variant(('  slug = "arkhipov-family"\n', "")))

    assert problem == (
        f"campaign.toml: {VIKTOR}, recipient #3 (no slug), field 'slug': is required"
    )


def test_misspelt_case_field_is_reported() -> None:
    problems = problems_of(variant(("danger_words =", "danger_word =")))

    assert problems == (
        f"campaign.toml: {VIKTOR}, field 'danger_word':"
        " is not a field of this table; did you mean 'danger_words'?",
    )


def test_extra_fields_an_operator_adds_keep_working() -> None:
    text = variant(('demand = "Release', 'hashtag = "#FreeViktor"\ndemand = "Release'))

    loaded = parse_campaign(text, source="campaign.toml")

    assert [c.slug for c in loaded.cases] == ["viktor-arkhipov", "honduras-defenders"]


def test_toml_syntax_error_gives_the_line() -> None:
    text = variant(('cadence = "weekly"', 'cadence = "weekly'))

    problem = only_problem(text)

    assert problem.startswith("campaign.toml: not valid TOML: ")
    assert "line 52" in problem


def test_several_problems_reported_together() -> None:
    text = variant(
        ('fax = "+74951234567"', 'fax = "+7495"'),
        ("page_limit = 10", "page_limit = -3"),
        ('kind = "family"', 'kind = "relatives"'),
        ('country = "HN"', 'country = "ZZ"'),
    )

    with pytest.raises(CampaignFileError) as caught:
        parse_campaign(text, source="campaign.toml")

    problems = caught.value.problems
    assert len(problems) == 4
    message = str(caught.value)
    assert message.startswith("campaign.toml: 4 problems:\n")
    for needle in (
        f"{PROSECUTOR}, field 'fax'",
        f"{PRISON}, field 'page_limit'",
        f"{FAMILY}, field 'kind'",
        f"{HONDURAS}, field 'country'",
    ):
        assert needle in message


def test_missing_tables() -> None:
    problems = problems_of("")

    assert problems == (
        "campaign.toml: field 'organisation': is required (a table)",
        "campaign.toml: field 'case': is required: add at least one [[case]] table",
    )


def test_load_campaign_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"

    with pytest.raises(CampaignError, match=r"nowhere\.toml: campaign file not found"):
        load_campaign(missing)


def test_load_campaign_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "winter.toml"
    path.write_text(variant(("page_limit = 10", "page_limit = 0")), encoding="utf-8")

    with pytest.raises(CampaignError, match=r"^winter\.toml: case 'viktor-arkhipov'"):
        load_campaign(path)
