"""The demo campaign and its generated messages, as someone running the demo sees them."""

from __future__ import annotations

import csv
import itertools
import re
import tomllib
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from delivery.demo import DEMO_CAMPAIGN_TOML, generate_messages, write_messages_csv

HEADER = [
    "external_id",
    "case",
    "to",
    "supporter_name",
    "supporter_email",
    "supporter_city",
    "supporter_country",
    "language",
    "kind",
    "body",
    "submitted_at",
    "event",
]
KINDS = {"authority", "prison", "family"}
MESSAGE_KINDS = {"letter", "email", "fax", "tweet", "petition", "signature"}
EMAIL = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*@[a-z0-9-]+(?:\.[a-z0-9-]+)+$")
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
ALPHA2 = re.compile(r"^[A-Z]{2}$")
TIMESTAMP = re.compile(r"^2026-(11|12)-\d\dT\d\d:\d\d:\d\dZ$")
PHONE = re.compile(r"\+?\d[\d ]{7,}\d")
SCRIPT_RANGES = {
    "Cyrillic": (0x0400, 0x04FF),
    "Arabic": (0x0600, 0x06FF),
    "Hebrew": (0x0590, 0x05FF),
    "CJK": (0x4E00, 0x9FFF),
    "Hangul": (0xAC00, 0xD7AF),
    "Devanagari": (0x0900, 0x097F),
}


@pytest.fixture(scope="module")
def campaign() -> dict[str, Any]:
    return tomllib.loads(DEMO_CAMPAIGN_TOML)


