"""workers: deliveries per second with 1, 2 and 4 worker processes, and one state transition.

* ``workers-<engine>-<channel>-<K>p``: ``solidarity worker --once --concurrency K`` as a
  subprocess on a database holding N rendered bundles and one queued e-mail delivery for
  each, K = 2 and 4 against K = 1 on the same engine (SQLite, PostgreSQL) and channel (the
  e-mail spool, ``.eml`` files in the outbox; SMTP to ``smtp_sink.py`` in a process of its
  own). The ratio is the scaling. Only delivering is timed: the bundles are inserted
  already rendered (one small real PDF, rendered once, shared by all of them), so the
  workers find nothing to collect or render. Afterwards every delivery must have left
  ``queued`` exactly once: one ``delivery.sending`` ledger event per delivery.
* ``transition-<engine>``: ``store.transition(id, SENDING)`` then ``store.transition(id,
  SPOOLED, artefacts=...)`` in this process over N deliveries, against the same state
  change and one hash-chained ledger row per transition written with the raw driver
  (``sqlite3``, ``psycopg``) on a copy of the same database: µs per delivery.

PostgreSQL comes from ``tests/postgres.py`` (a throwaway cluster, or the server that
``SOLIDARITY_TEST_POSTGRES_URL`` names); if it cannot start, only SQLite is measured.
Nothing here starts a process at import.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench_email import Sink
from bench_merge import CpuWatch
from bench_render import authority_document
from harness import Probe, Result, Side, Work, measure, progress, rotate
from sqlalchemy import func, insert, select
from sqlalchemy.engine import make_url

from delivery.campaign import parse_campaign
from delivery.config import Settings
from delivery.demo import DEMO_CAMPAIGN_TOML
from delivery.ledger import verify_chain
from delivery.models import ChannelName, DeliveryState, Message, stable_id
from delivery.outbox import Artefact
from delivery.render.bundle import render_bundle
from delivery.render.volumes import manifest_bytes
from delivery.store import Store
from delivery.store.schema import (
    bundles,
    deliveries,
    import_batches,
    ledger,
    message_recipients,
    messages,
)

# Every run of the worker command takes 2.5 to 5.5 s to start and stop, then about 10 to 20 ms
# of wall time a delivery: 700 deliveries and two repetitions keep a full run of this
# benchmark (2 engines × 2 channels × 3 process counts × 2 repetitions) under 6 minutes.
DEFAULT_DELIVERIES = 700
QUICK_DELIVERIES = 200
WORKER_REPS = 2  # at most, for the runs of the worker command; the transitions use all
WARMUP_DELIVERIES = 20
DIGEST_MESSAGES = 5  # messages in the one rendered bundle, and linked to every bundle
CONCURRENCY = (1, 2, 4)
CHANNELS = ("spool", "smtp")
SOLIDARITY = Path(sys.executable).parent / "solidarity"
ACTOR = "bench"
SOURCE = "bench"
_TICKS = os.sysconf("SC_CLK_TCK")
# The worker paces each destination domain (60 e-mails a minute by default): with the 6
# domains of the demo campaign that alone would cap a process at 6 e-mails a second.
SMTP_PACE = "1000000"


# -- the input: one small rendered bundle ------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Input:
    """The one real bundle every inserted bundle points at, rendered once."""

    messages: tuple[Message, ...]
    pdf: bytes
    manifest: bytes
    pages: int
    countries: int
    template_version: str

    @property
    def pdf_sha256(self) -> str:
        return hashlib.sha256(self.pdf).hexdigest()


PDF_PATH = "bundles/bench/bench-digest.pdf"
MANIFEST_PATH = "bundles/bench/bench-digest.manifest.json"


def build_input(work_dir: Path) -> Input:
    """A digest of a few demo messages, rendered with the project's renderer."""
    templates = Settings(outbox=str(work_dir)).templates
    doc = authority_document(DIGEST_MESSAGES)
    rendered = render_bundle(doc, templates)
    sha = hashlib.sha256(rendered.pdf).hexdigest()
    data = {**rendered.manifest, "pdf_sha256": sha, "pages": rendered.pages}
    return Input(
        messages=doc.messages,
        pdf=rendered.pdf,
        manifest=manifest_bytes(data),
        pages=rendered.pages,
        countries=int(str(data.get("country_count", 0))),
        template_version=rendered.template_version,
    )


