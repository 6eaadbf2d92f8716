"""Timing, memory and reporting shared by the benchmarks.

Every benchmark compares our code with a baseline run in the same process on the same
input, and reports the ratio of the two. Absolute figures are printed for context only;
they depend on the machine and nothing should assert on them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

_CLEAR_REFS = Path("/proc/self/clear_refs")


def progress(text: str) -> None:
    """One line of progress on stderr, so stdout stays clean for --json."""
    print(text, file=sys.stderr, flush=True)


def _maxrss_kib() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def _load_libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim  # noqa: B018  # glibc only
    except (OSError, AttributeError, TypeError):
        return None
    return libc


_LIBC = _load_libc()


def release_free_memory() -> None:
    """Collect garbage and hand free heap pages back to the system (glibc), best effort.

    Memory an earlier run freed but the allocator kept would otherwise be reused by the
    next run without raising RSS, and hide that run's real peak.
    """
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def reset_peak_rss() -> bool:
    """Reset the process high-water mark to the current RSS (Linux 4.0+); False if we can't.

    Without a reset, ru_maxrss only ever grows, so in a process that runs several
    measurements one after another only the first big one would show a delta.
    """
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


@dataclass(frozen=True, kw_only=True)
class Sample:
    """One timed run: how long it took, how much work it did, how much memory it added."""

    seconds: float
    work: int  # rows, pages: the unit of the benchmark's rate
    rss_delta_kib: int
    peak_reset: bool
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.work / self.seconds if self.seconds > 0 else 0.0


class Probe:
    """Times the part of a run it wraps, and the peak RSS that part adds.

    A run sets up its input (fresh folders, databases, documents) outside the probe and
    does only the measured work inside ``with probe:``.
    """

    def __init__(self) -> None:
        self.seconds: float | None = None
        self.rss_delta_kib = 0
        self.peak_reset = False
        self._start = 0.0
        self._before = 0

    def __enter__(self) -> Probe:
        if self.seconds is not None:
            raise RuntimeError("a probe measures one block only")
        release_free_memory()
        self.peak_reset = reset_peak_rss()
        self._before = _maxrss_kib()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start
        self.rss_delta_kib = max(0, _maxrss_kib() - self._before)


Work = Callable[[Probe], tuple[int, dict[str, Any]]]


def measure(run: Work) -> Sample:
    """Run ``run`` with a fresh probe; it returns its amount of work and any extra facts."""
    probe = Probe()
    work, extra = run(probe)
    if probe.seconds is None:
        raise RuntimeError("the run never entered its probe")
    return Sample(
        seconds=probe.seconds,
        work=work,
        rss_delta_kib=probe.rss_delta_kib,
        peak_reset=probe.peak_reset,
        extra=extra,
    )


@dataclass(kw_only=True)
class Side:
    """All the samples of one side (baseline or ours) of a benchmark."""

    label: str
    samples: list[Sample] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return statistics.median(s.rate for s in self.samples)

    @property
    def seconds(self) -> float:
        return statistics.median(s.seconds for s in self.samples)

    @property
    def rss_delta_mib(self) -> float:
        return statistics.median(s.rss_delta_kib for s in self.samples) / 1024

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "median_rate": self.rate,
            "median_seconds": self.seconds,
            "median_peak_rss_delta_mib": self.rss_delta_mib,
            "runs": [
                {
                    "seconds": s.seconds,
                    "work": s.work,
                    "rate": s.rate,
                    "peak_rss_delta_mib": s.rss_delta_kib / 1024,
                    "peak_rss_reset": s.peak_reset,
                    **s.extra,
                }
                for s in self.samples
            ],
        }


@dataclass(frozen=True)
class Target:
    """What a ratio should be: at least (``>=``) or below (``<``) ``value``."""

    op: Literal[">=", "<"]
    value: float

    def met(self, ratio: float) -> bool:
        return ratio >= self.value if self.op == ">=" else ratio < self.value

    def verdict(self, ratio: float) -> str:
        return f"target {self}: {'met' if self.met(ratio) else 'MISSED'}"

    def __str__(self) -> str:
        return f"{'≥' if self.op == '>=' else '<'} {self.value:g}"

    def as_dict(self, ratio: float) -> dict[str, Any]:
        return {"op": self.op, "value": self.value, "met": self.met(ratio)}


@dataclass(kw_only=True)
class Result:
    """A finished benchmark: both sides, the unit and the ratio ours/baseline."""

    name: str
    unit: str  # what `work` counts: "rows", "pages"
    params: dict[str, Any]
    baseline: Side
    ours: Side
    notes: list[str] = field(default_factory=list)
    target: Target | None = None  # what the ratio should reach, if anything

    @property
    def peak_reset(self) -> bool:
        """Whether every run's peak RSS was measured from a reset high-water mark."""
        return all(s.peak_reset for s in (*self.baseline.samples, *self.ours.samples))

    @property
    def ratio(self) -> float:
        """Ours over baseline, in throughput: above 1 means we are faster."""
        return self.ours.rate / self.baseline.rate if self.baseline.rate else 0.0

    def as_dict(self) -> dict[str, Any]:
        per_rep = [
            o.rate / b.rate if b.rate else 0.0
            for b, o in zip(self.baseline.samples, self.ours.samples, strict=True)
        ]
        return {
            "name": self.name,
            "unit": f"{self.unit}/s",
            "params": self.params,
            "ratio": self.ratio,
            "ratio_per_rep": per_rep,
            "baseline": self.baseline.as_dict(),
            "ours": self.ours.as_dict(),
            "peak_rss_reset": self.peak_reset,
            "target": self.target.as_dict(self.ratio) if self.target else None,
            "notes": self.notes,
        }


