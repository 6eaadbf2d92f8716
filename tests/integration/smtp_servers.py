"""SMTP servers on local ports that outlive one worker run, and keep what they were given.

The worker runs in its own ``asyncio.run``, once per run, so the servers here run on an
event loop in a thread of their own, for the whole test. Two kinds:

* :class:`Mailbox`, an aiosmtpd handler: a real SMTP server (clear, STARTTLS or implicit
  TLS) that answers each ``MAIL``, ``RCPT`` and end of ``DATA`` with a scripted reply,
  then 250;
* :class:`Scripted`, a few lines of SMTP written by hand for what aiosmtpd cannot do:
  a 421 greeting, no greeting at all, a connection dropped after ``RCPT`` or after the
  final dot. Each connection follows the next :class:`Plan`; once they run out, it
  accepts.

Both keep the copies they hold (accepted, or received whole before the link dropped) and
the envelope sender of every ``MAIL FROM`` they were sent, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ssl
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from typing import Any, TypeVar

from aiosmtpd.smtp import SMTP, Envelope, Session

HOST = "127.0.0.1"
T = TypeVar("T")


@dataclass(frozen=True)
class Copy:
    """One message a server holds."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    tls: bool

    @property
    def message_id(self) -> str:
        return str(message_from_bytes(self.content, policy=policy.default)["Message-ID"])


def _queued(held: list[Copy]) -> str:
    return f"250 2.0.0 Ok: queued as Q{len(held) + 1}"


@dataclass
class Mailbox:
    """An aiosmtpd handler; each ``*_replies`` list holds the next replies to that step.

    When a list runs out the step gets 250; a message is held when the reply to its
    data is 2xx.
    """

    mail_replies: list[str] = field(default_factory=list)
    rcpt_replies: list[str] = field(default_factory=list)
    data_replies: list[str] = field(default_factory=list)
    mail_from: list[str] = field(default_factory=list)  # every MAIL FROM it was sent
    rcpt_to: list[str] = field(default_factory=list)  # every RCPT TO it was sent
    held: list[Copy] = field(default_factory=list)  # the copies it accepted (2xx to DATA)

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        self.mail_from.append(address)
        if self.mail_replies:
            return self.mail_replies.pop(0)
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        self.rcpt_to.append(address)
        if self.rcpt_replies:
            return self.rcpt_replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        reply = self.data_replies.pop(0) if self.data_replies else _queued(self.held)
        if not reply.startswith("2"):
            return reply
        assert server.transport is not None
        assert isinstance(envelope.content, bytes)
        tls = server.transport.get_extra_info("ssl_object") is not None
        self.held.append(
            Copy(str(envelope.mail_from), tuple(envelope.rcpt_tos), envelope.content, tls)
        )
        return reply


def _address(command: bytes) -> str:
    """The address of a ``MAIL FROM:<...>`` or ``RCPT TO:<...>`` line."""
    return command.decode().partition(":")[2].split()[0].strip("<>")


class Plan(enum.Enum):
    """What one connection to a :class:`Scripted` server does."""

    ACCEPT = "accept"  # a well-behaved server: 250 to everything, the message held
    GREET_421 = "greet-421"  # "421" instead of the greeting, then hang up
    SILENT = "silent"  # accept the TCP connection and never say a word
    DROP_AFTER_RCPT = "drop-after-rcpt"  # 250 to RCPT, then hang up before DATA
    DROP_AFTER_DOT = "drop-after-dot"  # read the whole message, then hang up without a reply


