"""Render processes under kernel limits: a misbehaving job fails alone, the pool goes on.

WeasyPrint lays out text that supporters wrote, so a message can make it run for ever,
eat memory or crash. Each job therefore runs in a separate worker process, and
:meth:`RenderPool.run` turns every way a job can go wrong into a :class:`RenderError`
that names the job and what happened. The pool is not a security sandbox: the workers
run as the same user with the same files; it is a fence around time and memory.

Design:

* Own processes, not a ``ProcessPoolExecutor``: the parent must know which process runs
  which job, to kill exactly that one when the job takes too long. ``size`` processes
  (``processes``, or one per CPU this process may run on) are started with the ``spawn``
  method at ``__aenter__``; idle ones wait in a queue, so jobs beyond ``size`` wait their
  turn. A process serves job after job: its start (about 0.15 s) and the WeasyPrint
  import of its first job (about 0.45 s) are paid once per process, not per job.
* Each process talks to the parent over its own socket pair, which the parent reads and
  writes with the event loop's non-blocking socket calls: no thread waits for a busy
  process, and a stuck one cannot block the loop. End of file on the socket means the
  process is gone, since the parent keeps no copy of the child's end.
* Memory: ``RLIMIT_AS`` (``memory_mb``) in each process. It counts address space, not
  resident memory: thread stacks and malloc arenas of the threads Pango starts count in
  full. An allocation beyond it raises ``MemoryError``, which the process reports before
  it retires; C code that cannot allocate may crash instead (a death by signal).
* CPU time: ``RLIMIT_CPU`` counts over the whole life of a process, so before each job
  the process sets its soft limit to the CPU time used so far plus ``cpu_seconds``. The
  kernel sends ``SIGXCPU`` there; its handler raises an exception in the job, and the
  process reports the overrun. A hard limit, set once at start (it can never be raised
  again), kills with ``SIGKILL`` a job that does not stop (stuck in C code, or catching
  the exception); the parent reads the job's CPU time in ``/proc`` to tell that death
  from a crash. The hard limit leaves room for ``cpu_seconds`` of earlier jobs; a
  process that has used that much retires after its job and is replaced.
* After a CPU or memory overrun the process also retires: the exception may have
  landed anywhere, even inside a library's caches or locks, and a fresh process costs
  half a second once in a while.
* Wall clock: the parent waits at most ``wall_seconds`` for the reply, then kills that
  process with ``SIGKILL``. A process that died, was killed, or retired is reaped and
  replaced at once, so the replacement starts while nothing waits for it; one found
  dead while idle is replaced before it gets a job.
* A job cancelled by its caller kills its process too: what it was doing is unknown.
* Shutdown: the parent closes every pipe (an idle process exits on that), waits a
  short grace, then terminates and at last kills what is left, and reaps every process.
* Workers ignore ``SIGINT``, so Ctrl-C in a terminal reaches the parent alone and fails
  no render, and they never write core files full of supporters' text.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import pickle
import resource
import signal
import socket
import struct
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess
from types import FrameType, TracebackType
from typing import NamedTuple, ParamSpec, TypeVar, cast

from delivery import faults
from delivery.config import RenderSettings
from delivery.errors import RenderError

P = ParamSpec("P")
R = TypeVar("R")

_GRACE_SECONDS = 2.0  # for a process to exit on its own before it is signalled
_START_SECONDS = 120.0  # for a new process to be ready for its first job
_CPU_GRACE_SECONDS = 2  # between SIGXCPU and SIGKILL, at the least
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_MEGABYTE = 1024 * 1024
_INT32_MAX = 0x7FFFFFFF

_job_running = False  # in a render process: a job is running and SIGXCPU may stop it


class _CpuTimeExceededError(BaseException):
    """Raised in a render process by SIGXCPU: the job used up its CPU time."""


class _Failure(NamedTuple):
    """An exception a job raised, as text that always crosses the pipe."""

    kind: str
    message: str
    render_error: bool
    trace: str


class _Reply(NamedTuple):
    """What a render process sends back: ``ready``, ``ok``, ``cpu``, ``memory``, ``error``."""

    kind: str
    value: object = None
    retire: bool = False


class _LostError(Exception):
    """A job failed in the parent's view: its process died, hung, or could not start."""


# -- in the render process ----------------------------------------------------------------


