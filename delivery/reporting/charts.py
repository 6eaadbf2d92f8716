"""The report's charts as inline SVG, drawn here in Python: pure, no scripts, nothing fetched.

Black and greys on white, since a report may be printed or faxed: every series differs by
pattern as well as by shade, and carries its name in a legend or its own label. Every
label is data (a supporter's country, a recipient's name) and is cleaned of control and
bidi characters and escaped before it reaches the markup.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from delivery.render.text import safe_label

WIDTH = 640  # px in the viewBox; the page scales the chart to its column
FONT = "'Noto Sans', 'DejaVu Sans', sans-serif"
INK = "#000"
GRID = "#bbb"
# Characters XML 1.0 does not allow, beyond the controls safe_label already removes.
_NOT_XML = re.compile("[\ufffe\uffff\x00-\x08\x0b\x0c\x0e-\x1f]")

PROOF_LABELS = ("none", "mta-accepted", "carrier-scan", "fax-confirmed", "signed-receipt")

# Each delivery state's fill: a base shade and a mark drawn over it.
_STYLES: Mapping[str, tuple[str, str]] = {
    "queued": ("#fff", ""),
    "spooled": ("#ccc", ""),
    "accepted": ("#fff", "diagonal"),
    "delivered": ("#000", ""),
    "deferred": ("#fff", "dots"),
    "held": ("#fff", "horizontal"),
    "unknown": ("#fff", "cross"),
    "failed": ("#aaa", "back"),
    "bounced": ("#fff", "vertical"),
    "returned": ("#fff", "grid"),
    "cancelled": ("#888", ""),
    "sending": ("#ccc", "dots"),
}
_MARKS = {
    "diagonal": '<path d="M-1,1 L1,-1 M0,6 L6,0 M5,7 L7,5" stroke="#000" stroke-width="1"/>',
    "back": '<path d="M-1,5 L1,7 M0,0 L6,6 M5,-1 L7,1" stroke="#000" stroke-width="1"/>',
    "cross": '<path d="M0,0 L6,6 M0,6 L6,0" stroke="#000" stroke-width="0.8"/>',
    "horizontal": '<path d="M0,3 L6,3" stroke="#000" stroke-width="1.2"/>',
    "vertical": '<path d="M3,0 L3,6" stroke="#000" stroke-width="1.2"/>',
    "grid": '<path d="M0,3 L6,3 M3,0 L3,6" stroke="#000" stroke-width="0.8"/>',
    "dots": '<circle cx="3" cy="3" r="1.2" fill="#000"/>',
}


@dataclass(frozen=True, kw_only=True)
class Bar:
    """One ranked bar: a label and a count."""

    label: str
    value: int


@dataclass(frozen=True, kw_only=True)
class ProofRow:
    """One recipient: its name, a second line (case/slug), its proof level and a note."""

    label: str
    sublabel: str
    level: int  # 0..4, a ProofLevel
    note: str  # the state (and channel) beside the bar


def clean(text: str) -> str:
    """One line of text as a label shows it: printable, no bidi controls, valid in XML."""
    return _NOT_XML.sub("", safe_label(text))


def esc(text: str) -> str:
    """``text`` cleaned and escaped for SVG text and attribute values."""
    return html.escape(clean(text), quote=True)


def fit(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis (labels have fixed columns)."""
    text = clean(text)
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _num(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def _svg(height: float, title: str, body: Sequence[str], defs: str = "") -> str:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img"'
        f' aria-label="{esc(title)}" width="{WIDTH}" height="{_num(height)}"'
        f' viewBox="0 0 {WIDTH} {_num(height)}" font-family="{FONT}" font-size="10"'
        f' fill="{INK}">'
    )
    return "".join([head, f"<defs>{defs}</defs>" if defs else "", *body, "</svg>"])


def _attrs(attrs: Mapping[str, str]) -> str:
    """Extra attributes, escaped; ``cls`` is ``class`` and ``data_x`` is ``data-x``."""
    names = {"cls": "class"}
    return "".join(
        f' {names.get(k, k.replace("_", "-"))}="{html.escape(v, quote=True)}"'
        for k, v in attrs.items()
    )


def _text(
    x: float, y: float, text: str, *, anchor: str = "start", size: float = 10, **attrs: str
) -> str:
    return (
        f'<text x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}" font-size="{_num(size)}"'
        f"{_attrs(attrs)}>{esc(text)}</text>"
    )


def _rect(x: float, y: float, w: float, h: float, fill: str, **attrs: str) -> str:
    return (
        f'<rect x="{_num(x)}" y="{_num(y)}" width="{_num(w)}" height="{_num(h)}"'
        f' fill="{html.escape(fill, quote=True)}"{_attrs(attrs)}/>'
    )


def _line(x1: float, y1: float, x2: float, y2: float, stroke: str, **attrs: str) -> str:
    return (
        f'<line x1="{_num(x1)}" y1="{_num(y1)}" x2="{_num(x2)}" y2="{_num(y2)}"'
        f' stroke="{stroke}" stroke-width="0.6"{_attrs(attrs)}/>'
    )


