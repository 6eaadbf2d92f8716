"""merge: a bundle laid out in volumes by Merger and the render pool, three ways.

* ``merge``: Merger with ONE render process against raw WeasyPrint laying out the same
  bundle as one document in this process (pages/s of each; target ours/baseline ≥ 0.9).
* ``merge-scaling``: the same merge with two render processes against one (pages/s;
  target ≥ 1.7 on two cores).
* ``merge-memory``: a larger bundle through Merger with the default settings; the peak
  resident memory (``VmHWM``) of every render process and of this process (target: each
  below 500 MiB).

Render processes are started (and warmed up with a small merge) outside the timing, as a
long-lived pool would be; only ``Merger.merge`` is timed. It groups the messages into
blocks, checks the fonts, renders the templates of every volume, lays out the volumes in
the render processes, renders the footer pages, and joins and stamps everything with
pikepdf into the final file.

Nothing here starts a process at import: the pool is started by :func:`run` only.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_render import authority_document
from bench_render import baseline as weasyprint_baseline
from harness import (
    Peak,
    PeakResult,
    Probe,
    Report,
    Result,
    Side,
    Target,
    measure,
    progress,
    read_vmhwm_kib,
    release_free_memory,
    rotate,
)

from delivery.config import RenderSettings, Settings
from delivery.render import grouping, volumes
from delivery.render.bundle import BundleDocument, render_bundle_html
from delivery.render.merge import LINES_PER_PAGE, Merger, plan_volumes
from delivery.render.pool import RenderPool

# Sizes in messages for the first authority of the demo campaign. Its bundle is almost all
# signatory and name lists (no personal notes are addressed to an authority), about 170
# messages to a page.
DEFAULT_MESSAGES = 60_000  # about 340 pages, 8 volumes of 50 pages
QUICK_MESSAGES = 30_000  # about 175 pages, 4 volumes of 50 pages
VOLUME_PAGES = 50  # for the throughput and scaling runs, so that there are several volumes
MEMORY_MESSAGES = 100_000  # about 565 pages, 8 volumes at the default 80 pages
QUICK_MEMORY_MESSAGES = 20_000  # about 115 pages, 2 volumes at the default 80 pages
WARMUP_MESSAGES = 300  # a small bundle that starts every render process's WeasyPrint

SPEED_TARGET = Target(">=", 0.9)
SCALING_TARGET = Target(">=", 1.7)
MEMORY_LIMIT_MIB = 500.0


def run(*, quick: bool, reps: int, work_dir: Path) -> list[Report]:
    templates = Settings(outbox=str(work_dir)).templates
    warm_doc = authority_document(WARMUP_MESSAGES)

    memory = _memory(quick=quick, templates=templates, warm_doc=warm_doc, work_dir=work_dir)
    release_free_memory()

    count = QUICK_MESSAGES if quick else DEFAULT_MESSAGES
    doc = authority_document(count)
    started = time.perf_counter()
    html = render_bundle_html(doc, templates)
    html_seconds = time.perf_counter() - started
    planned = _planned_volumes(doc, VOLUME_PAGES)
    progress(
        f"merge: {count:,} messages for {doc.case.slug}/{doc.recipient.slug},"
        f" {len(html):,} characters of HTML as one document ({html_seconds:.2f} s to build),"
        f" {planned} volumes of about {VOLUME_PAGES} pages"
    )

    progress("merge: warm-up, WeasyPrint in this process on a small bundle")
    warm_html = render_bundle_html(warm_doc, templates)
    measure(lambda probe: baseline(warm_html, templates, probe))

    one = RenderSettings(processes=1, volume_pages=VOLUME_PAGES)
    two = RenderSettings(processes=2, volume_pages=VOLUME_PAGES)
    base_side, one_side, two_side = rotate(
        "merge",
        reps,
        [
            (
                "baseline",
                "WeasyPrint, one document, in this process",
                lambda probe: baseline(html, templates, probe),
            ),
            (
                "ours",
                "Merger, 1 render process",
                lambda probe: merge_run(doc, templates, one, work_dir, warm_doc, probe),
            ),
            (
                "ours",
                "Merger, 2 render processes",
                lambda probe: merge_run(doc, templates, two, work_dir, warm_doc, probe),
            ),
        ],
    )
    params = {
        "messages": count,
        "recipient": f"{doc.case.slug}/{doc.recipient.slug}",
        "volume_pages": VOLUME_PAGES,
        "volumes_planned": planned,
        "html_chars": len(html),
        "html_seconds": html_seconds,
        "reps": reps,
        "cpus": os.cpu_count(),
    }
    speed = Result(
        name="merge",
        unit="pages",
        params=params,
        baseline=base_side,
        ours=one_side,
        target=SPEED_TARGET,
        notes=_speed_notes(base_side, one_side, html_seconds),
    )
    scaling = Result(
        name="merge-scaling",
        unit="pages",
        params=params,
        baseline=one_side,
        ours=two_side,
        target=SCALING_TARGET,
        notes=_scaling_notes(one_side, two_side),
    )
    return [speed, scaling, memory]


# -- what else runs on the machine -------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (``/proc/stat``; idle and iowait not)."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / _TICKS


def _process_seconds(pid: int) -> float:
    """CPU seconds (user and system) that process ``pid`` used so far; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS
    except (OSError, ValueError, IndexError):
        return 0.0