@dataclass
class Scripted:
    """A hand-written SMTP server: connection *k* follows ``plans[k]``, later ones accept."""

    plans: list[Plan] = field(default_factory=list)
    connections: int = 0
    mail_from: list[str] = field(default_factory=list)
    rcpt_to: list[str] = field(default_factory=list)
    held: list[Copy] = field(default_factory=list)  # received whole, replied to or not
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        plan = self.plans.pop(0) if self.plans else Plan.ACCEPT
        try:
            await self._converse(plan, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _converse(
        self, plan: Plan, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if plan is Plan.SILENT:
            await self.stop.wait()
            return
        if plan is Plan.GREET_421:
            writer.write(b"421 4.3.2 mx.example.org busy, try again later\r\n")
            await writer.drain()
            return
        writer.write(b"220 mx.example.org ESMTP\r\n")
        envelope: list[str] = []  # the sender, then the recipients of this transaction
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"DATA":
                writer.write(b"354 end with <CRLF>.<CRLF>\r\n")
                reply = self._hold(envelope, await reader.readuntil(b"\r\n.\r\n"))
                if plan is Plan.DROP_AFTER_DOT:
                    return
                writer.write(reply)
            else:
                writer.write(self._answer(verb, line, envelope))
            await writer.drain()
            if verb == b"QUIT" or (verb == b"RCPT" and plan is Plan.DROP_AFTER_RCPT):
                return

    def _answer(self, verb: bytes, line: bytes, envelope: list[str]) -> bytes:
        if verb == b"EHLO":
            return b"250-mx.example.org\r\n250-8BITMIME\r\n250 SIZE 10000000\r\n"
        if verb == b"MAIL":
            envelope[:] = [_address(line)]
            self.mail_from.append(envelope[0])
            return b"250 2.1.0 OK\r\n"
        if verb == b"RCPT":
            envelope.append(_address(line))
            self.rcpt_to.append(envelope[-1])
            return b"250 2.1.5 OK\r\n"
        if verb == b"QUIT":
            return b"221 2.0.0 bye\r\n"
        return b"250 OK\r\n"

    def _hold(self, envelope: list[str], data: bytes) -> bytes:
        """Keep the message that came after DATA (transparency undone); the reply to it."""
        content = data[: -len(b".\r\n")].replace(b"\r\n..", b"\r\n.")
        reply = _queued(self.held).encode() + b"\r\n"
        self.held.append(Copy(envelope[0], tuple(envelope[1:]), content, tls=False))
        return reply


class ServerThread:
    """An event loop in a thread; servers started on it run until :meth:`close`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._servers: list[asyncio.Server] = []
        self._smtp: list[SMTP] = []
        self._scripted: list[Scripted] = []
        self._sessions: set[asyncio.Task[None]] = set()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)

    def mailbox(
        self,
        mailbox: Mailbox,
        *,
        starttls: ssl.SSLContext | None = None,
        implicit: ssl.SSLContext | None = None,
    ) -> int:
        """Serve ``mailbox`` with aiosmtpd; the port. ``starttls`` offers the upgrade."""

        def factory() -> SMTP:
            smtp = SMTP(mailbox, loop=self.loop, hostname="mx.example.org", tls_context=starttls)
            self._smtp.append(smtp)
            return smtp

        async def start() -> asyncio.Server:
            return await self.loop.create_server(factory, HOST, 0, ssl=implicit)

        return self._listen(self._call(start()))

    def scripted(self, *plans: Plan) -> tuple[Scripted, int]:
        """A :class:`Scripted` server following ``plans``, and its port."""

        async def start() -> tuple[Scripted, asyncio.Server]:
            server = Scripted(list(plans))  # its Event belongs to this loop

            async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                task = asyncio.current_task()
                assert task is not None
                self._sessions.add(task)
                try:
                    await server.session(reader, writer)
                finally:
                    self._sessions.discard(task)

            return server, await asyncio.start_server(session, HOST, 0)

        scripted, listening = self._call(start())
        self._scripted.append(scripted)
        return scripted, self._listen(listening)

    def _listen(self, server: asyncio.Server) -> int:
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    def close(self) -> None:
        async def stop() -> None:
            for scripted in self._scripted:
                scripted.stop.set()
            for server in self._servers:
                server.close()
            for smtp in self._smtp:
                if smtp.transport is not None:
                    smtp.transport.close()
            for server in self._servers:
                await server.wait_closed()
            await asyncio.gather(*self._sessions, return_exceptions=True)
            await asyncio.sleep(0.05)  # let closed connections finish

        try:
            self._call(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()


@contextlib.contextmanager
def server_thread() -> Iterator[ServerThread]:
    servers = ServerThread()
    try:
        yield servers
    finally:
        servers.close()