def _empty(title: str, what: str) -> str:
    return _svg(30, title, [_text(0, 19, what, fill="#444")])


# -- messages by supporters' country --------------------------------------------------------

_LABEL_W = 184
_BAR_X = 190
_BAR_MAX = 380
_ROW = 15


def ranked_bars(bars: Sequence[Bar], *, top: int = 15, title: str = "Messages by country") -> str:
    """Horizontal bars, longest first: the first ``top``, then one hatched bar for the rest.

    The scale is the longest single bar's. The rest, summed over many, can be longer than
    that: its bar is then drawn cut, a gap across its end, with its full count beside it.
    """
    ranked = sorted((b for b in bars if b.value > 0), key=lambda b: (-b.value, clean(b.label)))
    if not ranked:
        return _empty(title, "No messages in this period.")
    shown, rest = ranked[:top], ranked[top:]
    largest = shown[0].value
    body = []
    for row, bar in enumerate(shown):
        body += _bar_row(row, bar.label, bar.value, largest, "#444")
    if rest:
        label = f"others ({len(rest)} more)"
        body += _bar_row(len(shown), label, sum(b.value for b in rest), largest, "url(#rb-rest)")
    rows = len(shown) + (1 if rest else 0)
    return _svg(8 + rows * _ROW, title, body, _pattern("rb-rest", "#fff", "diagonal"))


def _bar_row(row: int, label: str, value: int, largest: int, fill: str) -> list[str]:
    y = 4 + row * _ROW
    cut = value > largest
    width = _BAR_MAX + 14 if cut else max(1.0, value / largest * _BAR_MAX)
    out = [
        _text(_LABEL_W, y + 10, fit(label, 32), anchor="end"),
        _rect(
            _BAR_X,
            y + 1,
            width,
            11,
            fill,
            stroke=INK,
            stroke_width="0.6",
            cls="bar cut" if cut else "bar",
            data_value=str(value),
        ),
    ]
    if cut:  # a white slanted gap across the bar, edged in black: the bar is not to scale
        x = _BAR_X + _BAR_MAX - 4
        top, bottom = y - 1, y + 14
        out.append(
            f'<polygon points="{x},{bottom} {x + 5},{top} {x + 10},{top} {x + 5},{bottom}"'
            ' fill="#fff"/>'
        )
        out.append(_line(x, bottom, x + 5, top, INK))
        out.append(_line(x + 5, bottom, x + 10, top, INK))
    out.append(_text(_BAR_X + width + 5, y + 10, f"{value:,}", cls="value"))
    return out


def _pattern(pid: str, base: str, mark: str) -> str:
    return (
        f'<pattern id="{pid}" patternUnits="userSpaceOnUse" width="6" height="6">'
        f'<rect width="6" height="6" fill="{base}"/>{_MARKS.get(mark, "")}</pattern>'
    )


def state_fill(state: str, prefix: str = "st") -> tuple[str, str]:
    """The fill for ``state`` and the pattern it needs (empty for a plain shade)."""
    base, mark = _STYLES.get(state, ("#fff", "grid"))
    if not mark:
        return base, ""
    pid = f"{prefix}-{re.sub(r'[^a-z0-9-]', '', state.lower()) or 'x'}"
    return f"url(#{pid})", _pattern(pid, base, mark)


# -- deliveries over time, by state ---------------------------------------------------------

_LEFT = 46
_PLOT_W = WIDTH - _LEFT - 8
_PLOT_H = 160
_TOP = 10


def _nice_step(largest: int) -> int:
    """A 1-2-5 step that divides ``largest`` into at most five intervals."""
    raw = max(1.0, largest / 5)
    power = 10 ** math.floor(math.log10(raw))
    return int(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))


def _days(days: Mapping[str, Mapping[str, int]]) -> list[date]:
    known = sorted(date.fromisoformat(d) for d in days)
    first, last = known[0], known[-1]
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def stacked_days(
    days: Mapping[str, Mapping[str, int]],
    *,
    order: Sequence[str],
    title: str = "Deliveries by state per day",
) -> str:
    """A stacked bar per UTC day (``YYYY-MM-DD`` → state → count), states stacked in ``order``."""
    if not any(sum(states.values()) for states in days.values()):
        return _empty(title, "No delivery changed state in this period.")
    span = _days(days)
    present = [s for s in order if any(days.get(d.isoformat(), {}).get(s) for d in span)]
    present += sorted({s for states in days.values() for s in states} - set(present))
    largest = max(sum(days.get(d.isoformat(), {}).values()) for d in span)
    step = _nice_step(largest)
    ceiling = step * max(1, math.ceil(largest / step))
    scale = _PLOT_H / ceiling
    body = _axis(ceiling, step, scale)
    defs = []
    fills = {}
    for state in present:
        fills[state], pattern = state_fill(state, "tl")
        defs.append(pattern)
    slot = _PLOT_W / len(span)
    bar_w = min(max(slot * 0.7, 1.0), 48.0)
    for n, day in enumerate(span):
        x = _LEFT + n * slot + (slot - bar_w) / 2
        body += _stack(x, bar_w, days.get(day.isoformat(), {}), present, fills, scale)
    body += _day_labels(span, slot)
    legend, legend_h = _legend(present, fills, days, _TOP + _PLOT_H + 30)
    body += legend
    return _svg(_TOP + _PLOT_H + 30 + legend_h, title, body, "".join(defs))


