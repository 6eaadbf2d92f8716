"""email: digests composed and sent over SMTP, against the mailmerge command on the same sink.

Ours composes every e-mail with ``compose_email`` (the digest text and HTML of a realistic
bundle, its PDF attached) and hands it to ``SmtpChannel`` in a parcel: as the worker does,
with up to ``LimitSettings().connections`` deliveries in flight over the channel's pool of
connections (``email``), and one delivery after the other over one connection
(``email-serial``). The baseline is the ``mailmerge`` command (PyPI
``mailmerge``), a mail merge tool that renders a Jinja2 template once per row of a CSV file
and sends each message: the same number of messages, the same PDF attached, the digest's
plain text as the body. Both send to the same counting SMTP server (``smtp_sink.py``),
which runs in a process of its own, and what it counted is checked after every run.

Nothing here starts a process at import: the sink is started by :func:`run` only.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import inspect
import itertools
import os
import resource
import select
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from email.message import EmailMessage
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any

from bench_merge import CpuWatch
from bench_render import authority_document
from harness import Probe, Result, Side, Target, Work, measure, progress, rotate

from delivery.channels.base import Parcel
from delivery.channels.smtp import SmtpChannel
from delivery.config import EmailSettings, LimitSettings, Settings, SmtpSettings
from delivery.models import ChannelName
from delivery.render.bundle import BundleDocument, RenderedBundle, render_bundle
from delivery.render.email import compose_email, subject

DEFAULT_EMAILS = 500
QUICK_EMAILS = 100
WARMUP_EMAILS = 10
DIGEST_MESSAGES = 30  # a day's digest for one authority: 18 countries, six scripts
TARGET = Target(">=", 2.0)
BENCH_DIR = Path(__file__).resolve().parent
SINK_SCRIPT = BENCH_DIR / "smtp_sink.py"
MAILMERGE = Path(sys.executable).parent / "mailmerge"
START_SECONDS = 15.0  # for the sink to listen, and for each answer it gives
_TICKS = os.sysconf("SC_CLK_TCK")
_RUNS = itertools.count(1)  # every run sends its own Message-IDs


# -- the sink, in its own process --------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """What the sink received so far (or, as a difference, during one run)."""

    messages: int
    bytes: int
    connections: int
    recipients: int

    def __sub__(self, other: Counts) -> Counts:
        return Counts(
            self.messages - other.messages,
            self.bytes - other.bytes,
            self.connections - other.connections,
            self.recipients - other.recipients,
        )


class Sink:
    """``smtp_sink.py`` in a subprocess: started, asked for its counts, stopped."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SINK_SCRIPT), "--host", "127.0.0.1", "--port", "0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            word, self.host, port = self._line().split()
            if word != "ready":
                raise RuntimeError(f"SMTP sink: unexpected first line {word!r}")
            self.port = int(port)
            self._wait_accepting()
        except BaseException:
            self.stop()
            raise

    def _line(self) -> str:
        stdout = self.proc.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], START_SECONDS)
        line = stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"SMTP sink (pid {self.proc.pid}) gave no answer")
        return line

    def _wait_accepting(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def counts(self) -> Counts:
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write("count\n")
        stdin.flush()
        messages, size, connections, recipients = (int(v) for v in self._line().split())
        return Counts(messages, size, connections, recipients)

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # end of stdin ends the sink
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _received(sink: Sink, before: Counts, cpu_before: float, sent: int) -> dict[str, Any]:
    """What the sink counted since ``before``; raises unless it is ``sent`` messages."""
    got = sink.counts() - before
    if got.messages != sent or got.recipients != sent:
        raise RuntimeError(
            f"SMTP sink counted {got.messages} messages to {got.recipients} recipients,"
            f" expected {sent}"
        )
    return {
        "sink_messages": got.messages,
        "sink_bytes": got.bytes,
        "sink_connections": got.connections,
        "sink_cpu_seconds": sink.cpu_seconds() - cpu_before,
    }


# -- ours: compose_email and SmtpChannel --------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Input:
    """The digest every e-mail carries, built once outside any timing."""

    doc: BundleDocument
    rendered: RenderedBundle
    templates: Path


def parcel(inp: Input, delivery_id: str, emails: tuple[bytes, ...]) -> Parcel:
    org = inp.doc.organisation
    return Parcel(
        delivery_id=delivery_id,
        bundle_id=inp.doc.bundle_id,
        channel=ChannelName.EMAIL,
        organisation=org,
        recipient=inp.doc.recipient,
        pdf=inp.rendered.pdf,
        pages=inp.rendered.pages,
        message_count=len(inp.doc.messages),
        emails=emails,
        envelope_from=f"bounces+{delivery_id}@{org.bounce_domain}",
    )


def pool_size() -> int:
    """Connections for the pooled side: the worker's default, if SmtpChannel can pool."""
    if "connections" not in inspect.signature(SmtpChannel).parameters:
        return 1
    return LimitSettings().connections


def open_channel(settings: SmtpSettings, connections: int) -> SmtpChannel:
    if connections == 1:
        return SmtpChannel(settings)
    return SmtpChannel(settings, connections=connections)


@dataclass
class Tally:
    """Where one run of ours spent its time (sums over deliveries; they overlap when pooled)."""

    emails: int = 0
    compose_seconds: float = 0.0
    send_seconds: float = 0.0


def ours(
    inp: Input, sink: Sink, count: int, connections: int, probe: Probe
) -> tuple[int, dict[str, Any]]:
    """``count`` deliveries, each composed then sent; timed to the last accepted reply.

    With one connection the deliveries go one after the other; with more, up to that many
    are in flight, each composed in a thread and sent over the channel's pool, as the
    worker does.
    """
    before, cpu_before = sink.counts(), sink.cpu_seconds()
    with CpuWatch([sink.proc.pid]) as watch:
        extra = asyncio.run(_deliver(inp, sink, count, connections, probe))
    extra["other_cores"] = watch.other_cores
    extra.update(_received(sink, before, cpu_before, extra["emails"]))
    return count, extra


async def _deliver(
    inp: Input, sink: Sink, count: int, connections: int, probe: Probe
) -> dict[str, Any]:
    settings = SmtpSettings(host=sink.host, port=sink.port, security="none")
    channel = open_channel(settings, connections)
    run, tally = next(_RUNS), Tally()
    ids = [f"dlv-bench-{run}-{number:05d}" for number in range(1, count + 1)]
    cpu = os.times()
    try:
        with probe:
            if connections == 1:
                for delivery_id in ids:
                    await _one(inp, channel, delivery_id, tally, threaded=False)
            else:
                gate = asyncio.Semaphore(connections)

                async def gated(delivery_id: str) -> None:
                    async with gate:
                        await _one(inp, channel, delivery_id, tally, threaded=True)

                await asyncio.gather(*(gated(delivery_id) for delivery_id in ids))
        cpu_used = _cpu_since(cpu)
    finally:
        closing = time.perf_counter()
        await channel.close()
    return {
        "emails": tally.emails,
        "connections": connections,
        "compose_seconds": tally.compose_seconds,
        "send_seconds": tally.send_seconds,
        "close_seconds": time.perf_counter() - closing,
        "cpu_seconds": cpu_used,
    }


async def _one(
    inp: Input, channel: SmtpChannel, delivery_id: str, tally: Tally, *, threaded: bool
) -> None:
    """Compose one delivery's e-mails and send them; the worker composes in a thread."""
    started = time.perf_counter()
    if threaded:
        emails = await asyncio.to_thread(_compose, inp, delivery_id)
    else:
        emails = _compose(inp, delivery_id)
    composed = time.perf_counter()
    await channel.send(parcel(inp, delivery_id, emails))
    tally.compose_seconds += composed - started
    tally.send_seconds += time.perf_counter() - composed
    tally.emails += len(emails)


def _compose(inp: Input, delivery_id: str) -> tuple[bytes, ...]:
    return compose_email(
        inp.doc,
        inp.rendered,
        delivery_id=delivery_id,
        templates=inp.templates,
        limits=EmailSettings(),
    )


def _cpu_since(before: os.times_result) -> float:
    now = os.times()
    return (now.user - before.user) + (now.system - before.system)


# -- the baseline: the mailmerge command -------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class MergeInput:
    """What the mailmerge files are made of: template text, the PDF, the recipient."""

    template: str
    pdf: bytes
    address: str
    name: str


TEMPLATE = """\
TO: {{{{email}}}}
FROM: {sender}
REPLY-TO: {reply_to}
SUBJECT: {subject}
ATTACHMENT: {attachment}

{body}"""
ATTACHMENT = "bundle.pdf"


def merge_input(inp: Input, first_email: bytes) -> MergeInput:
    """The mailmerge template: our digest's plain text, greeting the recipient by a field."""
    parsed = email.message_from_bytes(first_email, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    part = parsed.get_body(("plain",))
    assert part is not None
    text = str(part.get_content())
    greeting = f"Dear {inp.doc.recipient.name},"
    if greeting not in text or any(mark in text for mark in ("{{", "{%", "{#")):
        raise RuntimeError("the digest text cannot be made into a mailmerge template")
    org = inp.doc.organisation
    template = TEMPLATE.format(
        sender=f"{org.name} <{org.email}>",
        reply_to=f"{org.name} <{org.reply_to or org.email}>",
        subject=subject(inp.doc),
        attachment=ATTACHMENT,
        body=text.replace(greeting, "Dear {{name}},", 1),
    )
    return MergeInput(
        template=template,
        pdf=inp.rendered.pdf,
        address=inp.doc.recipient.email,
        name=inp.doc.recipient.name,
    )


def write_merge_files(folder: Path, merge: MergeInput, count: int, port: int) -> None:
    """Template, CSV database (``count`` rows) and server configuration in ``folder``."""
    (folder / "mailmerge_template.txt").write_text(merge.template, encoding="utf-8")
    (folder / ATTACHMENT).write_bytes(merge.pdf)
    rows = "".join(f'{merge.address},"{merge.name}",{n}\n' for n in range(1, count + 1))
    (folder / "mailmerge_database.csv").write_text("email,name,row\n" + rows, encoding="utf-8")
    # No "security" key: plain SMTP without a login. "ratelimit = 0": no pause between messages.
    (folder / "mailmerge_server.conf").write_text(
        f"[smtp_server]\nhost = 127.0.0.1\nport = {port}\nratelimit = 0\n", encoding="utf-8"
    )


def mailmerge(
    merge: MergeInput, sink: Sink, count: int, work_dir: Path, probe: Probe
) -> tuple[int, dict[str, Any]]:
    """``mailmerge --no-dry-run --no-limit`` in a fresh folder; the whole command is timed."""
    with tempfile.TemporaryDirectory(prefix="bench-mailmerge-", dir=work_dir) as tmp:
        folder = Path(tmp)
        write_merge_files(folder, merge, count, sink.port)
        before, cpu_before = sink.counts(), sink.cpu_seconds()
        out, err = (folder / "out.txt").open("wb"), (folder / "err.txt").open("wb")
        with out, err, CpuWatch([sink.proc.pid]) as watch, probe:
            status, usage = _run_mailmerge(folder, out, err)
        if status != 0:
            tail = (folder / "err.txt").read_text(errors="replace")[-2_000:]
            raise RuntimeError(f"mailmerge exited with {status}: {tail}")
        extra = _received(sink, before, cpu_before, count)
    cpu = usage.ru_utime + usage.ru_stime  # the command's; the watch counted it as "other"
    other = max(0.0, watch.other_cores - cpu / probe.seconds) if probe.seconds else 0.0
    return count, {"emails": count, "cpu_seconds": cpu, "other_cores": other, **extra}


def _run_mailmerge(
    folder: Path, out: IO[bytes], err: IO[bytes], *args: str
) -> tuple[int, resource.struct_rusage]:
    """Run the command in ``folder``; its exit code and resource use (``wait4``)."""
    command = [str(MAILMERGE), *(args or ("--no-dry-run", "--no-limit", "--output-format", "text"))]
    proc = subprocess.Popen(command, cwd=folder, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage


def mailmerge_start_seconds(work_dir: Path) -> float:
    """Wall time of ``mailmerge --version``: starting Python and importing the tool."""
    with tempfile.TemporaryFile(dir=work_dir) as out:
        started = time.perf_counter()
        status, _ = _run_mailmerge(work_dir, out, out, "--version")
        seconds = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f"{MAILMERGE} --version exited with {status}")
    return seconds


# -- the benchmark -----------------------------------------------------------------------------


def build_input(work_dir: Path) -> Input:
    templates = Settings(outbox=str(work_dir)).templates
    doc = authority_document(DIGEST_MESSAGES)
    return Input(doc=doc, rendered=render_bundle(doc, templates), templates=templates)


def run(*, quick: bool, reps: int, work_dir: Path) -> list[Result]:
    if not MAILMERGE.exists():
        raise RuntimeError(f"{MAILMERGE} not found: install mailmerge in this environment")
    count = QUICK_EMAILS if quick else DEFAULT_EMAILS
    inp = build_input(work_dir)
    first = _compose(inp, "dlv-bench-0")
    merge = merge_input(inp, first[0])
    pool = pool_size()
    sink = Sink()
    try:
        progress(
            f"email: {count:,} e-mails, each a digest of {len(inp.doc.messages)} messages for"
            f" {inp.doc.case.slug}/{inp.doc.recipient.slug} with its {inp.rendered.pages}-page"
            f" PDF ({len(inp.rendered.pdf):,} bytes) attached; SMTP sink pid {sink.proc.pid}"
            f" on {sink.host}:{sink.port}"
        )
        progress("email: warm-up, a few e-mails each way")
        measure(lambda probe: mailmerge(merge, sink, WARMUP_EMAILS, work_dir, probe))
        for connections in sorted({1, pool}):
            measure(lambda probe, c=connections: ours(inp, sink, WARMUP_EMAILS, c, probe))
        start = mailmerge_start_seconds(work_dir)
        sides = rotate("email", reps, _sides(inp, merge, sink, count, pool, work_dir))
    finally:
        sink.stop()
    params = _params(inp, count, reps, len(first[0]), start, pool)
    base, serial, *pooled = sides
    results = [
        Result(
            name="email",
            unit="e-mails",
            params=params,
            baseline=base,
            ours=pooled[0] if pooled else serial,
            target=TARGET,
            notes=_notes(count, start, base, pooled[0] if pooled else serial),
        )
    ]
    if pooled:
        results.append(
            Result(
                name="email-serial",
                unit="e-mails",
                params=params,
                baseline=base,
                ours=serial,
                notes=[_our_note(count, serial), _others(base, serial)],
            )
        )
    return results


def _sides(
    inp: Input, merge: MergeInput, sink: Sink, count: int, pool: int, work_dir: Path
) -> list[tuple[str, str, Work]]:
    """The mailmerge command; ours one delivery at a time; ours pooled, if SmtpChannel pools."""
    sides: list[tuple[str, str, Work]] = [
        (
            "baseline",
            "mailmerge command",
            lambda probe: mailmerge(merge, sink, count, work_dir, probe),
        ),
        (
            "ours",
            "SmtpChannel, 1 connection, 1 at a time",
            lambda probe: ours(inp, sink, count, 1, probe),
        ),
    ]
    if pool > 1:
        sides.append(
            (
                "ours",
                f"SmtpChannel, {pool} connections, {pool} in flight",
                lambda probe: ours(inp, sink, count, pool, probe),
            )
        )
    return sides


def _params(
    inp: Input, count: int, reps: int, email_bytes: int, start: float, pool: int
) -> dict[str, Any]:
    return {
        "emails": count,
        "digest_messages": len(inp.doc.messages),
        "recipient": f"{inp.doc.case.slug}/{inp.doc.recipient.slug}",
        "pdf_pages": inp.rendered.pages,
        "pdf_bytes": len(inp.rendered.pdf),
        "email_bytes": email_bytes,
        "connections": pool,
        "mailmerge_start_seconds": start,
        "mailmerge": version("mailmerge"),
        "aiosmtpd": version("aiosmtpd"),
        "aiosmtplib": version("aiosmtplib"),
        "reps": reps,
        "cpus": os.cpu_count(),
    }


def _notes(count: int, start: float, base: Side, ours_: Side) -> list[str]:
    b, o = base.samples[-1], ours_.samples[-1]
    per = 1000 / count
    return [
        f"the sink counted {count:,} messages in every run; average size on the wire:"
        f" mailmerge {b.extra['sink_bytes'] / count:,.0f} bytes (text and PDF), ours"
        f" {o.extra['sink_bytes'] / count:,.0f} (text, HTML and PDF); connections: mailmerge"
        f" {b.extra['sink_connections']:,} (one per message), ours {o.extra['sink_connections']:,}",
        _our_note(count, ours_),
        f"mailmerge, last run: CPU of the command {b.extra['cpu_seconds'] * per:.1f} ms an"
        f" e-mail, of the sink {b.extra['sink_cpu_seconds'] * per:.1f} ms; starting it"
        f" (mailmerge --version) takes {start:.2f} s of its time; the peak RSS Δ column is"
        " this process's, not the command's",
        _others(base, ours_),
    ]


def _our_note(count: int, side: Side) -> str:
    extra, per = side.samples[-1].extra, 1000 / count
    connections = extra["connections"]
    how = "one after the other" if connections == 1 else f"up to {connections} in flight"
    return (
        f"ours ({how}), last run: composing {extra['compose_seconds'] * per:.1f} ms an"
        f" e-mail, sending {extra['send_seconds'] * per:.1f} ms (sums over deliveries);"
        f" CPU of this process {extra['cpu_seconds'] * per:.1f} ms an e-mail, of the sink"
        f" {extra['sink_cpu_seconds'] * per:.1f} ms"
    )


def _others(base: Side, ours_: Side) -> str:
    def cores(side: Side) -> str:
        return ", ".join(f"{s.extra['other_cores']:.2f}" for s in side.samples)

    return (
        f"other processes on this machine used on average [{cores(base)}] cores during the"
        f" mailmerge runs and [{cores(ours_)}] during ours (of {os.cpu_count()})"
    )