class CpuWatch:
    """How much CPU the rest of the machine used while a run ran, in cores on average.

    The machine is shared: other processes compete with the render processes for the
    cores, which weighs most on the two-process run. Ours is this process plus ``pids``.
    """

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.other_cores = 0.0
        self._start = (0.0, 0.0, 0.0)

    def _now(self) -> tuple[float, float, float]:
        times = os.times()
        own = times.user + times.system + sum(_process_seconds(pid) for pid in self.pids)
        return time.perf_counter(), _machine_busy_seconds(), own

    def __enter__(self) -> CpuWatch:
        self._start = self._now()
        return self

    def __exit__(self, *exc: object) -> None:
        (wall0, busy0, own0), (wall1, busy1, own1) = self._start, self._now()
        wall = wall1 - wall0
        self.other_cores = max(0.0, (busy1 - busy0) - (own1 - own0)) / wall if wall > 0 else 0.0


def baseline(html: str, templates: Path, probe: Probe) -> tuple[int, dict[str, Any]]:
    """Raw WeasyPrint on the one-document HTML, as in the render benchmark."""
    with CpuWatch([]) as watch:
        pages, extra = weasyprint_baseline(html, templates, probe)
    return pages, {**extra, "other_cores": watch.other_cores}


# -- one run of Merger ---------------------------------------------------------------------


def merge_run(
    doc: BundleDocument,
    templates: Path,
    settings: RenderSettings,
    work_dir: Path,
    warm_doc: BundleDocument,
    probe: Probe,
) -> tuple[int, dict[str, Any]]:
    """Merge ``doc`` with a fresh, warmed-up pool; only ``Merger.merge`` is timed."""
    with tempfile.TemporaryDirectory(prefix="bench-merge-", dir=work_dir) as tmp:
        return asyncio.run(_merge(doc, templates, settings, Path(tmp), warm_doc, probe))


async def _merge(
    doc: BundleDocument,
    templates: Path,
    settings: RenderSettings,
    folder: Path,
    warm_doc: BundleDocument,
    probe: Probe,
) -> tuple[int, dict[str, Any]]:
    started = time.perf_counter()
    async with RenderPool(settings) as pool:
        await _warm_up(pool, templates, settings, folder / "warm-up", warm_doc)
        ready = time.perf_counter() - started
        pids = worker_pids(pool)
        merger = Merger(pool, templates, settings, folder / "out")
        with CpuWatch(pids) as watch, probe:
            merged = await merger.merge(doc)
        parent_kib = read_vmhwm_kib()  # reset by the probe as it started
        workers = [(pid, read_vmhwm_kib(pid)) for pid in pids]  # before the pool closes
        later = worker_pids(pool)
        size = merged.path.stat().st_size
    return merged.pages, {
        "volumes": merged.volumes,
        "pdf_bytes": size,
        "processes": pool.size,
        "pool_ready_seconds": ready,
        "parent_peak_rss_mib": (parent_kib or 0) / 1024,
        "worker_peak_rss_mib": [(kib or 0) / 1024 for _, kib in workers],
        "worker_pids": pids,
        "workers_replaced": sorted(set(later) - set(pids)),
        "other_cores": watch.other_cores,
    }


async def _warm_up(
    pool: RenderPool,
    templates: Path,
    settings: RenderSettings,
    folder: Path,
    warm_doc: BundleDocument,
) -> None:
    """Every render process lays out a small bundle; then one small merge end to end.

    The volumes are sent together, one per process, so that each process imports
    WeasyPrint and loads its fonts; the merge builds this process's font coverage and
    templates and runs the footer and join steps once.
    """
    folder.mkdir(parents=True, exist_ok=True)
    html = render_bundle_html(warm_doc, templates)
    await asyncio.gather(
        *(
            pool.run("warm-up", volumes.render_volume, html, templates, folder / f"w{n}.pdf")
            for n in range(pool.size)
        )
    )
    merged = await Merger(pool, templates, settings, folder).merge(warm_doc)
    merged.path.unlink(missing_ok=True)


def worker_pids(pool: RenderPool) -> list[int]:
    """The pids of the pool's render processes.

    The pool does not expose them; read its workers' processes, and where that fails, take
    the children of this process that multiprocessing spawned (not its resource tracker).
    """
    workers = getattr(pool, "_workers", None)
    try:
        pids = [w.process.pid for w in workers or () if w.process is not None]
    except AttributeError:
        pids = []
    if pids and all(isinstance(pid, int) for pid in pids):
        return pids
    return spawned_children()


def spawned_children() -> list[int]:
    """Pids of this process's children that run ``multiprocessing.spawn``."""
    me = os.getpid()
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rpartition(b")")[2].split()[1])
        if ppid == me and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