def _write_files(outbox: Path, inp: Input) -> None:
    for relpath, data in ((PDF_PATH, inp.pdf), (MANIFEST_PATH, inp.manifest)):
        target = outbox / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


# -- a seeded database ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Target:
    """One e-mail recipient of the demo campaign."""

    recipient_id: int
    case: str
    slug: str


def seed(url: str, outbox: Path, inp: Input, count: int) -> list[str]:
    """Campaign, ``count`` rendered bundles and a queued e-mail delivery for each; the ids.

    Written with SQLAlchemy Core on the store's engine. Each bundle points at the same PDF
    and manifest and has the few messages of the rendered bundle linked to it (copies, as a
    message is in one bundle per recipient), so that the e-mail the worker composes carries
    a real digest.
    """
    _write_files(outbox, inp)
    store = Store.connect(url)
    try:
        campaign = parse_campaign(DEMO_CAMPAIGN_TOML, source="demo")
        store.save_campaign(campaign, actor=ACTOR, source="demo", sha256="-")
        ids = store.recipient_ids()
        targets = [
            Target(recipient_id=ids[(c.slug, r.slug)], case=c.slug, slug=r.slug)
            for c in campaign.cases
            for r in c.recipients
            if r.email
        ]
        bounce = campaign.organisation.bounce_domain
        rows = _rows(store.id_key, inp, targets, bounce, count)
        with store.transaction() as conn:
            conn.execute(insert(import_batches), [rows["batch"]])
            for table, name in (
                (messages, "messages"),
                (bundles, "bundles"),
                (message_recipients, "links"),
                (deliveries, "deliveries"),
            ):
                if rows[name]:
                    conn.execute(insert(table), rows[name])
    finally:
        store.close()
    return [str(d["id"]) for d in rows["deliveries"]]


def _rows(key: bytes, inp: Input, targets: list[Target], bounce: str, count: int) -> dict[str, Any]:
    start = datetime.now(UTC) - timedelta(days=1)
    rows: dict[str, Any] = {"messages": [], "bundles": [], "links": [], "deliveries": []}
    rows["batch"] = {
        "id": 1,
        "source": SOURCE,
        "filename": "bench",
        "file_sha256": "-",
        "started_at": start,
        "finished_at": start,
        "imported": count * len(inp.messages),
    }
    message_id = 0
    for number in range(count):
        target = targets[number % len(targets)]
        stamp = start + timedelta(milliseconds=number)
        period = f"bench-{number:06d}"
        bundle_id = stable_id("bnd", str(target.recipient_id), period, key=key)
        for m in inp.messages:
            message_id += 1
            rows["messages"].append(_message_row(message_id, m, target, period, stamp))
            rows["links"].append(
                {
                    "message_id": message_id,
                    "recipient_id": target.recipient_id,
                    "bundle_id": bundle_id,
                }
            )
        rows["bundles"].append(
            {
                "id": bundle_id,
                "recipient_id": target.recipient_id,
                "period": period,
                "state": "rendered",
                "message_count": len(inp.messages),
                "country_count": inp.countries,
                "pages": inp.pages,
                "pdf_path": PDF_PATH,
                "pdf_sha256": inp.pdf_sha256,
                "manifest_path": MANIFEST_PATH,
                "manifest_sha256": hashlib.sha256(inp.manifest).hexdigest(),
                "template_version": inp.template_version,
                "created_at": stamp,
                "rendered_at": stamp,
            }
        )
        delivery_id = stable_id("dlv", bundle_id, str(ChannelName.EMAIL), key=key)
        rows["deliveries"].append(
            {
                "id": delivery_id,
                "bundle_id": bundle_id,
                "recipient_id": target.recipient_id,
                "channel": str(ChannelName.EMAIL),
                "state": str(DeliveryState.QUEUED),
                "proof": 0,
                "attempts": 0,
                "message_id_header": f"<{delivery_id}@{bounce}>",
                "provider_ref": "",
                "last_error": "",
                "created_at": stamp,
                "updated_at": stamp,
            }
        )
    return rows


