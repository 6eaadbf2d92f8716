"""Reading message files: one draft or one precise reject per row, streamed."""

from __future__ import annotations

import csv
import json
import re
import tracemalloc
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from delivery.campaign import load_campaign
from delivery.config import IntakeSettings
from delivery.errors import InputError
from delivery.intake import Rejected, read_messages, recipients_for, write_rejects
from delivery.models import Campaign, MessageDraft, MessageKind

FIXTURES = Path(__file__).parent.parent / "fixtures"
SAMPLE = FIXTURES / "messages_sample.csv"
HEADER = (
    b"external_id,case,to,supporter_name,supporter_email,supporter_city,supporter_country,"
    b"language,kind,body,submitted_at,event\n"
)
WHEN = b"2026-12-14T10:00:00Z"


@pytest.fixture(scope="module")
def campaign() -> Campaign:
    return load_campaign(FIXTURES / "campaign_reference.toml")


def row(
    external_id: bytes,
    *,
    case: bytes = b"viktor-arkhipov",
    to: bytes = b"authority",
    name: bytes = b"Ana Ruiz",
    email: bytes = b"",
    country: bytes = b"ES",
    kind: bytes = b"letter",
    body: bytes = b"Free him now.",
    when: bytes = WHEN,
) -> bytes:
    """One CSV line in HEADER's column order."""
    cells = (external_id, case, to, name, email, b"Madrid", country, b"es", kind, body, when)
    return b",".join((*cells, b"Night of letters")) + b"\n"


def read(path: Path, campaign: Campaign, **limits: int) -> list[MessageDraft | Rejected]:
    return list(
        read_messages(path, source="test", campaign=campaign, settings=IntakeSettings(**limits))
    )


def drafts(results: list[MessageDraft | Rejected]) -> list[MessageDraft]:
    return [r for r in results if isinstance(r, MessageDraft)]


def rejects(results: list[MessageDraft | Rejected]) -> list[Rejected]:
    return [r for r in results if isinstance(r, Rejected)]


