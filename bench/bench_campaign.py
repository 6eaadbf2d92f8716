"""campaign: a whole Write for Rights-sized campaign on PostgreSQL, end to end, by command.

The demo campaign (12 cases' recipients, generated supporters from 36 countries writing in
20+ languages: signatures, petitions, appeals, personal notes, tweets) with N messages
(1,400,000, the size of Write for Rights 2013; ``--quick`` 140,000) goes through the
commands an operator runs, each a subprocess on one throwaway PostgreSQL database:

1. ``solidarity campaign load`` (not timed: a few milliseconds);
2. ``solidarity messages import`` of the generated CSV file (written outside the timing):
   reading and validating each row, screening, duplicates, messages, recipient links and one
   ledger event per message;
3. ``solidarity review approve --all-clean`` (a caseworker approving what no rule flagged);
4. ``solidarity worker --once --now``: collecting every approved message into bundles,
   rendering them in volumes through the render pool (one process per core), and spooling
   every delivery (e-mail as ``.eml``, fax, print jobs);
5. ``solidarity audit verify``: the whole ledger re-hashed and the tables checked against it,
   every artefact re-hashed.

Two results are ratios against a baseline run in this same command:

* ``campaign-import``: rows/s of step 2 against the same CSV rows inserted as they are with
  the raw driver (``psycopg``, ``executemany``, one transaction per 2,000 rows, the same
  chunk as the importer) into one plain table of the same PostgreSQL server.
* ``campaign-render``: pages/s of step 4 (every page of every bundle, over the command's whole
  wall time: collecting, rendering, joining, delivering) against raw WeasyPrint laying out
  one 20,000-message authority bundle (``bench_render.authority_document``) as one document in
  this process, on one core. With one render process per core, 2 here, the ratio can pass 1.

The end-to-end figure is the wall time of steps 2 to 5, with each step's time, counts and
peak memory in the notes. Not part of ``make bench``'s default run, as it takes more than an
hour on 2 cores at full size: ``bench/run.py --only campaign``.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_intake import insert_in_chunks
from bench_render import authority_document
from bench_render import baseline as raw_weasyprint
from harness import Probe, Result, Sample, Side, measure, progress
from sqlalchemy.engine import make_url

from delivery.config import Settings
from delivery.demo import DEMO_CAMPAIGN_TOML, write_messages_csv
from delivery.render.bundle import render_bundle_html

DEFAULT_MESSAGES = 1_400_000
QUICK_MESSAGES = 140_000
BASELINE_MESSAGES = 20_000  # the raw WeasyPrint document for the render ratio
SOLIDARITY = Path(sys.executable).parent / "solidarity"


@dataclass(frozen=True, kw_only=True)
class Step:
    """One finished command."""

    name: str
    seconds: float
    status: int
    maxrss_mib: float  # the largest of the command and the processes it waited for
    output: dict[str, Any]

    def note(self) -> str:
        return f"{self.name}: {self.seconds:,.1f} s, exit {self.status}, {self.maxrss_mib:,.0f} MiB"


def run(*, quick: bool, reps: int, work_dir: Path) -> list[Result]:
    count = QUICK_MESSAGES if quick else DEFAULT_MESSAGES
    folder = work_dir / "campaign"
    folder.mkdir(parents=True, exist_ok=True)
    campaign_file = folder / "campaign.toml"
    campaign_file.write_text(DEMO_CAMPAIGN_TOML, encoding="utf-8")
    messages_file = folder / f"messages-{count}.csv"
    started = time.perf_counter()
    write_messages_csv(messages_file, count)
    progress(
        f"campaign: wrote {count:,} messages ({messages_file.stat().st_size / 2**20:,.0f} MiB)"
        f" in {time.perf_counter() - started:.1f} s"
    )
    if reps > 1:
        progress("campaign: one repetition only: a full run takes more than an hour")
    from tests.postgres import postgres_server  # run.py puts the repository on the path

    with postgres_server() as server:
        url = server.create(empty=True)
        progress(f"campaign: PostgreSQL at {make_url(url).render_as_string()}")
        env = _env(url, folder / "outbox")
        baseline_import = measure(lambda probe: _raw_inserts(server, messages_file, probe))
        progress(f"campaign: raw inserts {baseline_import.rate:,.0f} rows/s")
        steps = _pipeline(env, folder, campaign_file, messages_file)
    baseline_render = _raw_render(work_dir)
    progress(f"campaign: raw WeasyPrint {baseline_render.rate:.2f} pages/s")
    return _results(count, steps, baseline_import, baseline_render)


def _env(url: str, outbox: Path) -> dict[str, str]:
    """This environment without SOLIDARITY_ variables, plus the database and the outbox."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOLIDARITY_")}
    env["SOLIDARITY_DATABASE_URL"] = url
    env["SOLIDARITY_OUTBOX"] = str(outbox)
    return env


def _pipeline(env: dict[str, str], folder: Path, campaign: Path, messages: Path) -> list[Step]:
    """The operator's commands one after the other; the first that fails stops the run."""
    commands = [
        ("campaign load", ["campaign", "load", str(campaign)]),
        ("messages import", ["messages", "import", str(messages), "--source", "demo"]),
        ("review approve", ["review", "approve", "--all-clean"]),
        ("worker", ["worker", "--once", "--now"]),
        ("audit verify", ["audit", "verify"]),
        ("status", ["status"]),
    ]
    steps: list[Step] = []
    for name, args in commands:
        step = _command(name, args, env, folder)
        _check(step, folder)
        steps.append(step)
    return steps[1:]  # the campaign load takes a second: not part of the figures


