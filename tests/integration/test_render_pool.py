"""The render pool with real processes: limits hold, failures stay with their job."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from delivery.config import SHIPPED_TEMPLATES, RenderSettings
from delivery.errors import RenderError
from delivery.render.pool import RenderPool

T = TypeVar("T")
MB = 1024 * 1024

# -- jobs, run in the render processes (module level, so they pickle) -----------------------


def add(a: int, b: int = 0) -> int:
    return a + b


def pid() -> int:
    return os.getpid()


def nap(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def allocate(megabytes: int) -> int:
    return len(bytearray(megabytes * MB))


def allocate_gradually(megabytes: int) -> int:
    chunks = [bytearray(10 * MB) for _ in range(megabytes // 10)]
    return len(chunks)


def burn() -> None:
    while True:
        pass


def burn_ignoring_sigxcpu() -> None:
    signal.signal(signal.SIGXCPU, signal.SIG_IGN)
    burn()


def exit_at_once(code: int) -> None:
    os._exit(code)


def kill_self(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(10)


def fail(message: str) -> None:
    raise ValueError(message)


def fail_render(message: str) -> None:
    raise RenderError(message)


def unpicklable_result() -> object:
    return lambda: None


def peak_mb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmPeak:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmPeak in /proc/self/status")


def weasyprint_pdf() -> bytes:
    import weasyprint

    pdf = weasyprint.HTML(string="<p>x</p>").write_pdf()
    assert isinstance(pdf, bytes)
    return pdf


def chinese_pdf() -> tuple[bytes, int, int]:
    from delivery.render.pdf import html_to_pdf

    text = "罗莎，我们与你同在。世界各地的支持者都在等待你的自由。" * 40
    html = f'<html lang="zh"><body><p lang="zh-Hans">{text}</p></body></html>'
    pdf, pages = html_to_pdf(html, templates=SHIPPED_TEMPLATES)
    return pdf, pages, peak_mb()


# -- helpers --------------------------------------------------------------------------------


def in_pool(settings: RenderSettings, body: Callable[[RenderPool], Awaitable[T]]) -> T:
    async def main() -> T:
        async with RenderPool(settings) as pool:
            return await body(pool)

    return asyncio.run(main())


def child_pids() -> set[int]:
    """Processes whose parent is this one, zombies included, read from ``/proc``."""
    me = os.getpid()
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_bytes().rpartition(b")")[2].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        # the multiprocessing resource tracker lives as long as this process, by design
        if int(fields[1]) == me and b"resource_tracker" not in cmdline:
            found.add(int(stat.parent.name))
    return found


def alive(process_id: int) -> bool:
    try:
        state = Path(f"/proc/{process_id}/stat").read_bytes().rpartition(b")")[2].split()[0]
    except OSError:
        return False
    return state != b"Z"


@pytest.fixture(autouse=True)
def no_process_left() -> Iterator[None]:
    before = child_pids()
    yield
    gc.collect()
    assert child_pids() - before == set(), "render processes outlived their pool"
    assert multiprocessing.active_children() == []


def settings(**changes: float) -> RenderSettings:
    return RenderSettings(processes=1).model_copy(update=changes)


# -- results and concurrency ----------------------------------------------------------------


def test_a_job_returns_its_value() -> None:
    async def body(pool: RenderPool) -> list[int]:
        return [await pool.run("job", add, 2, 3), await pool.run("job", add, 2, b=5)]

    assert in_pool(settings(), body) == [5, 7]


def test_size_is_one_process_per_usable_cpu_by_default() -> None:
    assert RenderPool(RenderSettings(processes=0)).size == len(os.sched_getaffinity(0))
    assert RenderPool(RenderSettings(processes=3)).size == 3


def test_jobs_run_in_parallel_and_queue_when_all_are_busy() -> None:
    async def body(pool: RenderPool) -> tuple[float, list[int], list[int]]:
        await asyncio.gather(pool.run("warm", pid), pool.run("warm", pid))
        start = time.perf_counter()
        pair = await asyncio.gather(pool.run("a", nap, 1.0), pool.run("b", nap, 1.0))
        elapsed = time.perf_counter() - start
        queued = await asyncio.gather(*(pool.run(f"q{i}", nap, 0.05) for i in range(6)))
        return elapsed, list(pair), list(queued)

    elapsed, pair, queued = in_pool(settings(processes=2), body)
    assert elapsed < 1.8
    assert len(set(pair)) == 2
    assert set(queued) == set(pair), "six jobs shared the same two processes"


def test_processes_are_reused_between_jobs() -> None:
    async def body(pool: RenderPool) -> set[int]:
        return {await pool.run("job", pid) for _ in range(20)}

    assert len(in_pool(settings(), body)) == 1


# -- limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize("job", [allocate, allocate_gradually])
def test_memory_overrun_fails_the_job_and_the_pool_goes_on(job: Callable[[int], int]) -> None:
    async def body(pool: RenderPool) -> tuple[str, int, int]:
        with pytest.raises(RenderError) as caught:
            await pool.run("bundle b1", job, 600)
        return str(caught.value), await pool.run("next", allocate, 50), await pool.run("x", add, 1)

    message, allocated, value = in_pool(settings(memory_mb=300), body)
    assert message == "bundle b1: used more than 300 MB of memory"
    assert (allocated, value) == (50 * MB, 1)


def test_cpu_overrun_fails_the_job_and_the_pool_goes_on() -> None:
    async def body(pool: RenderPool) -> tuple[str, float, int]:
        start = time.perf_counter()
        with pytest.raises(RenderError) as caught:
            await pool.run("bundle b2", burn)
        return str(caught.value), time.perf_counter() - start, await pool.run("next", add, 4)

    message, elapsed, value = in_pool(settings(cpu_seconds=1), body)
    assert message == "bundle b2: used more than 1 s of CPU time"
    assert elapsed < 5
    assert value == 4


def test_a_job_that_ignores_sigxcpu_is_killed_at_the_hard_limit() -> None:
    async def body(pool: RenderPool) -> tuple[str, int]:
        with pytest.raises(RenderError) as caught:
            await pool.run("bundle b3", burn_ignoring_sigxcpu)
        return str(caught.value), await pool.run("next", add, 5)

    message, value = in_pool(settings(cpu_seconds=1, wall_seconds=30), body)
    assert message == "bundle b3: used more than 1 s of CPU time"
    assert value == 5


def test_wall_clock_overrun_kills_and_replaces_the_process() -> None:
    async def body(pool: RenderPool) -> tuple[int, str, float, int]:
        first = await pool.run("warm", pid)
        start = time.perf_counter()
        with pytest.raises(RenderError) as caught:
            await pool.run("bundle b4", nap, 30)
        elapsed = time.perf_counter() - start
        return first, str(caught.value), elapsed, await pool.run("next", pid)

    first, message, elapsed, after = in_pool(settings(wall_seconds=1), body)
    assert message == "bundle b4: took longer than 1 s"
    assert elapsed < 3
    assert after != first
    assert not alive(first)


# -- crashes and errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job", "arg", "expected"),
    [
        (exit_at_once, 3, "the render process died (exit code 3)"),
        (kill_self, signal.SIGKILL, "the render process died (signal 9)"),
        (kill_self, signal.SIGSEGV, "the render process died (signal 11)"),
    ],
)
def test_a_dying_process_fails_its_job_and_is_replaced(
    job: Callable[[int], None], arg: int, expected: str
) -> None:
    async def body(pool: RenderPool) -> tuple[str, int]:
        with pytest.raises(RenderError) as caught:
            await pool.run("bundle b5", job, arg)
        return str(caught.value), await pool.run("next", add, 6)

    assert in_pool(settings(), body) == (f"bundle b5: {expected}", 6)


def test_a_process_killed_while_idle_is_replaced_unseen() -> None:
    async def body(pool: RenderPool) -> tuple[int, int]:
        first = await pool.run("warm", pid)
        os.kill(first, signal.SIGKILL)
        while alive(first):
            await asyncio.sleep(0.01)
        return first, await pool.run("next", pid)

    first, after = in_pool(settings(), body)
    assert after != first


def test_exceptions_come_back_as_render_errors_with_their_message() -> None:
    async def body(pool: RenderPool) -> list[RenderError]:
        errors = []
        for fn, text in ((fail, "bad value"), (fail_render, "template broke")):
            with pytest.raises(RenderError) as caught:
                await pool.run("bundle b6", fn, text)
            errors.append(caught.value)
        with pytest.raises(RenderError) as caught:
            await pool.run("bundle b6", fail_render, "bundle b6: already labelled")
        errors.append(caught.value)
        return errors

    errors = in_pool(settings(), body)
    assert [str(e) for e in errors] == [
        "bundle b6: ValueError: bad value",
        "bundle b6: template broke",
        "bundle b6: already labelled",
    ]
    assert "in fail" in errors[0].__notes__[0], "the worker's traceback rides along"


def test_jobs_that_cannot_cross_the_pipe_fail_alone() -> None:
    async def body(pool: RenderPool) -> tuple[str, str, int]:
        with pytest.raises(RenderError) as sent:
            await pool.run("bundle b7", lambda: None)
        with pytest.raises(RenderError) as returned:
            await pool.run("bundle b7", unpicklable_result)
        return str(sent.value), str(returned.value), await pool.run("next", add, 7)

    sent, returned, value = in_pool(settings(), body)
    assert sent.startswith("bundle b7: the job cannot be sent to a render process: ")
    assert returned.startswith("bundle b7: ")
    assert "result cannot be sent back" in returned
    assert value == 7


def test_a_cancelled_job_kills_its_process_and_the_pool_goes_on() -> None:
    async def body(pool: RenderPool) -> tuple[int, int]:
        first = await pool.run("warm", pid)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pool.run("bundle b8", nap, 30), 0.5)
        return first, await pool.run("next", pid)

    first, after = in_pool(settings(), body)
    assert after != first
    assert not alive(first)


def test_run_outside_the_context_is_refused() -> None:
    with pytest.raises(RuntimeError, match="async with"):
        asyncio.run(RenderPool(settings()).run("job", add, 1))


def test_leaving_the_context_ends_running_jobs() -> None:
    async def main() -> tuple[str, float]:
        start = time.perf_counter()
        async with RenderPool(settings(processes=2)) as pool:
            job = asyncio.create_task(pool.run("bundle b9", nap, 30))
            await pool.run("other", add, 1)
            await asyncio.sleep(0.2)
        with pytest.raises(RenderError) as caught:
            await job
        return str(caught.value), time.perf_counter() - start

    message, elapsed = asyncio.run(main())
    assert message == "bundle b9: the render pool is closed"
    assert elapsed < 5


# -- WeasyPrint under the default limits ----------------------------------------------------


def test_weasyprint_renders_under_the_default_limits() -> None:
    async def body(pool: RenderPool) -> tuple[bytes, tuple[bytes, int, int]]:
        return await pool.run("plain", weasyprint_pdf), await pool.run("cjk", chinese_pdf)

    plain, (cjk, pages, peak) = in_pool(RenderSettings(processes=1), body)
    assert plain.startswith(b"%PDF-")
    assert cjk.startswith(b"%PDF-")
    assert pages >= 1
    assert peak < RenderSettings().memory_mb / 2, f"a CJK page took {peak} MB of address space"