def _message_row(
    message_id: int, m: Message, target: Target, period: str, stamp: datetime
) -> dict[str, Any]:
    return {
        "id": message_id,
        "batch_id": 1,
        "source": SOURCE,
        "external_id": f"{period}-{m.external_id}",
        "line": message_id,
        "case_slug": target.case,
        "target": target.slug,
        "supporter_name": m.supporter_name,
        "supporter_email": m.supporter_email,
        "supporter_city": m.supporter_city,
        "supporter_country": m.supporter_country,
        "language": m.language,
        "kind": str(m.kind),
        "body": m.body,
        "body_sha256": m.body_sha256,
        "submitted_at": m.submitted_at,
        "event": m.event,
        "extra": {},
        "review_state": "approved",
        "flags": [],
        "reviewed_at": stamp,
        "imported_at": stamp,
    }


# -- the engines: a seeded database, copied fresh for every run ----------------------------------


class Engine:
    """Where the databases live; :meth:`fresh` gives a copy of the seeded one per run."""

    name = ""

    def prepare(self, inp: Input, count: int, work_dir: Path) -> list[str]:
        raise NotImplementedError

    @contextlib.contextmanager
    def fresh(self, work_dir: Path, *, empty: bool = False) -> Iterator[tuple[str, Path]]:
        """A URL to a copy of the seeded database (or an empty one) and an outbox for it."""
        raise NotImplementedError
        yield  # pragma: no cover

    def server_cpu_seconds(self) -> float | None:
        """CPU the database server used so far (None: no server, or not on this machine)."""
        return None


class SqliteEngine(Engine):
    name = "sqlite"

    def __init__(self) -> None:
        self.seeded: Path | None = None
        self.empty: Path | None = None

    def prepare(self, inp: Input, count: int, work_dir: Path) -> list[str]:
        self.seeded = work_dir / "workers-sqlite-seed"
        self.empty = work_dir / "workers-sqlite-empty"
        for folder in (self.seeded, self.empty):
            shutil.rmtree(folder, ignore_errors=True)
        ids = seed(self.url_of(self.seeded), self.seeded, inp, count)
        seed(self.url_of(self.empty), self.empty, inp, 0)
        return ids

    @staticmethod
    def url_of(outbox: Path) -> str:
        return f"sqlite:///{outbox / 'solidarity.db'}"

    @contextlib.contextmanager
    def fresh(self, work_dir: Path, *, empty: bool = False) -> Iterator[tuple[str, Path]]:
        source = self.empty if empty else self.seeded
        assert source is not None, "prepare() first"
        with tempfile.TemporaryDirectory(prefix="bench-workers-", dir=work_dir) as tmp:
            outbox = Path(tmp) / "outbox"
            shutil.copytree(source, outbox)
            yield self.url_of(outbox), outbox


class PostgresEngine(Engine):
    """Databases on the server of ``tests/postgres.py``: each run a copy of the seeded one."""

    name = "postgresql"

    def __init__(self, server: Any) -> None:
        self.server = server
        self.seeded = ""
        self.empty = ""
        self.files: Path | None = None
        self._postmaster = _postmaster_pid(server)

    def prepare(self, inp: Input, count: int, work_dir: Path) -> list[str]:
        self.files = work_dir / "workers-postgresql-files"
        shutil.rmtree(self.files, ignore_errors=True)
        self.seeded = self.server.create()  # a migrated copy of the server's template
        ids = seed(self.seeded, self.files, inp, count)
        self.empty = self.server.create()
        seed(self.empty, self.files, inp, 0)
        return ids

    @contextlib.contextmanager
    def fresh(self, work_dir: Path, *, empty: bool = False) -> Iterator[tuple[str, Path]]:
        assert self.files is not None, "prepare() first"
        url = self.server.create(copy_of=self.empty if empty else self.seeded)
        try:
            with tempfile.TemporaryDirectory(prefix="bench-workers-", dir=work_dir) as tmp:
                outbox = Path(tmp) / "outbox"
                shutil.copytree(self.files, outbox)
                yield url, outbox
        finally:
            self.server.drop(make_url(url).database or "")

    def server_cpu_seconds(self) -> float | None:
        if self._postmaster is None:
            return None
        return _tree_seconds(self._postmaster)