def _command(name: str, args: list[str], env: dict[str, str], cwd: Path) -> Step:
    """Run ``solidarity ARGS --json``, its progress shown; timed from start to exit."""
    progress(f"campaign: {name}")
    stem = cwd / name.replace(" ", "-")
    out_path, err_path = stem.with_suffix(".json"), stem.with_suffix(".err")
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [str(SOLIDARITY), *args, "--json"],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
        _, status, usage = os.wait4(proc.pid, 0)  # the command and what it waited for
        seconds = time.perf_counter() - started
    text = out_path.read_text(errors="replace")
    try:
        output = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        output = {"unparsed": text[-2_000:]}
    step = Step(
        name=name,
        seconds=seconds,
        status=os.waitstatus_to_exitcode(status),
        maxrss_mib=usage.ru_maxrss / 1024,
        output=output,
    )
    progress(f"campaign: {step.note()}")
    return step


def _check(step: Step, folder: Path) -> None:
    if step.status != 0:
        log = folder / f"{step.name.replace(' ', '-')}.err"
        tail = log.read_text(errors="replace")[-3_000:] if log.is_file() else ""
        raise RuntimeError(
            f"campaign: {step.name} exited {step.status}: {json.dumps(step.output)[:2_000]}\n{tail}"
        )


def _raw_inserts(server: Any, path: Path, probe: Probe) -> tuple[int, dict[str, Any]]:
    """The CSV's rows inserted as they are into one plain table, ``CHUNK`` rows a commit."""
    import psycopg

    url = server.create(empty=True)
    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with path.open(encoding="utf-8", newline="") as handle:
        columns = list(csv.DictReader(handle).fieldnames or ())
    names = ", ".join(f'"{c}"' for c in columns)
    marks = ", ".join(["%s"] * len(columns))
    with psycopg.connect(libpq) as conn:
        typed = ", ".join(f'"{c}" text' for c in columns)
        conn.execute(f"CREATE TABLE messages (id bigserial PRIMARY KEY, {typed})")
        conn.commit()
        insert = f"INSERT INTO messages ({names}) VALUES ({marks})"  # noqa: S608

        def commit(chunk: list[tuple[str, ...]]) -> None:
            with conn.cursor() as cursor:
                cursor.executemany(insert, chunk)
            conn.commit()

        with probe:
            total = insert_in_chunks(path, columns, commit)
        stored = conn.execute("SELECT count(*) FROM messages").fetchone()
    return total, {"messages_stored": int(stored[0]) if stored else 0}


def _raw_render(work_dir: Path) -> Sample:
    templates = Settings(outbox=str(work_dir)).templates
    doc = authority_document(BASELINE_MESSAGES)
    html = render_bundle_html(doc, templates)
    progress(f"campaign: raw WeasyPrint, one {BASELINE_MESSAGES:,}-message authority bundle")
    return measure(lambda probe: raw_weasyprint(html, templates, probe))


def _results(count: int, steps: list[Step], raw_import: Sample, raw_render: Sample) -> list[Result]:
    by_name = {s.name: s for s in steps}
    imported = by_name["messages import"]
    worker = by_name["worker"]
    report = imported.output
    rows = int(report.get("imported", 0)) + int(report.get("duplicates", 0))
    rows += int(report.get("rejected_total", 0))
    pages = int(worker.output.get("pages", 0))
    timed = [s for s in steps if s.name != "status"]
    total = sum(s.seconds for s in timed)
    status = by_name["status"].output
    notes = [
        f"end to end (import, approve, worker, audit verify): {total:,.0f} s"
        f" = {total / 60:,.1f} min for {count:,} messages",
        *(s.note() for s in timed),
        f"import: {report.get('imported', 0):,} imported, {report.get('approved', 0):,}"
        f" approved by rule, {report.get('flagged', 0):,} flagged",
        f"approved by the caseworker: {by_name['review approve'].output.get('approved', '?')}",
        f"worker: {worker.output.get('bundles_rendered', 0)} bundles, {pages:,} pages,"
        f" deliveries {json.dumps(worker.output.get('deliveries', {}))},"
        f" errors {len(worker.output.get('errors', []))}",
        f"audit verify: {json.dumps(by_name['audit verify'].output)[:300]}",
        f"status: messages {json.dumps(status.get('messages', {}))},"
        f" bundles {json.dumps(status.get('bundles_by_state', {}))}",
    ]
    params = {"messages": count, "engine": "postgresql", "render_processes": os.cpu_count()}
    import_result = Result(
        name="campaign-import",
        unit="rows",
        params=params,
        baseline=Side(label="psycopg executemany, plain table", samples=[raw_import]),
        ours=Side(label="solidarity messages import", samples=[_sample(imported, rows)]),
        notes=notes,
    )
    render_result = Result(
        name="campaign-render",
        unit="pages",
        params={**params, "baseline_messages": BASELINE_MESSAGES},
        baseline=Side(label="raw WeasyPrint, one document, 1 core", samples=[raw_render]),
        ours=Side(label="solidarity worker --once --now", samples=[_sample(worker, pages)]),
    )
    return [import_result, render_result]


def _sample(step: Step, work: int) -> Sample:
    return Sample(
        seconds=step.seconds,
        work=work,
        rss_delta_kib=int(step.maxrss_mib * 1024),
        peak_reset=False,
        extra={"peak_rss_mib": step.maxrss_mib},
    )
