"""The report's SVG charts: well-formed, to scale, every label escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from delivery.reporting.charts import Bar, ProofRow, proof_bars, ranked_bars, stacked_days
from delivery.reporting.data import bucket_by_day

SVG = "{http://www.w3.org/2000/svg}"
ORDER = ("queued", "spooled", "accepted", "delivered", "failed", "returned")
HOSTILE = "<script>alert(\"x\")</script> =cmd|' /C calc'!A0 & co"


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # noqa: S314  # our own output, parsed to check it is XML
    assert root.tag == f"{SVG}svg"
    return root


def bars(root: ET.Element, cls: str = "bar") -> list[ET.Element]:
    return [r for r in root.iter(f"{SVG}rect") if cls in (r.get("class") or "").split()]


def texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{SVG}text")]


# -- messages by country ------------------------------------------------------------------


def test_country_bars_are_proportional_to_their_counts() -> None:
    root = parse(
        ranked_bars(
            [
                Bar(label="Poland (PL)", value=40),
                Bar(label="Togo (TG)", value=10),
                Bar(label="Chile (CL)", value=20),
            ]
        )
    )
    widths = {b.get("data-value"): float(b.get("width") or 0) for b in bars(root)}
    assert widths["40"] == pytest.approx(2 * widths["20"])
    assert widths["40"] == pytest.approx(4 * widths["10"])
    assert texts(root)[::2] == ["Poland (PL)", "Chile (CL)", "Togo (TG)"]  # longest first


def test_fifteen_countries_are_shown_and_the_rest_summed_as_others() -> None:
    countries = [Bar(label=f"Country {n:02d}", value=100 - n) for n in range(20)]
    root = parse(ranked_bars(countries, top=15))
    drawn = bars(root)
    assert len(drawn) == 16
    assert "others (5 more)" in texts(root)
    rest = sum(100 - n for n in range(15, 20))
    assert drawn[-1].get("data-value") == str(rest)
    assert drawn[-1].get("fill") != drawn[0].get("fill")  # told apart by its hatching
    assert "cut" in (drawn[-1].get("class") or "")  # longer than the scale allows: cut
    assert f"{rest:,}" in texts(root)


def test_a_short_others_bar_is_drawn_to_scale() -> None:
    countries = [Bar(label="Top", value=100)] + [Bar(label=f"C{n}", value=1) for n in range(3)]
    root = parse(ranked_bars(countries, top=1))
    top, others = bars(root)
    assert "cut" not in (others.get("class") or "")
    assert float(others.get("width") or 0) == pytest.approx(float(top.get("width") or 0) * 0.03)


def test_country_labels_are_escaped() -> None:
    svg = ranked_bars([Bar(label=HOSTILE, value=3), Bar(label="\u202eevil\x07", value=1)])
    assert "<script" not in svg
    assert "&lt;script&gt;" in svg
    assert "\u202e" not in svg
    assert "\x07" not in svg
    root = parse(svg)
    assert not list(root.iter(f"{SVG}script"))
    assert any(t.startswith('<script>alert("x")') for t in texts(root))  # shown, as text
    assert "evil" in texts(root)


def test_no_messages_draws_a_note_not_an_empty_chart() -> None:
    root = parse(ranked_bars([]))
    assert texts(root) == ["No messages in this period."]


# -- deliveries over time -----------------------------------------------------------------


def test_days_stack_their_states_to_scale_and_gaps_are_kept() -> None:
    days = {
        "2026-12-01": {"queued": 4, "spooled": 4},
        "2026-12-04": {"delivered": 2, "returned": 1},
    }
    root = parse(stacked_days(days, order=ORDER))
    segments = bars(root, "segment")
    heights = {
        (s.get("data-state"), s.get("data-count")): float(s.get("height") or 0) for s in segments
    }
    assert heights[("queued", "4")] == pytest.approx(4 * heights[("returned", "1")])
    assert heights[("delivered", "2")] == pytest.approx(2 * heights[("returned", "1")])
    labels = texts(root)
    assert [t for t in labels if t.endswith(("Dec", "2026"))] == [
        "1 Dec 2026",
        "2 Dec",
        "3 Dec",  # a day without events keeps its place
        "4 Dec",
    ]
    where = {t.text: float(t.get("x") or 0) for t in root.iter(f"{SVG}text")}
    slot = where["3 Dec"] - where["2 Dec"]
    xs = sorted({float(s.get("x") or 0) for s in segments})
    assert len(xs) == 2
    assert xs[1] - xs[0] == pytest.approx(3 * slot, abs=0.5)
    for state, total in (("queued", 4), ("spooled", 4), ("delivered", 2), ("returned", 1)):
        assert f"{state} ({total})" in labels  # a legend entry names each series


def test_each_state_has_its_own_fill_so_it_reads_in_black_and_white() -> None:
    days = {"2026-12-01": dict.fromkeys(ORDER, 1)}
    root = parse(stacked_days(days, order=ORDER))
    fills = {s.get("data-state"): s.get("fill") for s in bars(root, "segment")}
    assert len(set(fills.values())) == len(ORDER)
    patterns = {p.get("id") for p in root.iter(f"{SVG}pattern")}
    patterned = [f for f in fills.values() if f and f.startswith("url(#")]
    assert len(patterned) >= len(ORDER) - 3  # most states by hatching, not shade alone
    assert {f.removeprefix("url(#").removesuffix(")") for f in patterned} <= patterns


def test_the_same_delivery_counts_once_per_state_and_day() -> None:
    events = [
        ("2026-12-01T10:00:00+00:00", "delivery.queued", "delivery:a"),
        ("2026-12-01T10:00:01+00:00", "delivery.sending", "delivery:a"),
        ("2026-12-01T10:00:02+00:00", "delivery.deferred", "delivery:a"),
        ("2026-12-01T11:00:02+00:00", "delivery.deferred", "delivery:a"),
        ("2026-12-02T01:30:00+02:00", "delivery.accepted", "delivery:a"),  # 1 Dec in UTC
        ("2026-12-02T09:00:00+00:00", "delivery.queued", "delivery:b"),
        ("2026-12-02T09:00:00+00:00", "note.delay", "delivery:b"),
    ]
    assert bucket_by_day(events) == {
        "2026-12-01": {"accepted": 1, "deferred": 1, "queued": 1},
        "2026-12-02": {"queued": 1},
    }


def test_no_events_draws_a_note() -> None:
    assert texts(parse(stacked_days({}, order=ORDER))) == [
        "No delivery changed state in this period."
    ]


# -- proof per recipient ------------------------------------------------------------------


def test_proof_bars_are_as_long_as_the_proof_level() -> None:
    rows = [
        ProofRow(label="Prosecutor General", sublabel="c/a", level=4, note="delivered · post"),
        ProofRow(label="Family", sublabel="c/b", level=2, note="accepted · post"),
        ProofRow(label="Minister", sublabel="c/c", level=0, note="spooled · fax"),
    ]
    root = parse(proof_bars(rows))
    strong, middle, none = (float(b.get("width") or 0) for b in bars(root))
    assert strong == pytest.approx(2 * middle)
    assert none < middle / 10  # a mark, not a bar
    labels = texts(root)
    for label in ("none", "mta-accepted", "carrier-scan", "fax-confirmed", "signed-receipt"):
        assert label in labels
    assert "delivered · post" in labels
    assert "spooled · fax" in labels


def test_recipient_names_are_escaped() -> None:
    row = ProofRow(label=HOSTILE, sublabel="=cmd/<b>", level=1, note="<i>accepted</i>")
    svg = proof_bars([row])
    assert "<script" not in svg
    assert "<b>" not in svg
    assert "<i>" not in svg
    assert "&lt;b&gt;" in svg
    assert "=cmd/<b>" in texts(parse(svg))