# -- peak memory -----------------------------------------------------------------------------


def _memory(
    *, quick: bool, templates: Path, warm_doc: BundleDocument, work_dir: Path
) -> PeakResult:
    """One merge of a large bundle with the default render settings; peaks of every process.

    Runs before the throughput runs so this process's peak is not raised by what the
    allocator kept from laying out a whole bundle here.
    """
    count = QUICK_MEMORY_MESSAGES if quick else MEMORY_MESSAGES
    settings = RenderSettings()
    doc = authority_document(count)
    planned = _planned_volumes(doc, settings.volume_pages)
    progress(
        f"merge-memory: {count:,} messages, default settings (volume_pages"
        f" {settings.volume_pages}, processes {settings.processes or 'one per core'}),"
        f" {planned} volume(s) planned"
    )
    release_free_memory()
    sample = measure(lambda probe: merge_run(doc, templates, settings, work_dir, warm_doc, probe))
    extra = sample.extra
    pids: list[int] = extra["worker_pids"]
    peaks = [
        Peak(label=f"render-{n}", pid=pid, kib=round(mib * 1024))
        for n, (pid, mib) in enumerate(zip(pids, extra["worker_peak_rss_mib"], strict=True), 1)
    ]
    peaks.append(
        Peak(label="parent", pid=os.getpid(), kib=round(extra["parent_peak_rss_mib"] * 1024))
    )
    progress(
        f"merge-memory: {sample.work} pages in {sample.seconds:.2f} s, peaks "
        + ", ".join(f"{p.label} {p.mib:.0f} MiB" for p in peaks)
    )
    result = PeakResult(
        name="merge-memory",
        unit="pages",
        params={
            "messages": count,
            "recipient": f"{doc.case.slug}/{doc.recipient.slug}",
            "volume_pages": settings.volume_pages,
            "processes": extra["processes"],
            "volumes": extra["volumes"],
            "memory_mb_limit_per_process": settings.memory_mb,
            "pdf_bytes": extra["pdf_bytes"],
            "parent_peak_rss_delta_mib": sample.rss_delta_kib / 1024,
            "other_cores": extra["other_cores"],
            "runs": 1,
        },
        work=sample.work,
        seconds=sample.seconds,
        peaks=peaks,
        limit_mib=MEMORY_LIMIT_MIB,
        peak_reset=sample.peak_reset,
    )
    result.notes.append(
        f"{count:,} messages in {extra['volumes']} volume(s) of up to {settings.volume_pages}"
        f" pages over {extra['processes']} render process(es): {sample.work} pages in"
        f" {sample.seconds:.1f} s; render processes' peaks include their warm-up; the"
        " parent's peak is from the start of the merge and includes the messages it holds"
    )
    if extra["workers_replaced"]:
        result.notes.append(
            f"render processes were replaced during the merge: {extra['workers_replaced']};"
            " the peaks of the ones that ended are not counted"
        )
    return result


# -- notes -------------------------------------------------------------------------------------


def _planned_volumes(doc: BundleDocument, volume_pages: int) -> int:
    blocks = grouping.build_blocks(doc.messages, doc.recipient.kind)
    return len(plan_volumes(blocks, target_lines=volume_pages * LINES_PER_PAGE))


def _speed_notes(base: Side, ours: Side, html_seconds: float) -> list[str]:
    base_pages, our_pages = base.samples[-1].work, ours.samples[-1].work
    extra = ours.samples[-1].extra
    notes = [
        f"pages: baseline {base_pages} (one document), ours {our_pages} in"
        f" {extra['volumes']} volumes (each volume starts on a new page)",
        f"building the one-document HTML (render_bundle_html, outside the baseline's timing)"
        f" took {html_seconds:.2f} s; ours does the same grouping and templating inside its time",
    ]
    notes.append(_worker_peaks("1 process", ours))
    notes.append(_others(base, ours))
    return notes


def _scaling_notes(one: Side, two: Side) -> list[str]:
    ready = [s.extra["pool_ready_seconds"] for s in (*one.samples, *two.samples)]
    return [
        _worker_peaks("2 processes", two),
        f"starting and warming up a pool took {min(ready):.1f}-{max(ready):.1f} s per run,"
        " outside the timing",
        _others(one, two),
    ]


def _others(base: Side, ours: Side) -> str:
    """What the rest of the machine used during the timed runs of both sides."""

    def cores(side: Side) -> str:
        return ", ".join(f"{s.extra['other_cores']:.2f}" for s in side.samples)

    return (
        f"other processes on this machine used on average [{cores(base)}] cores during the"
        f" baseline runs and [{cores(ours)}] during ours (of {os.cpu_count()})"
    )


def _worker_peaks(what: str, side: Side) -> str:
    peaks = [mib for s in side.samples for mib in s.extra["worker_peak_rss_mib"]]
    parents = [s.extra["parent_peak_rss_mib"] for s in side.samples]
    return (
        f"{what}: render process peak RSS up to {max(peaks):.0f} MiB, this process"
        f" up to {max(parents):.0f} MiB during the merge"
    )