def _postmaster_pid(server: Any) -> int | None:
    """The server's main process, if it runs on this machine: the parent of our backend."""
    try:
        backend = int(server.admin.info.backend_pid)
        with open(f"/proc/{backend}/stat", "rb") as stat:
            return int(stat.read().rpartition(b")")[2].split()[1])
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _tree_seconds(pid: int) -> float:
    """CPU of ``pid``, of its children it has reaped, and of its live children."""
    total = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
        total += sum(int(f) for f in fields[11:15]) / _TICKS
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        for child in children:
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(f"/proc/{child}/stat", "rb") as stat:
                    fields = stat.read().rpartition(b")")[2].split()
                total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


@contextlib.contextmanager
def postgres_engine(problems: list[str]) -> Iterator[PostgresEngine | None]:
    """The PostgreSQL engine; None, and why in ``problems``, when no server can be had."""
    try:
        from tests.postgres import postgres_server
    except ImportError as exc:  # tests/ not on sys.path, or no psycopg or pytest
        problems.append(f"PostgreSQL skipped, SQLite only: cannot import tests.postgres ({exc})")
        progress(f"workers: {problems[-1]}")
        yield None
        return
    started = contextlib.ExitStack()
    try:
        server = started.enter_context(postgres_server())
    except BaseException as exc:  # pytest.fail raises an exception outside Exception
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        reason = " ".join(str(exc).split())[:500] or type(exc).__name__
        problems.append(f"PostgreSQL skipped, SQLite only: the server did not start: {reason}")
        progress(f"workers: {problems[-1]}")
        yield None
        return
    with started:
        engine = PostgresEngine(server)
        progress(f"workers: PostgreSQL at {make_url(server.url).render_as_string()}")
        yield engine


# -- one run of the worker command -------------------------------------------------------------


def worker_env(url: str, outbox: Path, sink: Sink | None) -> dict[str, str]:
    """This environment without SOLIDARITY_ variables, plus the database, outbox and SMTP."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOLIDARITY_")}
    env["SOLIDARITY_DATABASE_URL"] = url
    env["SOLIDARITY_OUTBOX"] = str(outbox)
    if sink is not None:
        env["SOLIDARITY_SMTP__HOST"] = sink.host
        env["SOLIDARITY_SMTP__PORT"] = str(sink.port)
        env["SOLIDARITY_SMTP__SECURITY"] = "none"
        env["SOLIDARITY_LIMITS__PER_DOMAIN_PER_MINUTE"] = SMTP_PACE
    return env


@dataclass(frozen=True, kw_only=True)
class Command:
    """One finished ``solidarity worker`` command."""

    seconds: float
    status: int
    cpu_seconds: float  # of the command and every process it waited for (wait4)
    maxrss_mib: float  # the largest of those processes
    summary: dict[str, Any]
    stderr_tail: str


def run_worker(env: dict[str, str], cwd: Path, concurrency: int, probe: Probe | None) -> Command:
    """``solidarity worker --once --concurrency K --json`` in ``cwd``; timed by ``probe``.

    ``cwd`` is a fresh folder: the command reads ``.env`` and ``solidarity.toml`` from
    where it runs, and its worker processes (``python -c``) import from there first.
    """
    command = [str(SOLIDARITY), "worker", "--once", "--concurrency", str(concurrency), "--json"]
    out_path, err_path = cwd / "worker.out", cwd / "worker.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        with probe if probe is not None else contextlib.nullcontext():
            proc = subprocess.Popen(
                command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )
            _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = out_path.read_text(errors="replace")
    try:
        summary = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        summary = {"unparsed": text[-500:]}
    return Command(
        seconds=seconds,
        status=proc.returncode,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        maxrss_mib=usage.ru_maxrss / 1024,
        summary=summary,
        stderr_tail=err_path.read_text(errors="replace")[-1_500:],
    )


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What the database says a run did."""

    states: dict[str, int]
    sending_events: Counter[int]  # how many deliveries had 0, 1, 2 ... sending events
    doubles: list[tuple[str, int]]  # deliveries that left queued more than once

    @property
    def exactly_once(self) -> int:
        return self.sending_events.get(1, 0)


def outcome(url: str, ids: list[str]) -> Outcome:
    """Deliveries by state, and how many ``delivery.sending`` events each one has."""
    store = Store.connect(url)
    try:
        with store.engine.connect() as conn:
            states = {
                str(s): int(n)
                for s, n in conn.execute(
                    select(deliveries.c.state, func.count()).group_by(deliveries.c.state)
                )
            }
            sent = {
                str(subject): int(n)
                for subject, n in conn.execute(
                    select(ledger.c.subject, func.count())
                    .where(ledger.c.kind == "delivery.sending")
                    .group_by(ledger.c.subject)
                )
            }
    finally:
        store.close()
    events = [sent.get(f"delivery:{d}", 0) for d in ids]
    doubles = sorted((d, n) for d, n in zip(ids, events, strict=True) if n > 1)
    return Outcome(states=states, sending_events=Counter(events), doubles=doubles)


