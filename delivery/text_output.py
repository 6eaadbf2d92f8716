"""What the command line prints for people (and the one JSON printer for scripts)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import click


class ImportReportLike(Protocol):
    imported: int
    duplicates: int
    rejected_total: int
    rejects_file: str

    def as_dict(self) -> dict[str, Any]: ...


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str, sort_keys=True))


def _printable(text: str, limit: int = 70) -> str:
    """One line, control and bidi characters shown as escapes, never interpreted by the terminal."""
    shown = "".join(
        c if c.isprintable() and not 0x202A <= ord(c) <= 0x202E else f"\\u{ord(c):04x}"
        for c in text
    )
    shown = " ".join(shown.split())
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def show_import(report: ImportReportLike) -> None:
    data = report.as_dict()
    click.echo(
        f"imported {report.imported}, duplicates {report.duplicates},"
        f" rejected {report.rejected_total}"
    )
    name = Path(data["file"]).name
    for row in data["rejected"][:50]:
        reason = _printable(row["reason"], 120)
        click.echo(f"  {name}:{row['line']}: {row['field'] or 'row'}: {reason}")
    if report.rejected_total > 50:
        click.echo(f"  … and {report.rejected_total - 50} more")
    if report.rejects_file:
        click.echo(
            f"rejected rows written to {report.rejects_file} (fix them and import that file again)"
        )


def show_review(items: Sequence[Any]) -> None:
    if not items:
        click.echo("nothing waiting")
        return
    for item in items:
        flags = "; ".join(item.flags) or "clean"
        click.echo(
            f"{item.id:>7}  {item.source}:{item.external_id}"
            f"  {item.case} → {item.target}  {item.kind}"
        )
        click.echo(
            f"         {_printable(item.supporter_name, 40)} ({item.supporter_country})"
            f"  flags: {flags}"
        )
        if item.body:
            click.echo(f"         “{_printable(item.body)}”")
    click.echo(f"{len(items)} message{'s' if len(items) != 1 else ''}")


def show_status(
    data: Mapping[str, Any], *, outbox: str, files: Mapping[str, int] | None = None
) -> None:
    msgs = data["messages"]
    click.echo("messages   " + "  ".join(f"{state} {count}" for state, count in msgs.items()))
    by_state = data.get("bundles_by_state", {})
    detail = ", ".join(f"{s} {n}" for s, n in sorted(by_state.items()))
    click.echo(f"bundles    {data['bundles']}" + (f" ({detail})" if detail else ""))
    click.echo("deliveries")
    for channel, states in data["deliveries"].items():
        shown = "  ".join(f"{s} {n}" for s, n in sorted(states.items())) or "none"
        click.echo(f"  {channel:<6}   {shown}")
    if files:
        click.echo(f"files in {outbox}/")
        for kind, count in files.items():
            click.echo(f"  {kind:<28} {count}")


def show_verify(result: Mapping[str, Any]) -> None:
    if result["ok"]:
        click.echo(
            f"ledger OK: {result['events']} events chained; every recorded file matches its hash"
        )
        return
    click.echo(f"ledger FAILED ({len(result['problems'])} problems):")
    for problem in result["problems"][:50]:
        click.echo(f"  {problem}")


def show_trace(data: Mapping[str, Any]) -> None:
    m = data["message"]
    external = "external id erased" if m.get("erased_at") else m["external_id"]
    click.echo(
        f"message {m['id']} ({m['source']}:{external}, line {m['line']}):"
        f" {m['kind']} to {m['target']}"
    )
    if m.get("erased_at"):
        click.echo(f"  personal data erased under retention at {m['erased_at']}")
    click.echo(
        f"  case {m['case_slug']}, from {m['supporter_country']}, submitted {m['submitted_at']}"
    )
    click.echo(
        f"  review: {m['review_state']}"
        + (f" (flags: {'; '.join(m['flags'])})" if m["flags"] else "")
    )
    for link in data["recipients"]:
        click.echo(
            f"  recipient {link['case']}/{link['recipient']} ({link['kind']}):"
            f" bundle {link['bundle'] or '-'}"
        )
    for b in data["bundles"]:
        page = f", this message on page {b['page']}" if b.get("page") else ""
        click.echo(
            f"  bundle {b['id']}: {b['state']}, {b['message_count']} messages,"
            f" {b['pages']} pages{page}"
        )
        erased = f"  (erased at {b['erased_at']})" if b.get("erased_at") else ""
        click.echo(f"    {b['pdf_path']}  sha256 {b['pdf_sha256']}{erased}")
    for d in data["deliveries"]:
        click.echo(
            f"  delivery {d['id']} by {d['channel']}: {d['state']} (ref {d['provider_ref'] or '-'})"
        )
    click.echo("  events:")
    for e in data["events"]:
        proof = e["data"].get("proof")
        extra = f" proof={proof}" if proof else ""
        click.echo(f"    #{e['seq']} {e['at']} {e['kind']} {e['subject']} by {e['actor']}{extra}")