def write(tmp_path: Path, data: bytes, name: str = "messages.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_sample_gives_five_drafts(campaign: Campaign) -> None:
    results = read(SAMPLE, campaign)

    assert rejects(results) == []
    found = drafts(results)
    assert [d.external_id for d in found] == ["pl-0001", "pl-0002", "de-0001", "tg-0001", "kr-0001"]
    assert [d.line for d in found] == [2, 3, 4, 5, 6]
    first = found[0]
    assert first.source == "test"
    assert first.case == "viktor-arkhipov"
    assert first.to == "authority"
    assert first.kind is MessageKind.LETTER
    assert first.supporter_email == "adrianna@example.pl"
    assert first.submitted_at == datetime(2026, 12, 14, 10, 2, tzinfo=UTC)
    assert first.event == "Koszalin 24h marathon"
    signature = found[2]
    assert signature.kind is MessageKind.SIGNATURE
    assert signature.body == ""
    assert found[4].supporter_name == "김민지"
    assert found[4].event == ""


def test_file_with_bom(tmp_path: Path, campaign: Campaign) -> None:
    path = write(tmp_path, b"\xef\xbb\xbf" + SAMPLE.read_bytes())

    found = drafts(read(path, campaign))

    assert [d.external_id for d in found] == ["pl-0001", "pl-0002", "de-0001", "tg-0001", "kr-0001"]


def test_crlf_file(tmp_path: Path, campaign: Campaign) -> None:
    path = write(tmp_path, SAMPLE.read_bytes().replace(b"\n", b"\r\n"))

    found = drafts(read(path, campaign))

    assert len(found) == 5
    assert found[0].event == "Koszalin 24h marathon"


def json_line(**fields: object) -> bytes:
    base: dict[str, object] = {
        "external_id": "j-1",
        "case": "honduras-defenders",
        "to": "hn-minister-security",
        "supporter_name": "Kofi Asante",
        "supporter_country": "gh",
        "kind": "petition",
        "body": "Protect the defenders.",
        "submitted_at": "2026-12-07T21:30:00+01:00",
    }
    return json.dumps(base | fields, ensure_ascii=False).encode() + b"\n"


def test_json_lines(tmp_path: Path, campaign: Campaign) -> None:
    data = (
        json_line(ticket=42, language=None)
        + b"\n   \n"
        + json_line(external_id="j-2", kind="signature", body=None)
        + b"[1, 2]\n"
        + b'{"external_id": "j-4", \n'
        + json_line(external_id="j-5", consent=True)
    )
    path = write(tmp_path, data, "messages.jsonl")

    results = read(path, campaign)

    first, second = drafts(results)
    assert first.line == 1
    assert first.supporter_country == "GH"
    assert first.language == "und"
    assert first.metadata == {"ticket": "42"}
    assert first.submitted_at == datetime(2026, 12, 7, 20, 30, tzinfo=UTC)
    assert (second.line, second.kind, second.body) == (4, MessageKind.SIGNATURE, "")
    assert [(r.line, r.field) for r in rejects(results)] == [(5, "row"), (6, "row"), (7, "consent")]
    assert "not a JSON object" in rejects(results)[0].reason
    assert "not valid JSON" in rejects(results)[1].reason
    assert rejects(results)[2].reason == "must be text or a number, not true/false"
    assert rejects(results)[2].external_id == "j-5"


def test_json_lines_found_by_sniffing(tmp_path: Path, campaign: Campaign) -> None:
    path = write(tmp_path, b"\xef\xbb\xbf\n" + json_line(), "export.txt")

    (draft,) = read(path, campaign)

    assert isinstance(draft, MessageDraft)
    assert draft.line == 2


def test_json_line_with_invalid_utf8(tmp_path: Path, campaign: Campaign) -> None:
    data = json_line(body="Gracias \xff").replace("\xff".encode(), b"\xff") + json_line(
        external_id="j-2"
    )
    path = write(tmp_path, data, "messages.ndjson")

    bad, good = read(path, campaign)

    assert isinstance(bad, Rejected)
    assert (bad.line, bad.field, bad.external_id) == (1, "row", "j-1")
    assert "invalid UTF-8" in bad.reason
    assert isinstance(good, MessageDraft)


MIXED_BAD = [
    (b"bad-utf8", {"body": b"caf\xc3 \xff"}, "row", "invalid UTF-8"),
    (b"nul", {"body": b"a\x00b"}, "body", "NUL"),
    (b"control", {"name": b"Ana\x1bRuiz"}, "supporter_name", "control character (U+001B)"),
    (b"country", {"country": b"XY"}, "supporter_country", "'XY' is not an ISO 3166-1"),
    (b"email", {"email": b"ana@@example.org"}, "supporter_email", "not a valid e-mail"),
    (b"date", {"when": b"14/12/2026"}, "submitted_at", "'14/12/2026' is not an ISO 8601"),
    (b"case", {"case": b"nobody-at-all"}, "case", "unknown case 'nobody-at-all'"),
    (b"to", {"to": b"embassy"}, "to", "'embassy' names no recipient of case 'viktor-arkhipov'"),
    (b"kind", {"kind": b"postcard"}, "kind", "'postcard' is not a message kind"),
    (b"empty-body", {"body": b""}, "body", "is required for a letter"),
    (b"signed", {"kind": b"signature"}, "body", "a signature has no body"),
    (b"long", {"body": b"x" * 61}, "body", "has 61 characters, the limit is 60"),
]


def mixed_file() -> tuple[bytes, dict[int, tuple[str, str]]]:
    """Good rows ('ok-N') between each bad one; returns the bytes and line -> (field, says)."""
    data = HEADER
    expected: dict[int, tuple[str, str]] = {}
    line = 1
    for number, (external_id, changes, field, says) in enumerate(MIXED_BAD):
        data += row(b"ok-%d" % number)
        data += row(external_id, **changes)
        expected[line + 2] = (field, says)
        line += 2
    data += row(b"too-many").replace(b"\n", b",spare,cells\n")
    expected[line + 1] = ("row", "row has 14 cells, header has 12")
    data += row(b"ok-last")
    return data, expected


def test_mixed_file_rejects_each_bad_row_alone(tmp_path: Path, campaign: Campaign) -> None:
    data, expected = mixed_file()
    path = write(tmp_path, data)

    results = read(path, campaign, max_body_chars=60)

    good = [d.external_id for d in drafts(results)]
    assert good == [f"ok-{n}" for n in range(len(MIXED_BAD))] + ["ok-last"]
    found = {r.line: (r.field, r.reason) for r in rejects(results)}
    assert sorted(found) == sorted(expected)
    for line, (field, says) in expected.items():
        assert found[line][0] == field, (line, found[line])
        assert says in found[line][1], (line, found[line])


def test_rejects_carry_the_row(tmp_path: Path, campaign: Campaign) -> None:
    path = write(tmp_path, HEADER + row(b"r-1", body=b"caf\xc3 \xff", country=b"XY"))

    (bad,) = read(path, campaign)

    assert isinstance(bad, Rejected)
    assert bad.external_id == "r-1"
    assert bad.raw["body"] == "caf\ufffd \ufffd"
    assert bad.raw["supporter_country"] == "XY"
    assert "byte 0xc3 at byte offset" in bad.reason
    assert "column 'body'" in bad.reason


def test_several_problems_in_one_row_are_all_named(tmp_path: Path, campaign: Campaign) -> None:
    path = write(tmp_path, HEADER + row(b"r-1", country=b"XY", kind=b"memo"))

    (bad,) = read(path, campaign)

    assert isinstance(bad, Rejected)
    assert bad.field == "supporter_country"
    assert "also kind: 'memo' is not a message kind" in bad.reason


def test_text_is_normalised_to_nfc(tmp_path: Path, campaign: Campaign) -> None:
    decomposed = "Jose\u0301 Marti\u0301"
    data = HEADER + row(b"n-1", name=decomposed.encode(), body='" Cafe\u0301\r\nolé \n"'.encode())
    path = write(tmp_path, data)

    (draft,) = read(path, campaign)

    assert isinstance(draft, MessageDraft)
    assert draft.supporter_name == "José Martí"
    assert unicodedata.is_normalized("NFC", draft.supporter_name)
    assert draft.body == "Café\nolé"


def test_bidi_controls_are_accepted(tmp_path: Path, campaign: Campaign) -> None:
    path = write(tmp_path, HEADER + row(b"b-1", body="abc \u202edcba".encode()))

    (draft,) = read(path, campaign)

    assert isinstance(draft, MessageDraft)
    assert draft.body == "abc \u202edcba"


def test_multiline_body_keeps_line_numbers(tmp_path: Path, campaign: Campaign) -> None:
    data = (
        HEADER
        + row(b"m-1", body=b'"Dear Sir,\n\nrelease him,\nnow."')
        + row(b"m-2", country=b"XY")
        + row(b"m-3", body=b'"two\r\nlines"')
        + row(b"m-4")
    )
    path = write(tmp_path, data)

    results = read(path, campaign)

    assert [(r.external_id, r.line) for r in results] == [
        ("m-1", 2),
        ("m-2", 6),
        ("m-3", 7),
        ("m-4", 9),
    ]
    first = results[0]
    assert isinstance(first, MessageDraft)
    assert first.body == "Dear Sir,\n\nrelease him,\nnow."


def test_unclosed_quote_is_rejected_with_its_span(tmp_path: Path, campaign: Campaign) -> None:
    data = HEADER + row(b"q-1") + row(b"q-2", body=b'"never closed') + row(b"q-3")
    path = write(tmp_path, data)

    results = read(path, campaign)

    assert isinstance(results[0], MessageDraft)
    bad = results[1]
    assert isinstance(bad, Rejected)
    assert (bad.line, bad.field) == (3, "row")
    assert "lines 3-4 read as one row" in bad.reason


def test_metadata_keeps_unknown_columns(tmp_path: Path, campaign: Campaign) -> None:
    header = HEADER.replace(b",event\n", b",event,Group ID,utm_source\n")
    path = write(tmp_path, header + row(b"u-1").replace(b"\n", b", g-17 ,mail\n"))

    (draft,) = read(path, campaign)

    assert isinstance(draft, MessageDraft)
    assert draft.metadata == {"Group ID": "g-17", "utm_source": "mail"}


def test_short_rows_and_blank_lines(tmp_path: Path, campaign: Campaign) -> None:
    short = b"s-1,viktor-arkhipov,prison,Ana,,,ES,,signature,," + WHEN + b"\n"
    data = HEADER + b"\n" + short.replace(WHEN, b"2026-12-14T11:00:00") + b",,,,\n"
    path = write(tmp_path, data)

    (draft,) = read(path, campaign)

    assert isinstance(draft, MessageDraft)
    assert draft.line == 3
    assert (draft.event, draft.language, draft.supporter_city) == ("", "und", "")
    assert draft.submitted_at == datetime(2026, 12, 14, 11, 0, tzinfo=UTC)


def test_repeated_external_id_is_yielded_again(tmp_path: Path, campaign: Campaign) -> None:
    path = write(tmp_path, HEADER + row(b"d-1") + row(b"d-1"))

    results = read(path, campaign)

    assert [(r.external_id, r.line) for r in drafts(results)] == [("d-1", 2), ("d-1", 3)]


def test_header_lacking_columns(tmp_path: Path, campaign: Campaign) -> None:
    header = HEADER.replace(b"case,", b"").replace(b"kind,", b"")
    path = write(tmp_path, header + row(b"h-1"))

    with pytest.raises(InputError) as caught:
        read_messages(path, source="test", campaign=campaign, settings=IntakeSettings())

    assert str(caught.value) == "messages.csv: header lacks column(s) 'case', 'kind'"


def test_missing_file(tmp_path: Path, campaign: Campaign) -> None:
    with pytest.raises(InputError, match=r"absent\.csv: message file not found"):
        read_messages(
            tmp_path / "absent.csv", source="test", campaign=campaign, settings=IntakeSettings()
        )


def test_utf16_file_is_refused(tmp_path: Path, campaign: Campaign) -> None:
    path = write(tmp_path, SAMPLE.read_text(encoding="utf-8").encode("utf-16"))

    with pytest.raises(InputError, match="UTF-16"):
        read(path, campaign)


def test_recipients_for(campaign: Campaign) -> None:
    by_slug = recipients_for(campaign, "viktor-arkhipov", "arkhipov-family")
    by_kind = recipients_for(campaign, "viktor-arkhipov", "prison")

    assert [r.slug for r in by_slug] == ["arkhipov-family"]
    assert [r.slug for r in by_kind] == ["arkhipov-detention-centre"]
    assert recipients_for(campaign, "honduras-defenders", "prison") == ()
    assert recipients_for(campaign, "no-such-case", "authority") == ()


def test_write_rejects_escapes_formulas(tmp_path: Path) -> None:
    rejected = [
        Rejected(
            line=4,
            field="body",
            reason="a signature has no body",
            raw={"external_id": "x-1", "body": "=SUM(1)", "supporter_name": "@ana"},
            external_id="x-1",
        ),
        Rejected(
            line=9,
            field="row",
            reason="row has 14 cells, header has 12",
            raw={"external_id": "-5", "utm": "+1"},
            external_id="-5",
        ),
    ]
    path = tmp_path / "rejects.csv"

    count = write_rejects(path, iter(rejected))

    assert count == 2
    with path.open(encoding="utf-8", newline="") as handle:
        lines = list(csv.reader(handle))
    assert lines[0] == ["line", "field", "reason", "external_id", "body", "supporter_name", "utm"]
    assert lines[1] == ["4", "body", "a signature has no body", "x-1", "'=SUM(1)", "'@ana", ""]
    assert lines[2] == ["9", "row", "row has 14 cells, header has 12", "'-5", "", "", "'+1"]


def test_rejects_file_round_trip(tmp_path: Path, campaign: Campaign) -> None:
    data, _ = mixed_file()
    results = read(write(tmp_path, data), campaign, max_body_chars=60)

    count = write_rejects(tmp_path / "rejects.csv", rejects(results))

    with (tmp_path / "rejects.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert count == len(rows) == len(MIXED_BAD) + 1
    assert rows[0]["line"] == "3"
    assert rows[0]["body"] == "caf\ufffd \ufffd"


def big_csv(path: Path, rows: int) -> None:
    with path.open("wb") as handle:
        handle.write(HEADER)
        for number in range(rows):
            email = b"ana%d@example.org" % number if number % 10 == 0 else b""
            handle.write(row(b"big-%d" % number, email=email))


def test_large_file_is_streamed(tmp_path: Path, campaign: Campaign) -> None:
    path = tmp_path / "big.csv"
    big_csv(path, 60_000)  # kept in memory, 60,000 drafts would take tens of MiB
    read(SAMPLE, campaign)  # load lookup tables before measuring

    tracemalloc.start()
    try:
        count = 0
        results: Iterator[MessageDraft | Rejected] = read_messages(
            path, source="big", campaign=campaign, settings=IntakeSettings()
        )
        for result in results:
            assert isinstance(result, MessageDraft)
            count += 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert count == 60_000
    assert peak < 2 * 1024 * 1024


@pytest.fixture(scope="module")
def body_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hypothesis") / "messages.csv"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.text())
def test_any_body_text_gives_one_result(body: str, body_file: Path, campaign: Campaign) -> None:
    with body_file.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER.decode().strip().split(","))
        writer.writerow(
            [
                "h-1",
                "viktor-arkhipov",
                "prison",
                "Ana",
                "",
                "",
                "ES",
                "es",
                "letter",
                body,
                "2026-12-14",
            ]
        )

    (result,) = read(body_file, campaign)

    if isinstance(result, Rejected):
        assert (result.line, result.field, result.external_id) == (2, "body", "h-1")
    else:
        expected = re.sub(r"\r\n?", "\n", unicodedata.normalize("NFC", body).strip())
        assert result.body == expected