def _serve(conn: Connection, memory_bytes: int, cpu_seconds: int) -> None:
    """Body of a render process: set the limits, then run jobs until the parent hangs up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGXCPU, _on_sigxcpu)
    _set_limit(resource.RLIMIT_CORE, 0)
    _set_limit(resource.RLIMIT_AS, memory_bytes)
    cpu_cap = _set_limit(
        resource.RLIMIT_CPU, math.ceil(_cpu_used()) + 2 * cpu_seconds + _CPU_GRACE_SECONDS
    )
    with conn:
        if not _send(conn, _Reply("ready")):
            return
        while True:
            try:
                payload = conn.recv_bytes()
            except (EOFError, OSError):
                return
            reply = _attempt(payload, cpu_seconds, cpu_cap)
            spent = math.ceil(_cpu_used()) + cpu_seconds + _CPU_GRACE_SECONDS > cpu_cap
            if spent or reply.kind in ("cpu", "memory"):
                reply = reply._replace(retire=True)
            if not _send(conn, reply) or reply.retire:
                return


def _set_limit(which: int, value: int) -> int:
    """Lower a resource limit (soft and hard) to ``value``, or to the hard limit if lower."""
    hard = resource.getrlimit(which)[1]
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))
    return value


def _cpu_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _on_sigxcpu(signum: int, frame: FrameType | None) -> None:
    global _job_running
    if _job_running:
        _job_running = False  # once per job; a job that goes on meets the hard limit
        raise _CpuTimeExceededError


def _attempt(payload: bytes, cpu_seconds: int, cpu_cap: int) -> _Reply:
    """Run one job under a fresh CPU-time allowance; every outcome becomes a reply."""
    try:
        signal.signal(signal.SIGXCPU, _on_sigxcpu)  # again, in case a job changed it
        allowance = min(math.ceil(_cpu_used()) + cpu_seconds, cpu_cap)
        resource.setrlimit(resource.RLIMIT_CPU, (allowance, cpu_cap))
        return _Reply("ok", _call(payload))
    except _CpuTimeExceededError:
        return _Reply("cpu")
    except MemoryError:
        return _Reply("memory")
    except BaseException as exc:
        return _Reply("error", _failure(exc))


def _call(payload: bytes) -> object:
    """The job itself; SIGXCPU can stop it only while it runs here."""
    global _job_running
    _job_running = True
    try:
        fn, args, kwargs = pickle.loads(payload)  # noqa: S301  # written by the parent
        return fn(*args, **kwargs)
    finally:
        _job_running = False


def _failure(exc: BaseException, context: str = "") -> _Failure:
    try:
        message = str(exc)
    except Exception:
        message = "(the message could not be read)"
    trace = "".join(traceback.format_exception(exc))
    return _Failure(type(exc).__qualname__, context + message, isinstance(exc, RenderError), trace)


def _send(conn: Connection, reply: _Reply) -> bool:
    """Send ``reply``, or an error if it cannot be pickled; False if the parent is gone."""
    try:
        data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
    except MemoryError:
        data = pickle.dumps(_Reply("memory", retire=True))
    except Exception as exc:
        failure = _failure(exc, "its result cannot be sent back: ")
        data = pickle.dumps(_Reply("error", failure, retire=reply.retire))
    try:
        conn.send_bytes(data)
    except OSError:
        return False
    return True


# -- in the parent ------------------------------------------------------------------------


def _cpu_time(pid: int | None) -> float | None:
    """CPU seconds a child has used, from ``/proc`` (readable until it is reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    except (OSError, ValueError, IndexError):
        return None


async def _send_frame(sock: socket.socket, data: bytes) -> None:
    """Write ``data`` as :meth:`Connection.recv_bytes` in the render process reads it."""
    loop = asyncio.get_running_loop()
    size = len(data)
    header = struct.pack("!i", size) if size <= _INT32_MAX else struct.pack("!iQ", -1, size)
    await loop.sock_sendall(sock, header)
    await loop.sock_sendall(sock, data)


async def _recv_frame(sock: socket.socket) -> bytearray:
    """Read one message that :meth:`Connection.send_bytes` wrote; EOFError if none comes."""
    (size,) = struct.unpack("!i", await _recv_exactly(sock, 4))
    if size == -1:
        (size,) = struct.unpack("!Q", await _recv_exactly(sock, 8))
    return await _recv_exactly(sock, size)


async def _exchange(sock: socket.socket, payload: bytes) -> bytearray:
    await _send_frame(sock, payload)
    faults.point("render-started")  # crash tests: the parent dies while a process renders
    return await _recv_frame(sock)


async def _recv_exactly(sock: socket.socket, size: int) -> bytearray:
    loop = asyncio.get_running_loop()
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        count = await loop.sock_recv_into(sock, view[received:])
        if count == 0:
            raise EOFError("the render process closed its end")
        received += count
    return buffer


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _readable(fd: int, timeout: float | None) -> bool:
    """Wait until ``fd`` can be read (data or end of file); False after ``timeout``."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, _settle, ready)
    try:
        await asyncio.wait_for(ready, timeout)
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
    return True


async def _reap(process: SpawnProcess, *, terminate: bool = False) -> int | None:
    """Give ``process`` a grace to end, then signal it; reap it and return its exit code."""
    steps = (process.terminate, process.kill) if terminate else (process.kill,)
    try:
        for step in steps:
            if await _readable(process.sentinel, _GRACE_SECONDS):
                break
            step()
        else:
            await _readable(process.sentinel, None)
    except BaseException:  # cancelled: finish without waiting
        process.kill()
        raise
    finally:
        process.join()
        code = process.exitcode
        process.close()
    return code


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class _Worker:
    """One slot of the pool: a render process, replaced whenever it ends."""

    def __init__(self, context: SpawnContext, settings: RenderSettings, name: str) -> None:
        self.context = context
        self.settings = settings
        self.name = name
        self.closing = False
        self.busy = False
        self.process: SpawnProcess | None = None
        self.sock: socket.socket | None = None
        self.ready = False

    def start(self) -> None:
        parent_end, child_sock = socket.socketpair()
        child_end = Connection(child_sock.detach())
        process = self.context.Process(
            target=_serve,
            args=(child_end, self.settings.memory_mb * _MEGABYTE, self.settings.cpu_seconds),
            name=self.name,
            daemon=True,
        )
        try:
            process.start()
        except BaseException:
            parent_end.close()
            raise
        finally:
            child_end.close()
        parent_end.setblocking(False)
        self.process, self.sock, self.ready = process, parent_end, False

    async def execute(self, payload: bytes) -> _Reply:
        """Run a pickled job; raise :class:`_LostError` if its process dies or overruns."""
        self.busy = True
        try:
            return await self._execute(payload)
        finally:
            self.busy = False

    async def _execute(self, payload: bytes) -> _Reply:
        sock, process = await self._prepare()
        before = _cpu_time(process.pid)
        try:
            data = await asyncio.wait_for(_exchange(sock, payload), self.settings.wall_seconds)
        except TimeoutError:
            await self.replace(kill=True)
            raise _LostError(f"took longer than {_seconds(self.settings.wall_seconds)} s") from None
        except (EOFError, OSError):
            raise _LostError(await self._lost(before)) from None
        try:
            reply = pickle.loads(data)  # noqa: S301  # from a render process this pool started
        except Exception as exc:
            raise _LostError(f"its result could not be read: {type(exc).__name__}: {exc}") from exc
        if reply.retire:
            await self.replace()
        return cast(_Reply, reply)

    async def _prepare(self) -> tuple[socket.socket, SpawnProcess]:
        """The process for the next job: alive (replaced if it died idle) and ready."""
        if self.process is None or not self.process.is_alive():
            await self.replace()
        sock, process = self.sock, self.process
        if self.closing or sock is None or process is None:
            raise _LostError("the render pool is closed")
        if not self.ready:
            try:
                await asyncio.wait_for(_recv_frame(sock), _START_SECONDS)
            except TimeoutError:
                await self.replace(kill=True)
                limit = _seconds(_START_SECONDS)
                raise _LostError(f"the render process did not start in {limit} s") from None
            except (EOFError, OSError):
                code = await self.replace()
                if self.closing:
                    raise _LostError("the render pool is closed") from None
                raise _LostError(f"the render process could not start ({_status(code)})") from None
            self.ready = True
        return sock, process

    async def _lost(self, before: float | None) -> str:
        """What ended the process that ran a job; the process is replaced."""
        after = _cpu_time(self.process.pid if self.process else None)
        code = await self.replace()
        if self.closing:
            return "the render pool is closed"
        used = after - before if after is not None and before is not None else 0.0
        if code in (-signal.SIGKILL, -signal.SIGXCPU) and used >= self.settings.cpu_seconds:
            return f"used more than {self.settings.cpu_seconds} s of CPU time"
        return f"the render process died ({_status(code)})"

    async def replace(self, *, kill: bool = False, terminate: bool = False) -> int | None:
        """End the process (killed at once if ``kill``), reap it, start the next one."""
        process, sock = self.process, self.sock
        self.process, self.sock, self.ready = None, None, False
        if sock is not None:
            sock.close()
        code = None
        if process is not None:
            if kill:
                process.kill()
            code = await _reap(process, terminate=terminate)
        if not self.closing:
            self.start()
        return code

    def abandon(self) -> None:
        """Kill the process at once, without awaiting (its job was cancelled)."""
        process, sock = self.process, self.sock
        self.process, self.sock, self.ready = None, None, False
        if sock is not None:
            sock.close()
        if process is not None:
            process.kill()
            process.join()
            process.close()
        if not self.closing:
            self.start()


def _status(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        return f"signal {-code}"
    return f"exit code {code}"


def _prefixed(label: str, detail: str) -> str:
    return detail if detail.startswith(f"{label}: ") else f"{label}: {detail}"


class RenderPool:
    """Worker processes for rendering, each under kernel limits.

    A crash or an overrun fails one job, never the pool.
    """

    def __init__(self, settings: RenderSettings) -> None:
        self._settings = settings
        self._size = settings.processes or len(os.sched_getaffinity(0)) or 1
        self._workers: list[_Worker] = []
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._open = False

    @property
    def size(self) -> int:
        return self._size

    async def __aenter__(self) -> RenderPool:
        if self._open or self._workers:
            raise RuntimeError("a RenderPool is entered once")
        context = multiprocessing.get_context("spawn")
        try:
            for number in range(1, self._size + 1):
                worker = _Worker(context, self._settings, f"render-{number}")
                self._workers.append(worker)
                worker.start()
                self._idle.put_nowait(worker)
        except BaseException:
            await self._stop()
            raise
        self._open = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._open = False
        for worker in self._workers:
            worker.closing = True
            if worker.busy and worker.process is not None:
                worker.process.kill()
        try:
            for _ in self._workers:
                await self._idle.get()  # jobs still running hand their slot back first
        finally:
            await self._stop()

    async def _stop(self) -> None:
        for worker in self._workers:
            worker.closing = True
        await asyncio.gather(*(worker.replace(terminate=True) for worker in self._workers))

    async def run(self, label: str, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """``fn(*args, **kwargs)`` in a render process; any failure is a :class:`RenderError`.

        ``fn`` must be a module-level function and its arguments and result picklable.
        """
        if not self._open:
            raise RuntimeError("RenderPool.run() outside 'async with'")
        try:
            payload = pickle.dumps((fn, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            detail = f"the job cannot be sent to a render process: {type(exc).__name__}: {exc}"
            raise RenderError(f"{label}: {detail}") from exc
        worker = await self._idle.get()
        try:
            reply = await worker.execute(payload)
        except _LostError as failed:
            raise RenderError(_prefixed(label, str(failed))) from None
        except BaseException:
            worker.abandon()
            raise
        finally:
            self._idle.put_nowait(worker)
        return cast(R, self._value(label, reply))

    def _value(self, label: str, reply: _Reply) -> object:
        if reply.kind == "ok":
            return reply.value
        if reply.kind == "cpu":
            raise RenderError(f"{label}: used more than {self._settings.cpu_seconds} s of CPU time")
        if reply.kind == "memory":
            raise RenderError(f"{label}: used more than {self._settings.memory_mb} MB of memory")
        failure = reply.value
        if not isinstance(failure, _Failure):
            raise RenderError(f"{label}: the render process sent {reply.kind!r}")
        if failure.render_error:
            error = RenderError(_prefixed(label, failure.message))
        else:
            text = f"{failure.kind}: {failure.message}" if failure.message else failure.kind
            error = RenderError(f"{label}: {text}")
        error.add_note(f"in the render process:\n{failure.trace}")
        raise error