@dataclass(kw_only=True)
class Bench:
    """What every run of one engine shares."""

    engine: Engine
    ids: list[str]
    sink: Sink
    work_dir: Path
    problems: list[str]

    def problem(self, text: str, *, double: bool = False) -> None:
        """Remember a problem for the notes, and say it now, loudly."""
        progress(f"{'!' * 8 if double else '!' * 4} {text}")
        self.problems.append(text)

    def check(self, label: str, run: Command, got: Outcome) -> None:
        count = len(self.ids)
        if got.doubles:
            shown = ", ".join(f"{d} ×{n}" for d, n in got.doubles[:5])
            self.problem(
                f"DOUBLE SEND in {label}: {len(got.doubles)} deliveries left queued more than"
                f" once ({shown})",
                double=True,
            )
        if got.exactly_once != count or run.status != 0:
            self.problem(
                f"{label}: {got.exactly_once} of {count} deliveries left queued exactly once"
                f" (sending events per delivery: {dict(sorted(got.sending_events.items()))});"
                f" states {got.states}; exit {run.status}; stderr: {run.stderr_tail[-300:]!r}"
            )


def deliver(
    bench: Bench, channel: str, concurrency: int, probe: Probe
) -> tuple[int, dict[str, Any]]:
    """One timed ``worker --once --concurrency K`` on a fresh copy of the seeded database."""
    engine, count = bench.engine, len(bench.ids)
    label = f"{engine.name}/{channel}/{_label(concurrency)}"
    sink = bench.sink if channel == "smtp" else None
    with engine.fresh(bench.work_dir) as (url, outbox):
        env = worker_env(url, outbox, sink)
        before = bench.sink.counts()
        sink0, server0 = bench.sink.cpu_seconds(), engine.server_cpu_seconds()
        with CpuWatch([bench.sink.proc.pid]) as watch:
            run = run_worker(env, outbox.parent, concurrency, probe)
        time.sleep(0.05)  # for the server to reap the backends of the workers that just ended
        server1 = engine.server_cpu_seconds()
        received, sink_cpu = bench.sink.counts() - before, bench.sink.cpu_seconds() - sink0
        got = outcome(url, bench.ids)
        emls = [p.stat().st_size for p in (outbox / "email").rglob("*.eml")]
    bench.check(label, run, got)
    server = server1 - server0 if server0 is not None and server1 is not None else None
    ours = run.cpu_seconds + (server or 0.0)  # CpuWatch counted these as "other"
    extra: dict[str, Any] = {
        "exit": run.status,
        "states": got.states,
        "left_queued_once": got.exactly_once,
        "double_sends": len(got.doubles),
        "summary_deliveries": run.summary.get("deliveries", {}),
        "worker_cpu_seconds": run.cpu_seconds,
        "worker_maxrss_mib": run.maxrss_mib,
        "server_cpu_seconds": server,
        "other_cores": max(0.0, watch.other_cores - ours / run.seconds) if run.seconds else 0.0,
        "eml_files": len(emls),
        "sink_messages": received.messages,
        "sink_cpu_seconds": sink_cpu,
        "email_bytes": (sum(emls) if sink is None else received.bytes) / count if count else 0,
    }
    sent = received.messages if sink is not None else len(emls)
    if sent != count:
        where = "the SMTP sink received" if sink is not None else "the outbox holds"
        bench.problem(
            f"{label}: {where} {sent} e-mails for {count} deliveries", double=sent > count
        )
    return count, extra


def empty_run(bench: Bench, concurrency: int) -> Command:
    """``worker --once`` with nothing to do: start-up and shut-down alone."""
    with bench.engine.fresh(bench.work_dir, empty=True) as (url, outbox):
        run = run_worker(worker_env(url, outbox, None), outbox.parent, concurrency, None)
    if run.status != 0:
        bench.problem(f"worker with nothing to do exited {run.status}: {run.stderr_tail[-300:]}")
    return run


