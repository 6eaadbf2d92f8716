"""Postal address lines, postage zones and weights (fictional addresses)."""

from __future__ import annotations

import pytest

from delivery.address import (
    country_code,
    envelope_type,
    estimated_weight_g,
    postage_zone,
    postal_lines,
)
from delivery.models import Address


def address(**fields: str) -> Address:
    base = {"name": "", "street": "", "city": "", "postal_code": "", "country": ""}
    return Address(**(base | fields))


def test_gb_domestic_has_no_country_line_and_a_capital_post_town() -> None:
    lines = postal_lines(
        ["Jane Example"],
        address(street="1 Sample Road", city="Exampleton", postal_code="EX1 2PL", country="GB"),
        origin_country="GB",
    )
    assert lines == ("Jane Example", "1 Sample Road", "EXAMPLETON", "EX1 2PL")


def test_gb_from_abroad_ends_with_the_country_in_english_capitals() -> None:
    where = address(
        street="1 Sample Road", city="Exampleton", postal_code="EX1 2PL", country="United Kingdom"
    )
    lines = postal_lines(["Jane Example"], where, origin_country="DE")
    assert lines[-1] == "UNITED KINGDOM"


def test_de_puts_the_postcode_before_the_city() -> None:
    lines = postal_lines(
        ["Hans Beispiel"],
        address(
            name="Beispiel GmbH",
            street="Musterweg 5",
            city="Musterstadt",
            postal_code="12345",
            country="DE",
        ),
        origin_country="GB",
    )
    assert lines == (
        "Hans Beispiel",
        "Beispiel GmbH",
        "Musterweg 5",
        "12345 MUSTERSTADT",
        "GERMANY",
    )


def test_de_domestic_leaves_the_country_out() -> None:
    where = address(street="Musterweg 5", city="Musterstadt", postal_code="12345", country="DE")
    assert postal_lines(["Hans Beispiel"], where, origin_country="DE")[-1] == "12345 MUSTERSTADT"


def test_ru_keeps_cyrillic_and_adds_the_country_in_english() -> None:
    lines = postal_lines(
        ["Иван Примеров, No. 4521"],
        address(
            street="ул. Примерная, д. 1",
            city="Примерск",
            postal_code="123456",
            region="Примерская обл.",
            country="RU",
        ),
        origin_country="GB",
    )
    assert lines[0] == "Иван Примеров, No. 4521"
    assert "ПРИМЕРСК" in lines
    assert "123456" in lines
    assert lines[-1] == "RUSSIAN FEDERATION"


def test_us_city_state_and_zip_share_a_line() -> None:
    lines = postal_lines(
        ["J. Sample"],
        address(
            street="1 Example St",
            city="Springfield",
            postal_code="62701",
            region="IL",
            country="US",
        ),
        origin_country="GB",
    )
    assert lines == ("J. Sample", "1 Example St", "SPRINGFIELD, IL 62701", "UNITED STATES")


def test_japan_in_japanese_runs_from_postcode_to_name() -> None:
    lines = postal_lines(
        ["山田 花子"],
        address(
            street="例町1-2-3",
            city="千代田区",
            postal_code="100-0001",
            region="東京都",
            country="JP",
        ),
        origin_country="GB",
    )
    assert lines == ("〒100-0001", "東京都", "千代田区 例町1-2-3", "山田 花子", "JAPAN")


def test_japan_in_latin_script_runs_from_name_to_postcode() -> None:
    lines = postal_lines(
        ["Hanako Yamada"],
        address(
            street="1-2-3 Reimachi",
            city="Chiyoda-ku",
            postal_code="100-0001",
            region="Tokyo",
            country="JP",
        ),
        origin_country="GB",
    )
    assert lines[0] == "Hanako Yamada"
    assert "Chiyoda-ku" in lines[1]
    assert lines[-1] == "JAPAN"


def test_an_unknown_country_falls_back_to_our_order() -> None:
    lines = postal_lines(
        ["Office of the Prosecutor"],
        address(
            name="Office of the Prosecutor",
            street="12 Justice Avenue",
            city="Capital City",
            postal_code="10001",
            country="Examplestan",
        ),
    )
    assert lines == (
        "Office of the Prosecutor",
        "12 Justice Avenue",
        "10001 Capital City",
        "EXAMPLESTAN",
    )


def test_country_codes_from_codes_names_and_aliases() -> None:
    assert country_code("gb") == "GB"
    assert country_code("UK") == "GB"
    assert country_code("Germany") == "DE"
    assert country_code("Examplestan") is None


@pytest.mark.parametrize(
    ("origin", "destination", "zone"),
    [
        ("GB", "GB", "domestic"),
        ("GB", "United Kingdom", "domestic"),
        ("GB", "DE", "europe"),
        ("DE", "CH", "europe"),
        ("FR", "NO", "europe"),
        ("GB", "US", "world"),
        ("GB", "JP", "world"),
        ("US", "DE", "world"),
        ("GB", "Examplestan", "world"),
    ],
)
def test_postage_zones(origin: str, destination: str, zone: str) -> None:
    assert postage_zone(origin, destination) == zone


@pytest.mark.parametrize(
    ("sheets", "envelope", "grams"),
    [(1, "C5", 15), (3, "C5", 25), (2, "DL", 15), (4, "US10", 25), (0, "dl", 5)],
)
def test_weights(sheets: int, envelope: str, grams: int) -> None:
    assert estimated_weight_g(sheets, envelope) == grams


def test_unknown_envelopes_and_negative_sheets_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown envelope type"):
        estimated_weight_g(1, "B4")
    with pytest.raises(ValueError, match="sheets"):
        estimated_weight_g(-1, "C5")


def test_us10_is_also_written_with_a_hash() -> None:
    assert envelope_type("US #10").code == "US10"
