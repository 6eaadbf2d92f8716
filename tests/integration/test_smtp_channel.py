"""The SMTP channel against real SMTP servers on local ports, with real TLS certificates."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from typing import Any

import pytest
import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from pydantic import SecretStr

from delivery.channels.base import Parcel
from delivery.channels.smtp import AmbiguousDeliveryError, SmtpChannel, SmtpSetupError
from delivery.config import SmtpSecurity, SmtpSettings
from delivery.errors import PermanentChannelError, TransientChannelError
from delivery.models import (
    Cadence,
    ChannelName,
    DeliveryState,
    Format,
    ProofLevel,
    Recipient,
    RecipientKind,
)
from tests.builders import ORG

HOST = "127.0.0.1"
QUEUED = "250 2.0.0 Ok: queued as Q1"
USERNAME = "campaigns"
PASSWORD = "correct horse battery staple"
RECIPIENT = Recipient(
    case="free-the-poet",
    slug="prosecutor",
    kind=RecipientKind.AUTHORITY,
    name="Office of the Prosecutor",
    language="en",
    channels=(ChannelName.EMAIL,),
    format=Format.DIGEST,
    cadence=Cadence.DAILY,
    email="desk@prosecutor.example",
)

# --- certificates -------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST, "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


# --- parcels --------------------------------------------------------------------------


def make_email(message_id: str, subject: str = "128 messages for the release of a poet") -> bytes:
    message = EmailMessage()
    message["From"] = f"{ORG.name} <{ORG.email}>"
    message["To"] = RECIPIENT.email
    message["Subject"] = subject
    message["Message-ID"] = f"<{message_id}@example.org>"
    # A line that is a lone dot, and one that starts with a dot, must survive the trip.
    message.set_content("Dear Prosecutor,\n.\n.. and more\n\nThe messages are attached.\n")
    message.add_attachment(b"%PDF-1.7 not really", "application", "pdf", filename="bundle.pdf")
    return message.as_bytes(policy=policy.SMTP)


def make_parcel(*emails: bytes, delivery_id: str = "dlv-0001") -> Parcel:
    return Parcel(
        delivery_id=delivery_id,
        bundle_id=f"bdl-{delivery_id}",
        channel=ChannelName.EMAIL,
        organisation=ORG,
        recipient=RECIPIENT,
        pdf=b"",
        pages=1,
        message_count=128,
        emails=emails or (make_email(delivery_id),),
        envelope_from=f"bounces+{delivery_id}@{ORG.bounce_domain}",
    )


def settings(port: int, security: SmtpSecurity, **changes: Any) -> SmtpSettings:
    values: dict[str, Any] = {"host": HOST, "port": port, "security": security, "timeout": 2.0}
    return SmtpSettings(**(values | changes))


def starttls_channel(port: int, client_tls: ssl.SSLContext) -> SmtpChannel:
    return SmtpChannel(settings(port, SmtpSecurity.STARTTLS), tls_context=client_tls)


# --- an aiosmtpd server in the test's own event loop -----------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    peer: Any
    tls: bool


@dataclass
class Recorder:
    """An aiosmtpd handler that keeps what it was given and answers as told."""

    rcpt_reply: str | None = None
    data_replies: list[str] = field(default_factory=list)
    mails: list[str] = field(default_factory=list)
    mail_options: list[list[str]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        self.mails.append(address)
        self.mail_options.append(list(options))
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        assert server.transport is not None
        tls = server.transport.get_extra_info("ssl_object") is not None
        content = envelope.content
        assert isinstance(content, bytes)
        assert envelope.mail_from is not None
        self.received.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), content, session.peer, tls)
        )
        return self.data_replies.pop(0) if self.data_replies else QUEUED


@dataclass
class Smtpd:
    port: int
    connections: list[SMTP]

    def drop_all(self) -> None:
        for connection in self.connections:
            if connection.transport is not None:
                connection.transport.close()


@contextlib.asynccontextmanager
async def smtpd(
    handler: Recorder,
    *,
    implicit: ssl.SSLContext | None = None,
    starttls: ssl.SSLContext | None = None,
    authenticator: Callable[..., AuthResult] | None = None,
) -> AsyncIterator[Smtpd]:
    loop = asyncio.get_running_loop()
    connections: list[SMTP] = []

    def factory() -> SMTP:
        connection = SMTP(
            handler,
            loop=loop,
            hostname="mx.test",
            tls_context=starttls,
            authenticator=authenticator,
        )
        connections.append(connection)
        return connection

    server = await loop.create_server(factory, HOST, 0, ssl=implicit)
    try:
        yield Smtpd(server.sockets[0].getsockname()[1], connections)
    finally:
        server.close()
        Smtpd(0, connections).drop_all()
        await server.wait_closed()
        await asyncio.sleep(0.05)  # let the closed connections finish


# --- a raw server that speaks just enough SMTP to misbehave ---------------------------


@dataclass
class Raw:
    port: int
    data: list[bytes]


@dataclass
class RawSession:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    release: asyncio.Event  # set when the test is over
    data: list[bytes]  # what came after each 354


RawStep = Callable[[RawSession], Coroutine[Any, Any, None]]


async def _raw_session(session: RawSession, on_data: RawStep) -> None:
    """Greeting, EHLO, 250 to anything else, and ``on_data`` for DATA, which ends it."""
    session.writer.write(b"220 raw.test ESMTP\r\n")
    while line := await session.reader.readline():
        verb = line[:4].upper()
        if verb == b"EHLO":
            session.writer.write(b"250-raw.test\r\n250 8BITMIME\r\n")
        elif verb == b"DATA":
            await on_data(session)
            return
        elif verb == b"QUIT":
            session.writer.write(b"221 bye\r\n")
            return
        else:
            session.writer.write(b"250 OK\r\n")


@contextlib.asynccontextmanager
async def raw_smtpd(
    on_data: RawStep, *, implicit: ssl.SSLContext | None = None
) -> AsyncIterator[Raw]:
    """A server whose answer to DATA is ``on_data``."""
    release = asyncio.Event()
    data: list[bytes] = []
    tasks: list[asyncio.Task[None]] = []

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.append(task)
        try:
            await _raw_session(RawSession(reader, writer, release, data), on_data)
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    server = await asyncio.start_server(session, HOST, 0, ssl=implicit)
    try:
        yield Raw(server.sockets[0].getsockname()[1], data)
    finally:
        release.set()
        server.close()
        await server.wait_closed()
        await asyncio.gather(*tasks)


async def drop_after_dot(session: RawSession) -> None:
    session.writer.write(b"354 go ahead\r\n")
    session.data.append(await session.reader.readuntil(b"\r\n.\r\n"))
    # and close without a word


async def silent_after_dot(session: RawSession) -> None:
    session.writer.write(b"354 go ahead\r\n")
    session.data.append(await session.reader.readuntil(b"\r\n.\r\n"))
    await session.release.wait()


async def silent_to_data(session: RawSession) -> None:
    await session.release.wait()


async def stop_reading_body(session: RawSession) -> None:
    session.writer.write(b"354 go ahead\r\n")
    session.data.append(await session.reader.read(1024))
    await session.release.wait()


async def drop_after_data_command(session: RawSession) -> None:
    return


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coroutine)


async def send_and_close(channel: SmtpChannel, *parcels: Parcel) -> list[Any]:
    try:
        return [await channel.send(parcel) for parcel in parcels]
    finally:
        await channel.close()


# --- accepted ---------------------------------------------------------------------------


def test_starttls_delivers_the_bytes_unchanged(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    handler = Recorder()
    parcel = make_parcel()

    async def scenario() -> Any:
        async with smtpd(handler, starttls=server_tls) as server:
            channel = starttls_channel(server.port, client_tls)
            return await send_and_close(channel, parcel)

    [receipt] = run(scenario())
    assert receipt.state is DeliveryState.ACCEPTED
    assert receipt.proof is ProofLevel.MTA_ACCEPTED
    assert receipt.provider_ref == "2.0.0 Ok: queued as Q1"
    assert receipt.detail == QUEUED
    [got] = handler.received
    assert got.content == parcel.emails[0]
    assert got.mail_from == "bounces+dlv-0001@bounces.example.org"
    assert got.rcpt_tos == ["desk@prosecutor.example"]
    assert got.tls


def test_implicit_tls_delivers(server_tls: ssl.SSLContext, client_tls: ssl.SSLContext) -> None:
    handler = Recorder()
    parcel = make_parcel()

    async def scenario() -> Any:
        async with smtpd(handler, implicit=server_tls) as server:
            channel = SmtpChannel(settings(server.port, SmtpSecurity.TLS), tls_context=client_tls)
            return await send_and_close(channel, parcel)

    [receipt] = run(scenario())
    assert receipt.state is DeliveryState.ACCEPTED
    [got] = handler.received
    assert got.content == parcel.emails[0]
    assert got.tls


def test_two_emails_go_in_order_on_one_connection(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    handler = Recorder(data_replies=["250 queued as A", "250 queued as B"])
    first, second = make_email("dlv-0001.1", "part 1 of 2"), make_email("dlv-0001.2", "part 2 of 2")

    async def scenario() -> Any:
        async with smtpd(handler, starttls=server_tls) as server:
            channel = starttls_channel(server.port, client_tls)
            return await send_and_close(channel, make_parcel(first, second))

    [receipt] = run(scenario())
    assert [r.content for r in handler.received] == [first, second]
    assert handler.received[0].peer == handler.received[1].peer
    assert receipt.state is DeliveryState.ACCEPTED
    assert receipt.provider_ref == "queued as A | queued as B"
    assert receipt.detail == "e-mail 1 of 2: 250 queued as A; e-mail 2 of 2: 250 queued as B"


def test_an_8bit_message_goes_as_8bitmime_unchanged(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    handler = Recorder()
    message = EmailMessage(policy=policy.SMTP)
    message["Message-ID"] = "<dlv-0001@example.org>"
    message.set_content("Şükran, Ünïcødé, مرحبا\n", cte="8bit")
    eight_bit = message.as_bytes()
    assert not eight_bit.isascii()

    async def scenario() -> Any:
        async with smtpd(handler, starttls=server_tls) as server:
            channel = starttls_channel(server.port, client_tls)
            return await send_and_close(channel, make_parcel(eight_bit))

    run(scenario())
    assert [r.content for r in handler.received] == [eight_bit]
    [options] = handler.mail_options
    assert "BODY=8BITMIME" in options
    assert f"SIZE={len(eight_bit)}" in options


def test_parcels_share_a_connection_and_a_dropped_one_is_replaced(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    handler = Recorder()

    async def scenario() -> None:
        async with smtpd(handler, starttls=server_tls) as server:
            channel = starttls_channel(server.port, client_tls)
            try:
                await channel.send(make_parcel(delivery_id="dlv-0001"))
                await channel.send(make_parcel(delivery_id="dlv-0002"))
                server.drop_all()
                await asyncio.sleep(0.05)
                await channel.send(make_parcel(delivery_id="dlv-0003"))
            finally:
                await channel.close()

    run(scenario())
    peers = [r.peer for r in handler.received]
    assert len(peers) == 3
    assert peers[0] == peers[1] != peers[2]


def test_clear_text_only_when_the_operator_says_so() -> None:
    handler = Recorder()
    parcel = make_parcel()

    async def scenario() -> Any:
        async with smtpd(handler) as server:
            with pytest.raises(SmtpSetupError) as refused:
                await send_and_close(
                    SmtpChannel(settings(server.port, SmtpSecurity.STARTTLS)), parcel
                )
            assert handler.mails == []
            return refused.value, await send_and_close(
                SmtpChannel(settings(server.port, SmtpSecurity.NONE)), parcel
            )

    refused, [receipt] = run(scenario())
    assert isinstance(refused, PermanentChannelError)
    assert f"{HOST} does not offer STARTTLS; refusing to send in clear" in str(refused)
    assert "SOLIDARITY_SMTP__SECURITY=none" in str(refused)
    assert receipt.state is DeliveryState.ACCEPTED
    [got] = handler.received
    assert got.content == parcel.emails[0]
    assert not got.tls


def test_a_certificate_that_does_not_verify_is_refused(server_tls: ssl.SSLContext) -> None:
    handler = Recorder()

    async def scenario() -> None:
        async with smtpd(handler, starttls=server_tls) as server:
            channel = SmtpChannel(settings(server.port, SmtpSecurity.STARTTLS))  # system CAs
            await send_and_close(channel, make_parcel())

    with pytest.raises(SmtpSetupError, match="certificate not verified"):
        run(scenario())
    assert handler.mails == []


# --- AUTH -------------------------------------------------------------------------------


def check_login(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    good = isinstance(data, LoginPassword) and data == (USERNAME.encode(), PASSWORD.encode())
    return AuthResult(success=good, handled=False, auth_data=data)


def echo_password(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    password = data.password.decode() if isinstance(data, LoginPassword) else ""
    return AuthResult(success=False, handled=False, message=f"535 5.7.8 bad: {password}")


def auth_settings(port: int, password: str) -> SmtpSettings:
    return settings(port, SmtpSecurity.STARTTLS, username=USERNAME, password=SecretStr(password))


def test_auth_with_username_and_password(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    handler = Recorder()

    async def scenario() -> Any:
        async with smtpd(handler, starttls=server_tls, authenticator=check_login) as server:
            channel = SmtpChannel(auth_settings(server.port, PASSWORD), tls_context=client_tls)
            return await send_and_close(channel, make_parcel())

    [receipt] = run(scenario())
    assert receipt.state is DeliveryState.ACCEPTED
    assert len(handler.received) == 1


@pytest.mark.parametrize("authenticator", [check_login, echo_password])
def test_a_refused_login_never_shows_the_password(
    server_tls: ssl.SSLContext,
    client_tls: ssl.SSLContext,
    authenticator: Callable[..., AuthResult],
) -> None:
    handler = Recorder()
    wrong = "wrong horse battery staple"

    async def scenario() -> None:
        async with smtpd(handler, starttls=server_tls, authenticator=authenticator) as server:
            channel = SmtpChannel(auth_settings(server.port, wrong), tls_context=client_tls)
            await send_and_close(channel, make_parcel())

    with pytest.raises(SmtpSetupError, match="535") as refused:
        run(scenario())
    assert wrong not in f"{refused.value!s} {refused.value!r}"
    assert wrong not in "".join(traceback.format_exception(refused.value))
    assert handler.mails == []


# --- refused and deferred ---------------------------------------------------------------


def test_451_after_the_data_is_transient(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    handler = Recorder(data_replies=["451 4.3.0 try later"])

    async def scenario() -> None:
        async with smtpd(handler, starttls=server_tls) as server:
            channel = starttls_channel(server.port, client_tls)
            await send_and_close(channel, make_parcel())

    with pytest.raises(TransientChannelError, match=re.escape("451 4.3.0 try later")):
        run(scenario())


def test_550_on_rcpt_is_permanent(server_tls: ssl.SSLContext, client_tls: ssl.SSLContext) -> None:
    handler = Recorder(rcpt_reply="550 5.1.1 no such user")

    async def scenario() -> None:
        async with smtpd(handler, starttls=server_tls) as server:
            channel = starttls_channel(server.port, client_tls)
            await send_and_close(channel, make_parcel())

    with pytest.raises(PermanentChannelError, match=re.escape("550 5.1.1 no such user")) as refused:
        run(scenario())
    assert not isinstance(refused.value, SmtpSetupError)
    assert "RCPT TO <desk@prosecutor.example>" in str(refused.value)
    assert handler.received == []


def test_a_refused_connection_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]  # closed again before the channel connects

    async def scenario() -> None:
        await send_and_close(SmtpChannel(settings(port, SmtpSecurity.STARTTLS)), make_parcel())

    with pytest.raises(TransientChannelError, match=re.escape(f"{HOST}:{port}")):
        run(scenario())


def test_a_later_part_failing_names_the_parts_already_accepted(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    handler = Recorder(data_replies=["250 queued as A", "451 4.3.0 try later"])
    emails = tuple(make_email(f"dlv-0001.{k}", f"part {k} of 3") for k in (1, 2, 3))

    async def scenario() -> None:
        async with smtpd(handler, starttls=server_tls) as server:
            channel = starttls_channel(server.port, client_tls)
            await send_and_close(channel, make_parcel(*emails))

    with pytest.raises(TransientChannelError) as deferred:
        run(scenario())
    text = str(deferred.value)
    assert text.startswith("e-mail 2 of 3 to desk@prosecutor.example")
    assert "451 4.3.0 try later" in text
    assert "already accepted, not to be sent again: e-mail 1 of 3 (250 queued as A)" in text
    assert [r.content for r in handler.received] == list(emails[:2])


# --- before and after the final dot -----------------------------------------------------


@pytest.mark.parametrize("security", [SmtpSecurity.NONE, SmtpSecurity.TLS])
def test_a_drop_after_the_final_dot_is_ambiguous(
    security: SmtpSecurity, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    parcel = make_parcel()
    implicit = server_tls if security is SmtpSecurity.TLS else None

    async def scenario() -> list[bytes]:
        async with raw_smtpd(drop_after_dot, implicit=implicit) as server:
            channel = SmtpChannel(settings(server.port, security), tls_context=client_tls)
            with pytest.raises(AmbiguousDeliveryError, match="may have accepted it"):
                await send_and_close(channel, parcel)
            return server.data

    [data] = run(scenario())
    assert data.endswith(b"\r\n.\r\n")
    assert b"Message-ID: <dlv-0001@example.org>" in data


def test_no_reply_to_the_final_dot_within_the_timeout_is_ambiguous() -> None:
    async def scenario() -> list[bytes]:
        async with raw_smtpd(silent_after_dot) as server:
            channel = SmtpChannel(settings(server.port, SmtpSecurity.NONE, timeout=0.3))
            with pytest.raises(AmbiguousDeliveryError) as unknown:
                await send_and_close(channel, make_parcel())
            assert not isinstance(unknown.value, TransientChannelError | PermanentChannelError)
            return server.data

    [data] = run(scenario())
    assert data.endswith(b"\r\n.\r\n")


def test_no_reply_to_the_data_command_is_transient() -> None:
    async def scenario() -> list[bytes]:
        async with raw_smtpd(silent_to_data) as server:
            channel = SmtpChannel(settings(server.port, SmtpSecurity.NONE, timeout=0.3))
            with pytest.raises(TransientChannelError, match="not sent"):
                await send_and_close(channel, make_parcel())
            return server.data

    assert run(scenario()) == []


def test_a_drop_after_the_data_command_is_transient() -> None:
    async def scenario() -> None:
        async with raw_smtpd(drop_after_data_command) as server:
            channel = SmtpChannel(settings(server.port, SmtpSecurity.NONE))
            with pytest.raises(TransientChannelError, match="not sent"):
                await send_and_close(channel, make_parcel())

    run(scenario())


def test_a_body_that_stops_moving_is_transient_and_no_dot_is_sent() -> None:
    big = make_email("dlv-0001") + b"x" * 76 + b"\r\n"
    big = big + (b"y" * 998 + b"\r\n") * 16_000  # far more than the socket buffers hold

    async def scenario() -> list[bytes]:
        async with raw_smtpd(stop_reading_body) as server:
            channel = SmtpChannel(settings(server.port, SmtpSecurity.NONE, timeout=0.5))
            with pytest.raises(TransientChannelError, match="timed out sending the message"):
                await send_and_close(channel, make_parcel(big))
            return server.data

    [start] = run(scenario())
    assert start.startswith(b"From: ")