@pytest.fixture(scope="module")
def cases(campaign: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {case["slug"]: case for case in campaign["case"]}


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    return list(generate_messages(3000))


def recipients_of(case: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [r for r in case["recipient"] if r["kind"] == kind]


def target_kind(row: dict[str, str], cases: dict[str, dict[str, Any]]) -> str:
    """The recipient kind a row is addressed to, whether `to` names a kind or a slug."""
    if row["to"] in KINDS:
        return row["to"]
    (recipient,) = [r for r in cases[row["case"]]["recipient"] if r["slug"] == row["to"]]
    return str(recipient["kind"])


def personal_notes(
    rows: list[dict[str, str]], cases: dict[str, dict[str, Any]]
) -> list[dict[str, str]]:
    return [r for r in rows if target_kind(r, cases) in {"prison", "family"}]


def has_script(text: str, script: str) -> bool:
    low, high = SCRIPT_RANGES[script]
    return any(low <= ord(ch) <= high for ch in text)


def scripts_of(word: str) -> set[str]:
    return {
        unicodedata.name(ch).split()[0] for ch in word if unicodedata.category(ch).startswith("L")
    }


# The campaign file


def test_campaign_has_organisation_and_four_cases_in_four_countries(
    campaign: dict[str, Any],
) -> None:
    assert campaign["organisation"]["email"] == "write4rights@example.org"
    assert campaign["organisation"]["address"]["country"] == "GB"
    countries = [case["country"] for case in campaign["case"]]
    assert len(countries) >= 4
    assert len(set(countries)) == len(countries)
    assert {"RU", "HN"} <= set(countries)
    for case in campaign["case"]:
        assert ALPHA2.match(case["country"])
        for key in ("name", "summary", "demand"):
            assert case[key], (case["slug"], key)


def test_every_case_has_one_authority_and_one_family_and_most_a_prison(
    campaign: dict[str, Any],
) -> None:
    with_prison = 0
    for case in campaign["case"]:
        assert len(recipients_of(case, "family")) == 1, case["slug"]
        assert len(recipients_of(case, "authority")) in {1, 2}, case["slug"]
        prisons = recipients_of(case, "prison")
        with_prison += bool(prisons)
        assert len(prisons) + len(recipients_of(case, "authority")) == 2, case["slug"]
        for prison in prisons:
            assert prison["prisoner_number"]
            assert prison["facility"]
            assert prison["page_limit"] > 0
    assert with_prison >= 3


def test_every_channel_has_its_address_and_every_recipient_a_postal_address(
    campaign: dict[str, Any],
) -> None:
    for case in campaign["case"]:
        for recipient in case["recipient"]:
            channels = recipient["channels"]
            assert channels
            assert set(channels) <= {"email", "fax", "post"}
            if "email" in channels:
                assert EMAIL.match(recipient["email"]), recipient["slug"]
            if "fax" in channels:
                assert E164.match(recipient["fax"]), recipient["slug"]
            if "fax" in recipient:
                assert E164.match(recipient["fax"]), recipient["slug"]
            address = recipient["address"]
            for key in ("name", "street", "city", "postal_code", "country"):
                assert address[key], (recipient["slug"], key)
            assert ALPHA2.match(address["country"])


def test_recipient_slugs_are_unique_across_the_file(campaign: dict[str, Any]) -> None:
    slugs = [r["slug"] for case in campaign["case"] for r in case["recipient"]]
    assert len(slugs) == len(set(slugs))
    case_slugs = [case["slug"] for case in campaign["case"]]
    assert len(case_slugs) == len(set(case_slugs))


def test_recipients_exercise_every_channel_format_and_cadence(campaign: dict[str, Any]) -> None:
    everyone = [r for case in campaign["case"] for r in case["recipient"]]
    authorities = [r for r in everyone if r["kind"] == "authority"]
    assert any(r["format"] == "digest" and r["channels"][0] == "email" for r in authorities)
    assert any(r["channels"][0] == "fax" for r in authorities)
    assert all(r["channels"] == ["post"] for r in everyone if r["kind"] == "prison")
    families = [r for r in everyone if r["kind"] == "family"]
    assert all(r["channels"] in (["email", "post"], ["post"]) for r in families)
    assert {r["cadence"] for r in everyone} == {"once", "daily", "weekly"}
    assert {r["format"] for r in everyone} == {"bundle", "digest"}


def test_cases_differ_in_auto_approval_and_all_have_danger_words(
    campaign: dict[str, Any],
) -> None:
    approvals = [frozenset(case["auto_approve"]) for case in campaign["case"]]
    assert len(set(approvals)) > 1
    assert any({"letter", "email", "tweet"} <= kinds for kinds in approvals)
    for kinds in approvals:
        assert kinds <= MESSAGE_KINDS
    for case in campaign["case"]:
        assert len(case["danger_words"]) >= 2


# The generated messages


def test_same_seed_gives_the_same_messages_and_another_seed_others() -> None:
    first = list(generate_messages(3000, seed=7))
    assert first == list(generate_messages(3000, seed=7))
    assert first != list(generate_messages(3000, seed=8))
    assert list(generate_messages(50)) == list(generate_messages(50, seed=2026))


def test_rows_have_exactly_the_file_columns_and_unique_ids(rows: list[dict[str, str]]) -> None:
    assert len(rows) == 3000
    for row in rows:
        assert list(row) == HEADER
        assert all(isinstance(value, str) for value in row.values())
        assert re.fullmatch(r"demo-\d{6}", row["external_id"])
        assert row["kind"] in MESSAGE_KINDS
    assert len({row["external_id"] for row in rows}) == 3000


def test_generation_is_lazy_and_rejects_a_negative_count() -> None:
    first = list(itertools.islice(generate_messages(10**12), 3))
    assert [row["external_id"] for row in first] == ["demo-000001", "demo-000002", "demo-000003"]
    assert list(generate_messages(0)) == []
    with pytest.raises(ValueError, match="negative"):
        generate_messages(-1)


def test_every_to_is_a_kind_or_a_recipient_of_that_case(
    rows: list[dict[str, str]], cases: dict[str, dict[str, Any]]
) -> None:
    by_kind = Counter(row["to"] in KINDS for row in rows)
    assert by_kind[True] > 2 * by_kind[False] > 0
    for row in rows:
        case = cases[row["case"]]
        if row["to"] in KINDS:
            assert recipients_of(case, row["to"]), row
        else:
            assert row["to"] in {r["slug"] for r in case["recipient"]}, row


def test_supporters_come_from_many_countries_and_write_in_their_scripts(
    rows: list[dict[str, str]],
) -> None:
    countries = {row["supporter_country"] for row in rows}
    assert len(countries) >= 30
    assert all(ALPHA2.match(code) for code in countries)
    names = " ".join(row["supporter_name"] for row in rows)
    for script in SCRIPT_RANGES:
        assert has_script(names, script), script
    scripts = set().union(*(scripts_of(word) for word in names.split()))
    assert {"LATIN", "CYRILLIC", "ARABIC", "HEBREW", "CJK", "HANGUL", "DEVANAGARI"} <= scripts


def test_no_name_or_city_mixes_scripts_within_a_word(rows: list[dict[str, str]]) -> None:
    for row in rows:
        for word in (row["supporter_name"] + " " + row["supporter_city"]).split():
            assert len(scripts_of(word)) <= 1, (word, row)


def test_bodies_are_written_in_many_scripts_and_languages(rows: list[dict[str, str]]) -> None:
    bodies = " ".join(row["body"] for row in rows)
    for script in SCRIPT_RANGES:
        assert has_script(bodies, script), script
    languages = {row["language"] for row in rows if row["body"]}
    assert len(languages) >= 15
    assert {"en", "es", "fr", "de", "ru", "ar", "zh", "ko", "hi", "he"} <= languages


def test_pre_written_appeals_are_sent_verbatim_by_many_supporters(
    rows: list[dict[str, str]], cases: dict[str, dict[str, Any]]
) -> None:
    appeals = [r for r in rows if r["kind"] in {"letter", "email"}]
    appeals = [r for r in appeals if target_kind(r, cases) == "authority"]
    counts = Counter((r["case"], r["body"]) for r in appeals)
    assert counts.most_common(1)[0][1] >= 20
    assert {"en", "es", "fr", "de", "ru", "ar"} <= {r["language"] for r in appeals}
    assert {r["kind"] for r in appeals} == {"letter", "email"}
    for row in appeals:
        if row["kind"] == "email":
            assert row["supporter_email"]


def test_signatures_have_no_body_and_go_to_the_authority(
    rows: list[dict[str, str]], cases: dict[str, dict[str, Any]]
) -> None:
    signatures = [r for r in rows if r["kind"] == "signature"]
    assert signatures
    for row in signatures:
        assert row["body"] == ""
        assert target_kind(row, cases) == "authority"
    assert all(r["body"] for r in rows if r["kind"] != "signature")


def test_petition_lines_are_identical_for_every_signer_of_a_case(
    rows: list[dict[str, str]], cases: dict[str, dict[str, Any]]
) -> None:
    lines: dict[str, set[str]] = {}
    for row in rows:
        if row["kind"] == "petition":
            lines.setdefault(row["case"], set()).add(row["body"])
            assert target_kind(row, cases) == "authority"
    assert set(lines) == set(cases)
    assert all(len(bodies) == 1 for bodies in lines.values())


def test_tweets_are_short_tagged_and_link_free(rows: list[dict[str, str]]) -> None:
    tweets = [r for r in rows if r["kind"] == "tweet"]
    assert tweets
    for row in tweets:
        assert "#W4R26" in row["body"]
        assert len(row["body"]) <= 280
        assert "http" not in row["body"]
        assert "www." not in row["body"]


def test_default_mix_of_message_kinds(
    rows: list[dict[str, str]], cases: dict[str, dict[str, Any]]
) -> None:
    kinds = Counter(row["kind"] for row in rows)
    share = {kind: n / len(rows) for kind, n in kinds.items()}
    assert 0.30 < share["signature"] < 0.40
    assert 0.11 < share["petition"] < 0.19
    assert 0.02 < share["tweet"] < 0.08
    notes = len(personal_notes(rows, cases)) / len(rows)
    assert 0.15 < notes < 0.25
    assert 0.20 < share["letter"] + share["email"] - notes < 0.30


def test_personal_notes_are_safe_except_a_few_that_screening_must_catch(
    rows: list[dict[str, str]], cases: dict[str, dict[str, Any]]
) -> None:
    notes = personal_notes(rows, cases)
    assert all(row["kind"] == "letter" for row in notes)
    assert {target_kind(row, cases) for row in notes} == {"prison", "family"}
    flagged = []
    for row in notes:
        body = row["body"].casefold()
        danger = [w for w in cases[row["case"]]["danger_words"] if w.casefold() in body]
        link = "http" in body or "www." in body or "@" in body
        if danger or link or PHONE.search(body):
            flagged.append(row)
        if danger:
            assert target_kind(row, cases) == "prison", row
    assert 0.005 * len(notes) <= len(flagged) <= 0.05 * len(notes)
    clean = [row for row in notes if row not in flagged]
    assert len({row["language"] for row in clean}) >= 15


def test_supporter_emails_are_valid_or_empty(rows: list[dict[str, str]]) -> None:
    emails = [row["supporter_email"] for row in rows]
    assert 0.3 < emails.count("") / len(emails) < 0.5
    for email in emails:
        assert email == "" or EMAIL.match(email), email
        assert email == "" or email.split("@")[1].startswith("example.")


def test_text_is_nfc_without_control_characters(rows: list[dict[str, str]]) -> None:
    for row in rows:
        for value in row.values():
            assert unicodedata.is_normalized("NFC", value)
            assert not any(unicodedata.category(ch) == "Cc" for ch in value), value
            assert value == value.strip()


def test_submissions_span_the_campaign_weeks_and_some_come_from_events(
    rows: list[dict[str, str]],
) -> None:
    stamps = sorted(row["submitted_at"] for row in rows)
    assert all(TIMESTAMP.match(stamp) for stamp in stamps)
    assert "2026-11-20T00:00:00Z" <= stamps[0] < "2026-11-22"
    assert "2026-12-19" < stamps[-1] <= "2026-12-20T23:59:59Z"
    events = Counter(row["event"] for row in rows)
    assert 0.5 < events[""] / len(rows) < 0.98
    assert {"Koszalin 24h marathon", "Lomé concert", "Seoul letter night"} <= set(events)
    koszalin = [row for row in rows if row["event"] == "Koszalin 24h marathon"]
    assert all(row["supporter_country"] == "PL" for row in koszalin)


# The CSV file


def test_csv_round_trips_through_dict_reader(tmp_path: Path) -> None:
    path = tmp_path / "messages.csv"
    assert write_messages_csv(path, 500, seed=11) == 500
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == HEADER
        read = list(reader)
    assert read == list(generate_messages(500, seed=11))
    assert path.read_text(encoding="utf-8").splitlines()[0] == ",".join(HEADER)


def test_csv_with_no_messages_is_just_the_header(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    assert write_messages_csv(path, 0) == 0
    assert path.read_bytes() == (",".join(HEADER) + "\r\n").encode()