# -- transition and ledger append, in this process --------------------------------------------

ARTEFACT = Artefact(path="email/bench/bench.eml", sha256="0" * 64, size=1)
STEPS = (
    (DeliveryState.QUEUED, DeliveryState.SENDING),
    (DeliveryState.SENDING, DeliveryState.SPOOLED),
)


def ours_transitions(bench: Bench, ids: list[str], probe: Probe) -> tuple[int, dict[str, Any]]:
    """``store.transition`` to sending, then to spooled with one artefact, for each delivery."""
    with bench.engine.fresh(bench.work_dir) as (url, _):
        store = Store.connect(url)
        try:
            with probe:
                for delivery_id in ids:
                    store.transition(delivery_id, DeliveryState.SENDING, actor=ACTOR)
                    store.transition(
                        delivery_id, DeliveryState.SPOOLED, actor=ACTOR, artefacts=(ARTEFACT,)
                    )
        finally:
            store.close()
        return len(ids), _chain(url)


def baseline_transitions(bench: Bench, ids: list[str], probe: Probe) -> tuple[int, dict[str, Any]]:
    """The same two state changes, each one UPDATE and one hash-chained ledger INSERT."""
    with bench.engine.fresh(bench.work_dir) as (url, _):
        if bench.engine.name == "sqlite":
            _sqlite_baseline(make_url(url).database or "", ids, probe)
        else:
            _psycopg_baseline(url, ids, probe)
        return len(ids), _chain(url)


def _chain(url: str) -> dict[str, Any]:
    """Whether the ledger's hash chain holds after the run (as ``audit verify`` checks it)."""
    store = Store.connect(url)
    try:
        return {"chain_ok": verify_chain(store.events()) is None, "ledger": store.ledger_size()}
    finally:
        store.close()


def _payload(old: str, new: str) -> str:
    """The payload ``store.transition`` records, as canonical JSON."""
    artefacts = (
        []
        if new == "sending"
        else [{"path": ARTEFACT.path, "sha256": ARTEFACT.sha256, "size": ARTEFACT.size}]
    )
    data = {
        "from": old,
        "to": new,
        "proof": "none",
        "provider_ref": "",
        "detail": "",
        "artefacts": artefacts,
    }
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _sealed(prev: str, seq: int, new: str, delivery_id: str, payload: str) -> tuple[Any, ...]:
    """One ledger row after ``prev``: sha256 over the previous hash and the row's fields."""
    at = datetime.now(UTC).isoformat(timespec="microseconds")
    kind, subject = f"delivery.{new}", f"delivery:{delivery_id}"
    material = json.dumps([prev, seq, at, ACTOR, kind, subject, payload], ensure_ascii=False)
    digest = hashlib.sha256(material.encode("utf-8")).hexdigest()
    return (seq, at, ACTOR, kind, subject, payload, prev, digest)