@dataclass(frozen=True, kw_only=True)
class Peak:
    """The peak resident memory of one process (``VmHWM``), in KiB."""

    label: str  # "parent", "render-1", ...
    pid: int
    kib: int

    @property
    def mib(self) -> float:
        return self.kib / 1024


@dataclass(kw_only=True)
class PeakResult:
    """A finished memory benchmark: the peak RSS of every process against a limit.

    The ratio is the largest peak over the limit (below 1: every process stayed under).
    """

    name: str
    unit: str  # what `work` counts
    params: dict[str, Any]
    work: int
    seconds: float
    peaks: list[Peak]
    limit_mib: float
    notes: list[str] = field(default_factory=list)
    peak_reset: bool = True  # a fresh process's VmHWM needs no reset; the parent's is reset

    @property
    def ratio(self) -> float:
        return max(p.mib for p in self.peaks) / self.limit_mib if self.peaks else 0.0

    @property
    def target(self) -> Target:
        return Target("<", 1.0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": "MiB (peak RSS, VmHWM)",
            "params": self.params,
            "ratio": self.ratio,
            "limit_mib": self.limit_mib,
            "seconds": self.seconds,
            "work": self.work,
            "rate": self.work / self.seconds if self.seconds > 0 else 0.0,
            "peaks": [{"label": p.label, "pid": p.pid, "peak_rss_mib": p.mib} for p in self.peaks],
            "peak_rss_reset": self.peak_reset,
            "target": self.target.as_dict(self.ratio),
            "notes": self.notes,
        }


Report = Result | PeakResult


def read_vmhwm_kib(pid: int | str = "self") -> int | None:
    """The peak resident set (``VmHWM`` in ``/proc/<pid>/status``) in KiB; None if unreadable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def alternate(
    name: str, reps: int, baseline: tuple[str, Work], ours: tuple[str, Work]
) -> tuple[Side, Side]:
    """Run baseline and ours one after the other, ``reps`` times, and collect the samples.

    The order flips every repetition (baseline first, then ours first, ...), so that
    whatever the first run of a pair leaves behind (heap, caches, a busy neighbour) does
    not always weigh on the same side.
    """
    base_side, our_side = rotate(name, reps, [("baseline", *baseline), ("ours", *ours)])
    return base_side, our_side


def rotate(name: str, reps: int, runs: list[tuple[str, str, Work]]) -> list[Side]:
    """Like :func:`alternate` for any number of sides, each given as (role, label, work).

    Every repetition runs each side once; the order is reversed every other repetition.
    """
    sides = [(role, Side(label=label), work) for role, label, work in runs]
    for rep in range(1, reps + 1):
        order = sides if rep % 2 else sides[::-1]
        for which, side, run in order:
            progress(f"{name}: rep {rep}/{reps} {which} ({side.label}) ...")
            sample = measure(run)
            side.samples.append(sample)
            progress(
                f"{name}: rep {rep}/{reps} {which}: {sample.work} in {sample.seconds:.2f} s"
                f" = {_figure(sample.rate)}/s, peak RSS +{sample.rss_delta_kib / 1024:.1f} MiB"
            )
    return [side for _, side, _ in sides]


def _figure(rate: float) -> str:
    """A rate with as many decimals as make sense: 183,916 or 22.2."""
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:,.1f}"


def _result_rows(r: Result) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for side_name, side in (("baseline", r.baseline), ("ours", r.ours)):
        rows.append(
            (
                r.name,
                f"{side_name}: {side.label}",
                f"{side.samples[0].work:,} {r.unit}",
                f"{side.seconds:.2f}",
                f"{_figure(side.rate)} {r.unit}/s",
                f"{side.rss_delta_mib:.1f} MiB",
            )
        )
    verdict = f"{r.ratio:.3f}" + (f" ({r.target.verdict(r.ratio)})" if r.target else "")
    rows.append((r.name, "ratio ours/baseline", "", "", verdict, ""))
    return rows


def _peak_rows(r: PeakResult) -> list[tuple[str, ...]]:
    rate = r.work / r.seconds if r.seconds > 0 else 0.0
    rows: list[tuple[str, ...]] = [
        (
            r.name,
            f"{p.label} (pid {p.pid}): peak RSS",
            f"{r.work:,} {r.unit}",
            f"{r.seconds:.2f}",
            f"{_figure(rate)} {r.unit}/s",
            f"{p.mib:.1f} MiB",
        )
        for p in r.peaks
    ]
    limit = f"ratio largest peak/{r.limit_mib:g} MiB"
    rows.append((r.name, limit, "", "", f"{r.ratio:.3f} ({r.target.verdict(r.ratio)})", ""))
    return rows


def table(results: list[Report]) -> str:
    """A plain-text table of the results, one row per side and one ratio per benchmark.

    For a memory benchmark (:class:`PeakResult`) there is one row per process, and the last
    column holds its absolute peak RSS rather than a difference.
    """
    header = ("benchmark", "side", "work", "median s", "median rate", "peak RSS Δ")
    rows: list[tuple[str, ...]] = [header]
    for r in results:
        rows.extend(_peak_rows(r) if isinstance(r, PeakResult) else _result_rows(r))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
