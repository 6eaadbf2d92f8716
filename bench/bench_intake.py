"""intake: import demo messages with import_messages, against plain sqlite3 inserts.

Ours reads the CSV through delivery.intake (validation), screens each row, drops
duplicates, links recipients and appends one hash-chained ledger event per message, all
through SQLAlchemy. The baseline reads the same file with csv.DictReader and inserts the
rows as they are into one table with the same columns, with the same chunking (one
transaction per 2,000 rows) and the same SQLite settings (WAL, synchronous=NORMAL).
"""

from __future__ import annotations

import csv
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import Probe, Result, alternate, measure, progress

from delivery.campaign import parse_campaign
from delivery.config import Settings
from delivery.demo import DEMO_CAMPAIGN_TOML, write_messages_csv
from delivery.importer import CHUNK, import_messages
from delivery.store import Store

DEFAULT_ROWS = 50_000
QUICK_ROWS = 5_000
WARMUP_ROWS = 500
SOURCE = "bench"


def settings_for(folder: Path) -> Settings:
    """Settings for a throw-away outbox with its own SQLite database."""
    # The database URL is spelled out so that a SOLIDARITY_DATABASE_URL in the environment
    # can never point the benchmark at a real database.
    return Settings(outbox=str(folder), database_url=f"sqlite:///{folder / 'solidarity.db'}")


def ours(path: Path, probe: Probe) -> tuple[int, dict[str, Any]]:
    """Import ``path`` into a fresh store with the demo campaign; only the import is timed."""
    with tempfile.TemporaryDirectory(prefix="bench-intake-") as tmp:
        settings = settings_for(Path(tmp))
        store = Store.connect(settings.database_url)
        try:
            store.save_campaign(
                parse_campaign(DEMO_CAMPAIGN_TOML, source="demo"),
                actor="bench",
                source="demo",
                sha256="-",
            )
            with probe:
                report = import_messages(store, path, source=SOURCE, settings=settings)
            stored = store.count_messages()
            events = store.ledger_size()
        finally:
            store.close()
    rows = report.imported + report.duplicates + report.rejected_total
    return rows, {
        "imported": report.imported,
        "duplicates": report.duplicates,
        "rejected": report.rejected_total,
        "approved": report.approved,
        "flagged": report.flagged,
        "messages_stored": stored,
        "ledger_events": events,
    }


def baseline(path: Path, probe: Probe) -> tuple[int, dict[str, Any]]:
    """Insert the rows of ``path`` as they are with sqlite3; only the inserts are timed."""
    with tempfile.TemporaryDirectory(prefix="bench-intake-") as tmp:
        conn = sqlite3.connect(Path(tmp) / "baseline.db", isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            with path.open(encoding="utf-8", newline="") as handle:
                columns = list(csv.DictReader(handle).fieldnames or ())
            names = ", ".join(f'"{c}"' for c in columns)
            marks = ", ".join("?" * len(columns))
            conn.execute(f"CREATE TABLE messages (id INTEGER PRIMARY KEY, {names})")
            insert = f"INSERT INTO messages ({names}) VALUES ({marks})"  # noqa: S608
            with probe:
                rows = _insert_all(conn, path, insert, columns)
            stored = int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
        finally:
            conn.close()
    return rows, {"messages_stored": stored}


def _insert_all(conn: sqlite3.Connection, path: Path, insert: str, columns: list[str]) -> int:
    def commit(chunk: list[tuple[str, ...]]) -> None:
        conn.execute("BEGIN")
        conn.executemany(insert, chunk)
        conn.execute("COMMIT")

    return insert_in_chunks(path, columns, commit)


def insert_in_chunks(
    path: Path, columns: list[str], commit: Callable[[list[tuple[str, ...]]], None]
) -> int:
    """The CSV's rows as tuples of ``columns``, ``CHUNK`` at a time to ``commit``; how many."""
    total = 0
    chunk: list[tuple[str, ...]] = []
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            chunk.append(tuple(row[c] for c in columns))
            if len(chunk) >= CHUNK:
                commit(chunk)
                total += len(chunk)
                chunk = []
    if chunk:
        commit(chunk)
        total += len(chunk)
    return total


def run(*, quick: bool, reps: int, work_dir: Path) -> Result:
    rows = QUICK_ROWS if quick else DEFAULT_ROWS
    data = work_dir / f"messages-{rows}.csv"
    warm = work_dir / f"messages-{WARMUP_ROWS}.csv"
    progress(f"intake: writing {rows:,} demo messages to {data.name}")
    write_messages_csv(data, rows)
    write_messages_csv(warm, WARMUP_ROWS)
    progress(f"intake: warm-up with {WARMUP_ROWS} rows each")
    measure(lambda probe: baseline(warm, probe))
    measure(lambda probe: ours(warm, probe))
    base_side, our_side = alternate(
        "intake",
        reps,
        ("sqlite3 executemany", lambda probe: baseline(data, probe)),
        ("import_messages", lambda probe: ours(data, probe)),
    )
    result = Result(
        name="intake",
        unit="rows",
        params={"rows": rows, "reps": reps, "chunk": CHUNK, "file_bytes": data.stat().st_size},
        baseline=base_side,
        ours=our_side,
    )
    last = our_side.samples[-1].extra
    result.notes.append(
        f"ours stored {last['imported']:,} of {rows:,} rows ({last['rejected']:,} rejected,"
        f" {last['duplicates']:,} duplicates, {last['approved']:,} auto-approved,"
        f" {last['flagged']:,} flagged) and wrote {last['ledger_events']:,} ledger events"
    )
    return result