def _axis(ceiling: int, step: int, scale: float) -> list[str]:
    base = _TOP + _PLOT_H
    out = []
    for value in range(0, ceiling + 1, step):
        y = base - value * scale
        colour = INK if value == 0 else GRID
        out.append(_line(_LEFT, y, _LEFT + _PLOT_W, y, colour))
        out.append(_text(_LEFT - 5, y + 3.5, f"{value:,}", anchor="end", size=8.5))
    return out


def _stack(
    x: float,
    width: float,
    counts: Mapping[str, int],
    present: Sequence[str],
    fills: Mapping[str, str],
    scale: float,
) -> list[str]:
    out = []
    y = float(_TOP + _PLOT_H)
    for state in present:
        count = counts.get(state, 0)
        if not count:
            continue
        height = count * scale
        y -= height
        out.append(
            _rect(
                x,
                y,
                width,
                height,
                fills[state],
                stroke=INK,
                stroke_width="0.6",
                cls="segment",
                data_state=state,
                data_count=str(count),
            )
        )
        label = f"{count:,}"
        box = len(label) * 5.6 + 5
        if height >= 13 and width >= box + 2:  # the count inside, on white, when it fits
            cx, cy = x + width / 2, y + height / 2
            out.append(_rect(cx - box / 2, cy - 6, box, 12, "#fff", stroke=INK, stroke_width="0.4"))
            out.append(_text(cx, cy + 3.3, label, anchor="middle", size=9))
    return out


def _day_labels(span: Sequence[date], slot: float) -> list[str]:
    every = max(1, math.ceil(len(span) * 44 / _PLOT_W))
    out = []
    for n, day in enumerate(span):
        if n % every:
            continue
        text = f"{day.day} {day:%b}" + (f" {day.year}" if n == 0 else "")
        if n == 0 and len(span) > 1:  # the first, with its year, starts at the axis
            x, anchor = float(_LEFT), "start"
        else:
            x, anchor = _LEFT + (n + 0.5) * slot, "middle"
        out.append(_text(x, _TOP + _PLOT_H + 13, text, anchor=anchor, size=8.5))
    return out


def _legend(
    present: Sequence[str],
    fills: Mapping[str, str],
    days: Mapping[str, Mapping[str, int]],
    top: float,
) -> tuple[list[str], float]:
    out = []
    item_w = 112
    per_row = max(1, int((WIDTH - _LEFT) // item_w))
    for n, state in enumerate(present):
        x = _LEFT + (n % per_row) * item_w
        y = top + (n // per_row) * 18
        total = sum(states.get(state, 0) for states in days.values())
        out.append(_rect(x, y, 12, 12, fills[state], stroke=INK, stroke_width="0.6"))
        out.append(_text(x + 17, y + 10, f"{state} ({total:,})", size=9))
    rows = math.ceil(len(present) / per_row)
    return out, rows * 18


# -- proof per recipient ----------------------------------------------------------------------

_PROOF_X = 212
_UNIT = 66
_PROOF_ROW = 22
_AXIS_H = 22


def proof_bars(rows: Sequence[ProofRow], *, title: str = "Proof per recipient") -> str:
    """A row per recipient; the bar's length is its proof level, from none (0) to 4."""
    if not rows:
        return _empty(title, "No recipients.")
    height = _AXIS_H + len(rows) * _PROOF_ROW + 4
    body = []
    for level, label in enumerate(PROOF_LABELS):
        x = _PROOF_X + level * _UNIT
        if level == 0:
            body.append(_text(x - 3, 12, label, size=8.5))
            body.append(_line(x, _AXIS_H - 6, x, height - 2, INK))
        else:
            body.append(_text(x, 12, label, anchor="middle", size=8.5))
            body.append(_line(x, _AXIS_H - 6, x, height - 2, GRID, stroke_dasharray="2,2"))
    for n, row in enumerate(rows):
        body += _proof_row(_AXIS_H + n * _PROOF_ROW, row)
    return _svg(height, title, body)


def _proof_row(y: float, row: ProofRow) -> list[str]:
    level = min(max(row.level, 0), len(PROOF_LABELS) - 1)
    width = max(level * _UNIT, 2)  # level 0 is a mark on the axis
    label_x = _PROOF_X - 8
    note = fit(row.note, 24)
    note_x = _PROOF_X + width + 4
    return [
        _text(label_x, y + 9.5, fit(row.label, 34), anchor="end", font_weight="bold"),
        _text(label_x, y + 18.5, fit(row.sublabel, 40), anchor="end", size=8, fill="#333"),
        _rect(
            _PROOF_X,
            y + 4,
            width,
            12,
            "#333",
            stroke=INK,
            stroke_width="0.6",
            cls="bar",
            data_level=str(level),
        ),
        _rect(note_x, y + 4, len(note) * 5.2 + 4, 12, "#fff"),  # the note stands over the grid
        _text(note_x + 2, y + 13.5, note, size=9),
    ]
