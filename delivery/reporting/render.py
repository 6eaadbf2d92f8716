"""The report's formats: HTML (charts inline), PDF (that HTML through WeasyPrint), CSV, JSON.

HTML and PDF come from ``report.html.j2`` with ``report.css`` inlined, so the HTML file
stands alone: no script, no font, no image is fetched. The charts are SVG drawn by
:mod:`delivery.reporting.charts`, whose every label is escaped. The CSV is the deliveries
table, one row per delivery, as a spreadsheet reads it (UTF-8 with a byte-order mark, CRLF,
cells a spreadsheet would run as a formula prefixed with ``'``). The JSON is the whole
report, keys sorted, times in ISO 8601.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from markupsafe import Markup

from delivery.channels.post import csv_document, spreadsheet_safe
from delivery.outbox import LocalOutbox
from delivery.render.env import make_environment, render_template
from delivery.reporting import charts
from delivery.reporting.data import DeliveryLine, Report, Scope

FORMATS = ("html", "pdf", "csv", "json")
TEMPLATE = "report.html.j2"
TOP_COUNTRIES = 15
PENDING_LISTED = 100  # messages pending review listed in the HTML and PDF
DELIVERY_COLUMNS = (
    "delivery",
    "case",
    "recipient",
    "recipient_name",
    "channel",
    "state",
    "proof",
    "provider_ref",
    "last_error",
    "resolution",
    "updated_at",
)
# The timeline stacks states in the order a delivery meets them.
STATE_ORDER = (
    "queued",
    "spooled",
    "accepted",
    "delivered",
    "deferred",
    "held",
    "unknown",
    "failed",
    "bounced",
    "returned",
    "cancelled",
)


@dataclass(frozen=True, kw_only=True)
class Written:
    """A report file written: where, what, how big, its hash and (for a PDF) its pages."""

    path: Path
    format: str
    size: int
    sha256: str
    pages: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "format": self.format,
            "bytes": self.size,
            "sha256": self.sha256,
            "pages": self.pages,
        }


def default_path(outbox: Path, scope: Scope, fmt: str, now: datetime) -> Path:
    """``<outbox>/reports/report-<case or all>-<UTC stamp>.<format>``."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    return outbox / "reports" / f"report-{scope.case or 'all'}-{stamp}.{fmt}"


# -- charts and HTML ----------------------------------------------------------------------


def report_charts(report: Report) -> dict[str, Markup]:
    """The three charts as SVG markup, safe to place in the page (their labels are escaped)."""
    countries = [charts.Bar(label=f"{c.name} ({c.code})", value=c.count) for c in report.countries]
    proof = [
        charts.ProofRow(
            label=p.recipient.name,
            sublabel=p.recipient.label,
            level=int(p.proof),
            note=f"{p.state} · {p.channel}" if p.channel else p.state,
        )
        for p in report.proof
    ]
    drawn = {
        "countries": charts.ranked_bars(countries, top=TOP_COUNTRIES),
        "timeline": charts.stacked_days(report.timeline, order=STATE_ORDER),
        "proof": charts.proof_bars(proof),
    }
    # Markup is safe here: every label in the SVG was escaped as it was drawn (charts.esc).
    return {name: Markup(svg) for name, svg in drawn.items()}  # noqa: S704


def period_text(scope: Scope) -> str:
    if scope.since and scope.until:
        return f"{scope.since.isoformat()} to {scope.until.isoformat()} (UTC days, both included)"
    if scope.since:
        return f"from {scope.since.isoformat()} (UTC)"
    if scope.until:
        return f"until {scope.until.isoformat()} (UTC, included)"
    return "everything recorded"


def report_html(report: Report, *, templates: Path) -> str:
    """The report as one self-contained HTML page."""
    env = make_environment(templates)
    return render_template(
        env,
        TEMPLATE,
        report=report,
        totals=report.totals,
        charts=report_charts(report),
        period=period_text(report.scope),
        generated=report.generated_at.strftime("%Y-%m-%d %H:%M UTC"),
        generated_iso=report.generated_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        delivered=sum(1 for d in report.deliveries if str(d.state) == "delivered"),
        pending_listed=report.pending_messages[:PENDING_LISTED],
    )


# -- CSV and JSON -------------------------------------------------------------------------


def delivery_row(line: DeliveryLine) -> tuple[str, ...]:
    cells = (
        line.id,
        line.recipient.case,
        line.recipient.slug,
        line.recipient.name,
        line.channel,
        str(line.state),
        line.proof.label,
        line.provider_ref,
        line.last_error,
        line.resolution,
        line.updated_at.isoformat(),
    )
    return tuple(spreadsheet_safe(cell) for cell in cells)


def report_csv(report: Report) -> bytes:
    """The deliveries table: one row per delivery."""
    return csv_document([DELIVERY_COLUMNS, *(delivery_row(d) for d in report.deliveries)])


def report_json(report: Report) -> bytes:
    data: Mapping[str, Any] = report.as_dict()
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


# -- writing ------------------------------------------------------------------------------


def document(report: Report, fmt: str, *, templates: Path) -> tuple[bytes, int | None]:
    """The report in ``fmt``, and its page count when it is a PDF."""
    if fmt == "pdf":
        from delivery.render.pdf import html_to_pdf  # WeasyPrint loads only to render

        return html_to_pdf(report_html(report, templates=templates), templates=templates)
    if fmt == "html":
        return report_html(report, templates=templates).encode(), None
    if fmt == "csv":
        return report_csv(report), None
    if fmt == "json":
        return report_json(report), None
    raise ValueError(f"unknown report format {fmt!r}: one of {', '.join(FORMATS)}")


def write_report(report: Report, fmt: str, path: Path, *, templates: Path) -> Written:
    """Render the report and write it to ``path`` atomically (a temporary name, then a rename)."""
    data, pages = document(report, fmt, templates=templates)
    LocalOutbox(path.parent).write(path.name, data)
    return Written(
        path=path,
        format=fmt,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        pages=pages,
    )