def _sqlite_baseline(path: str, ids: list[str], probe: Probe) -> None:
    """Plain ``sqlite3``, WAL and ``synchronous=NORMAL`` as our engine; a transaction each."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
            conn.execute(f"PRAGMA {pragma}")
        last = "SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1"
        seq, prev = conn.execute(last).fetchone()
        update = "UPDATE deliveries SET state=?, updated_at=? WHERE id=? AND state=?"
        append = "INSERT INTO ledger VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        payloads = {step: _payload(*step) for step in STEPS}
        with probe:
            for delivery_id in ids:
                for old, new in STEPS:
                    seq += 1
                    row = _sealed(prev, seq, new, delivery_id, payloads[old, new])
                    stamp = datetime.now(UTC).isoformat(sep=" ")
                    conn.execute("BEGIN IMMEDIATE")
                    if conn.execute(update, (str(new), stamp, delivery_id, str(old))).rowcount != 1:
                        raise RuntimeError(f"baseline: delivery {delivery_id} was not {old}")
                    conn.execute(append, row)
                    conn.execute("COMMIT")
                    prev = row[-1]
    finally:
        conn.close()


def _psycopg_baseline(url: str, ids: list[str], probe: Probe) -> None:
    """Plain ``psycopg``: UPDATE, INSERT, COMMIT per transition."""
    import psycopg

    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq) as conn:
        row = conn.execute("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1").fetchone()
        assert row is not None
        seq, prev = int(row[0]), str(row[1])
        conn.commit()
        update = "UPDATE deliveries SET state=%s, updated_at=%s WHERE id=%s AND state=%s"
        append = "INSERT INTO ledger VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        payloads = {step: _payload(*step) for step in STEPS}
        with probe, conn.cursor() as cur:
            for delivery_id in ids:
                for old, new in STEPS:
                    seq += 1
                    sealed = _sealed(prev, seq, new, delivery_id, payloads[old, new])
                    cur.execute(update, (str(new), datetime.now(UTC), delivery_id, str(old)))
                    if cur.rowcount != 1:
                        raise RuntimeError(f"baseline: delivery {delivery_id} was not {old}")
                    cur.execute(append, sealed)
                    conn.commit()
                    prev = sealed[-1]


# -- the benchmark -----------------------------------------------------------------------------


def run(*, quick: bool, reps: int, work_dir: Path) -> list[Result]:
    count = QUICK_DELIVERIES if quick else DEFAULT_DELIVERIES
    inp = build_input(work_dir)
    progress(
        f"workers: {count:,} deliveries, each a bundle of {len(inp.messages)} messages with the"
        f" same {inp.pages}-page PDF ({len(inp.pdf):,} bytes)"
    )
    results: list[Result] = []
    problems: list[str] = []
    sink = Sink()
    try:
        progress(f"workers: SMTP sink pid {sink.proc.pid} on {sink.host}:{sink.port}")
        sqlite = Bench(
            engine=SqliteEngine(), ids=[], sink=sink, work_dir=work_dir, problems=problems
        )
        results += _engine(sqlite, inp, count, reps)
        with postgres_engine(problems) as postgres:
            if postgres is not None:
                bench = Bench(
                    engine=postgres, ids=[], sink=sink, work_dir=work_dir, problems=problems
                )
                results += _engine(bench, inp, count, reps)
    finally:
        sink.stop()
    for problem in problems:
        progress(f"workers: PROBLEM: {problem}")
    results[0].notes[:0] = [f"PROBLEM: {p}" for p in problems]
    return results


def _engine(bench: Bench, inp: Input, count: int, reps: int) -> list[Result]:
    engine = bench.engine
    started = time.perf_counter()
    bench.ids = engine.prepare(inp, count, bench.work_dir)
    progress(f"workers: {engine.name}: seeded {len(bench.ids):,} deliveries in {_since(started)}")
    progress(f"workers: {engine.name}: warm-up, then a run with nothing to do for each K")
    empty_run(bench, 1)  # the command's files into the page cache
    empty = {k: empty_run(bench, k) for k in CONCURRENCY}
    progress(
        f"workers: {engine.name}: with nothing to do, "
        + ", ".join(
            f"{_label(k)} {c.seconds:.2f} s ({c.cpu_seconds:.1f} s CPU)" for k, c in empty.items()
        )
    )
    results: list[Result] = []
    worker_reps = min(reps, WORKER_REPS)
    for channel in CHANNELS:
        sides = rotate(
            f"workers {engine.name}/{channel}",
            worker_reps,
            [
                ("baseline" if k == 1 else "ours", _label(k), _deliver_work(bench, channel, k))
                for k in CONCURRENCY
            ],
        )
        results += _scaling(bench, channel, sides, worker_reps, empty)
    results.append(_transitions(bench, bench.ids, reps))
    return results


def _deliver_work(bench: Bench, channel: str, concurrency: int) -> Work:
    return lambda probe: deliver(bench, channel, concurrency, probe)


def _label(concurrency: int) -> str:
    return f"{concurrency} process{'es' * (concurrency != 1)}"


def _scaling(
    bench: Bench, channel: str, sides: list[Side], reps: int, empty: dict[int, Command]
) -> list[Result]:
    count = len(bench.ids)
    one, *more = sides
    results = []
    for k, side in zip(CONCURRENCY[1:], more, strict=True):
        params = {
            "engine": bench.engine.name,
            "channel": channel,
            "deliveries": count,
            "processes": k,
            "reps": reps,
            "cpus": os.cpu_count(),
            "empty_run_seconds": {str(n): c.seconds for n, c in empty.items()},
            "empty_run_cpu_seconds": {str(n): c.cpu_seconds for n, c in empty.items()},
            "per_domain_per_minute": float(SMTP_PACE) if channel == "smtp" else None,
        }
        shown = [(1, one), (k, side)] if k == CONCURRENCY[1] else [(k, side)]
        results.append(
            Result(
                name=f"workers-{bench.engine.name}-{channel}-{k}p",
                unit="deliveries",
                params=params,
                baseline=one,
                ours=side,
                notes=[_side_note(n, s, empty[n], count, channel) for n, s in shown],
            )
        )
    return results


def _side_note(k: int, side: Side, empty: Command, count: int, channel: str) -> str:
    last = side.samples[-1].extra
    per = 1000 / count
    cpu = f"CPU a delivery: workers {(last['worker_cpu_seconds'] - empty.cpu_seconds) * per:.1f} ms"
    if last["server_cpu_seconds"] is not None:
        cpu += f", PostgreSQL {last['server_cpu_seconds'] * per:.1f} ms"
    if channel == "smtp":
        cpu += f", SMTP sink {last['sink_cpu_seconds'] * per:.1f} ms"
    net = side.seconds - empty.seconds
    if net > side.seconds / 4:
        rate = f"so roughly {count / net:,.0f} deliveries/s net of it"
    else:  # one run with nothing to do, measured once: too noisy to take from a short run
        rate = "too close to the run's time for a net rate"
    once = "/".join(f"{s.extra['left_queued_once']:,}" for s in side.samples)
    others = ", ".join(f"{s.extra['other_cores']:.2f}" for s in side.samples)
    return (
        f"{_label(k)}: left queued exactly once {once} of {count:,}; {cpu} (last run);"
        f" largest process {last['worker_maxrss_mib']:.0f} MiB; e-mails of"
        f" {last['email_bytes']:,.0f} bytes; nothing to do takes {empty.seconds:.2f} s"
        f" ({empty.cpu_seconds:.1f} s CPU, not counted above), {rate}; other processes used"
        f" [{others}] cores"
    )


def _watched(bench: Bench, run: Work) -> Work:
    """``run``, noting how much CPU the rest of the machine (but the server) used meanwhile."""

    def work(probe: Probe) -> tuple[int, dict[str, Any]]:
        server0 = bench.engine.server_cpu_seconds()
        with CpuWatch([]) as watch:
            started = time.perf_counter()
            done, extra = run(probe)
            wall = time.perf_counter() - started
        server1 = bench.engine.server_cpu_seconds()
        server = server1 - server0 if server0 is not None and server1 is not None else 0.0
        extra["other_cores"] = max(0.0, watch.other_cores - server / wall) if wall else 0.0
        return done, extra

    return work


def _transitions(bench: Bench, ids: list[str], reps: int) -> Result:
    engine = bench.engine
    name = f"transition-{engine.name}"
    warm = ids[:WARMUP_DELIVERIES]
    measure(lambda probe: baseline_transitions(bench, warm, probe))
    measure(lambda probe: ours_transitions(bench, warm, probe))
    base, ours = rotate(
        name,
        reps,
        [
            (
                "baseline",
                "sqlite3" if engine.name == "sqlite" else "psycopg",
                _watched(bench, lambda probe: baseline_transitions(bench, ids, probe)),
            ),
            (
                "ours",
                "store.transition",
                _watched(bench, lambda probe: ours_transitions(bench, ids, probe)),
            ),
        ],
    )
    b_us, o_us = (s.seconds * 1e6 / len(ids) for s in (base, ours))
    chains = all(s.extra["chain_ok"] for s in (*base.samples, *ours.samples))
    others = [f"{s.extra['other_cores']:.2f}" for s in (*base.samples, *ours.samples)]
    return Result(
        name=name,
        unit="deliveries",
        params={"engine": engine.name, "deliveries": len(ids), "transitions": 2 * len(ids)},
        baseline=base,
        ours=ours,
        notes=[
            f"µs a delivery (two transitions, two ledger events): baseline {b_us:,.0f},"
            f" ours {o_us:,.0f} ({o_us / b_us if b_us else 0:.1f}× the time); the ledger's"
            f" hash chain verified after every run: {'yes' if chains else 'NO, BROKEN'};"
            f" other processes used [{', '.join(others[: len(base.samples)])}] cores during"
            f" the baseline's runs, [{', '.join(others[len(base.samples) :])}] during ours"
        ],
    )


def _since(started: float) -> str:
    return f"{time.perf_counter() - started:.1f} s"
