"""Run the benchmarks: each one measures our code as a ratio to a baseline in this process.

    .venv/bin/python bench/run.py            # all benchmarks, full sizes, 3 repetitions
    .venv/bin/python bench/run.py --quick    # small sizes, one repetition (under a minute)
    .venv/bin/python bench/run.py --only render --json
    .venv/bin/python bench/run.py --only merge   # starts render processes (spawn)
    .venv/bin/python bench/run.py --only email   # starts an SMTP sink and mailmerge
    .venv/bin/python bench/run.py --only workers # worker commands, an SMTP sink, PostgreSQL
    .venv/bin/python bench/run.py --only campaign  # 1.4 million messages on PostgreSQL (> 1 h)

Progress goes to stderr; the table (or with --json the results) to stdout. The results
are also written to bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import bench_campaign
import bench_email
import bench_intake
import bench_merge
import bench_render
import bench_workers
from harness import Report, progress, table

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results" / "latest.json"
# The workers benchmark takes its PostgreSQL server from tests/postgres.py, imported only
# when it runs: the repository root (after this folder) makes ``tests`` importable.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(1, str(REPO_ROOT))

Runner = Callable[..., Report | list[Report]]  # some benchmarks report several results
BENCHMARKS: dict[str, Runner] = {
    "intake": bench_intake.run,
    "render": bench_render.run,
    "merge": bench_merge.run,
    "email": bench_email.run,
    "workers": bench_workers.run,
    "campaign": bench_campaign.run,
}
# Run only when named with --only: the whole campaign takes more than an hour on 2 cores.
OPT_IN = frozenset({"campaign"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    parser.add_argument("--only", choices=sorted(BENCHMARKS), help="run this benchmark only")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    reps = 1 if args.quick else 3
    names = [args.only] if args.only else [n for n in BENCHMARKS if n not in OPT_IN]
    started = time.perf_counter()
    results: list[Report] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for name in names:
            progress(f"== {name} ({'quick' if args.quick else 'full'}, {reps} rep(s))")
            done = BENCHMARKS[name](quick=args.quick, reps=reps, work_dir=Path(tmp))
            results.extend(done if isinstance(done, list) else [done])
    elapsed = time.perf_counter() - started
    progress(f"== done in {elapsed:.1f} s")

    document = {
        "meta": _meta(quick=args.quick, reps=reps, elapsed=elapsed),
        "results": {r.name: r.as_dict() for r in results},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    if args.json:
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        print(table(results))
        for r in results:
            for note in r.notes:
                print(f"{r.name}: {note}")
            if not r.peak_reset:
                print(f"{r.name}: peak RSS could not be reset between runs; deltas after the")
                print(f"{r.name}: first big run understate (ru_maxrss only ever grows)")
        print("ratio = ours/baseline throughput (1.0 = as fast as the baseline); for a memory")
        print(f"benchmark, the largest peak over its limit; see {RESULTS}")
    return 0


def _meta(*, quick: bool, reps: int, elapsed: float) -> dict[str, Any]:
    return {
        "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "quick": quick,
        "reps": reps,
        "seconds": round(elapsed, 1),
        "commit": _commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
        "weasyprint": version("weasyprint"),
        "sqlalchemy": version("sqlalchemy"),
    }


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=BENCH_DIR,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return ""
    return out.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
