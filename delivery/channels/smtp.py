"""The e-mail channel over SMTP: the composed messages handed to the operator's mail server.

Each composed e-mail goes in its own transaction (one ``MAIL FROM`` with the parcel's
envelope sender, one ``RCPT TO`` with the recipient's address, one ``DATA``), exactly as
composed: the Message-ID and every other byte stay as they are. Only the SMTP transfer
encoding is applied on the wire (line ends as CRLF, a leading dot doubled), and the server
undoes it.

Security follows ``SmtpSettings.security``: ``tls`` speaks TLS from the first byte,
``starttls`` (the default) requires the upgrade and refuses a server that does not offer
it, ``none`` sends in clear and only because an operator set it. Certificates are verified
against the system's trust store (or the ``tls_context`` given). Up to ``connections``
connections are opened as parcels need them and reused until :meth:`SmtpChannel.close`;
a parcel holds one connection until all its e-mails are sent, and a connection the server
dropped in between is replaced.

Outcomes, one e-mail at a time:

* a 2xx reply to the end of the data: accepted; :class:`Receipt` with the reply text as
  ``provider_ref`` (it usually holds the server's queue id);
* a 4xx reply at any step, a refused or dropped connection, or a timeout *before the final
  dot was sent*: :class:`TransientChannelError` — nothing was accepted, so the worker
  defers and later sends the same bytes (same Message-ID) again;
* a 5xx reply at any step: :class:`PermanentChannelError` with the code and text (we send
  to exactly one recipient per transaction, so a refused ``RCPT`` is the whole outcome);
  a refusal while setting the connection up (no STARTTLS, a certificate that does not
  verify, AUTH refused) is the subclass :class:`SmtpSetupError`, which is about the
  server and settings rather than the parcel, and will refuse every parcel the same way;
* the connection lost, a timeout or an unreadable reply *after the final dot was sent*:
  :class:`AmbiguousDeliveryError` — the server may have queued the message, so its state
  is unknown and it must not be sent again without a person deciding.

The boundary is the final dot. ``aiosmtplib.SMTP.data`` writes the message and the dot in
one call and raises the same ``SMTPServerDisconnected`` or ``SMTPTimeoutError`` whether
the link broke while waiting for the ``354`` or after the whole message went out, so the
channel does that step itself: ``DATA`` through ``execute_command``, then the body written
to the protocol, then a wait until the transport has passed it on (a drop or a stall there
is still before the dot), and only then the ``.`` line, after which any failure to read
the reply is ambiguous. Handing the dot to the transport is counted as sending it, even
though the server may never see it: the channel errs towards "unknown", never towards a
second copy.

Every wait is bounded by ``SmtpSettings.timeout``: connecting, the TLS handshake, each
reply, and the body leaving the transport (measured from the last progress, so a large
attachment on a slow link is not cut off while it moves). That includes the reply to the
final dot, for which RFC 5321 suggests allowing ten minutes: a short timeout turns a slow
but successful acceptance into an ambiguous one.

A parcel with several e-mails is sent in order, each after the previous one was accepted,
and each accepted e-mail is reported as a :class:`Part` (its Message-ID as the reference).
When e-mail *k* fails, the error raised is the one for e-mail *k* (transient, permanent or
ambiguous, as above), carries the parts already accepted, and its text names them. The
worker records those parts, and a retry passes their numbers in ``Parcel.sent_parts``:
they are skipped, so an accepted e-mail is never sent a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Sequence
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from typing import cast

from aiosmtplib import (
    SMTP,
    SMTPAuthenticationError,
    SMTPConnectResponseError,
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPRecipientRefused,
    SMTPResponse,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from aiosmtplib.protocol import SMTPProtocol

from delivery.channels.base import Parcel, Receipt
from delivery.config import SmtpSecurity, SmtpSettings
from delivery.errors import (
    AmbiguousDeliveryError,
    ChannelError,
    ChannelSetupError,
    PermanentChannelError,
    TransientChannelError,
)
from delivery.models import ChannelName, DeliveryState, Part, ProofLevel
from delivery.outbox import Artefact

_START_INPUT = 354
_FRESH_SECONDS = 5.0  # a connection used this recently is not checked with RSET first
# How often the wait for the body to leave the transport looks: at once, then less often
# while it does not move, up to every 10 ms (a local server takes it within a few turns).
_POLL_FIRST, _POLL_MAX = 0.0002, 0.01
_BAD_ADDRESS = re.compile(r"[\x00-\x20\x7f<>]")
_STEPS: tuple[tuple[type[SMTPResponseException], str], ...] = (
    (SMTPConnectResponseError, "greeting: "),
    (SMTPHeloError, "EHLO refused: "),
    (SMTPAuthenticationError, "AUTH refused: "),
    (SMTPDataError, "DATA refused: "),
)


class SmtpSetupError(ChannelSetupError):
    """The connection could not be set up as configured (TLS, certificate, AUTH, host).

    It is about the server and the settings, not the parcel: every parcel would fail the
    same way until an operator changes one of them.
    """


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _reply(code: int, text: str) -> str:
    return f"{code} {_one_line(text)}".strip()


def _bad_address(value: str) -> bool:
    return not value or _BAD_ADDRESS.search(value) is not None or "@" not in value


def _check_parcel(parcel: Parcel) -> tuple[bytes, ...]:
    """The messages to send, once the envelope and every message are fit to go."""
    if _bad_address(parcel.recipient.email):
        raise PermanentChannelError(
            f"recipient {parcel.recipient.case}/{parcel.recipient.slug}: "
            f"no usable e-mail address ({parcel.recipient.email!r})"
        )
    if _bad_address(parcel.envelope_from):
        raise PermanentChannelError(f"envelope sender {parcel.envelope_from!r} is not usable")
    if not parcel.emails or not all(parcel.emails):
        raise PermanentChannelError("no composed e-mail in the parcel")
    for number, data in enumerate(parcel.emails, start=1):
        if not _message_id(data):
            raise PermanentChannelError(f"composed e-mail {number} has no Message-ID")
    return parcel.emails


def _wire_body(message: bytes) -> bytes:
    """The message as DATA carries it, without the final dot: CRLF line ends, dots doubled."""
    line_ends = message.count(b"\r\n")
    if message.count(b"\n") == line_ends == message.count(b"\r"):
        body = message  # already CRLF throughout, as composed
    else:
        body = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    body = body.replace(b"\r\n.", b"\r\n..")
    return b"." + body if body.startswith(b".") else body


def _message_id(message: bytes) -> str:
    """The Message-ID of a composed message, read from its header block alone."""
    crlf = message.find(b"\r\n\r\n")
    lf = message.find(b"\n\n", 0, crlf if crlf >= 0 else len(message))
    end = lf if lf >= 0 else crlf if crlf >= 0 else len(message)
    headers = BytesHeaderParser(policy=default_policy).parsebytes(message[: end + 2])
    return str(headers.get("Message-ID", "")).strip()


def _certificate_problem(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind ``exc``, if there is one."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _step(exc: SMTPResponseException) -> str:
    if isinstance(exc, SMTPSenderRefused):
        return f"MAIL FROM <{exc.sender}> refused: "
    if isinstance(exc, SMTPRecipientRefused):
        return f"RCPT TO <{exc.recipient}> refused: "
    for kind, label in _STEPS:
        if isinstance(exc, kind):
            return label
    return ""


def _before_dot(exc: SMTPException | OSError, *, setup: bool) -> ChannelError:
    """What a failure means when the final dot of the message was not sent."""
    refused = SmtpSetupError if setup else PermanentChannelError
    certificate = _certificate_problem(exc)
    if certificate is not None:
        return SmtpSetupError(f"TLS certificate not verified: {certificate.verify_message}")
    if isinstance(exc, SMTPResponseException):
        text = _step(exc) + _reply(exc.code, exc.message)
        return refused(text) if 500 <= exc.code <= 599 else TransientChannelError(text)
    if isinstance(exc, OSError):  # refused, dropped, timed out, TLS failed: nothing sent
        return TransientChannelError(f"not sent: {_one_line(str(exc))}")
    if setup:
        return SmtpSetupError(_one_line(str(exc)))
    return TransientChannelError(_one_line(str(exc)))


def _final_reply(reply: SMTPResponse) -> SMTPResponse:
    """The reply to the final dot: returned when accepted, raised as an error otherwise."""
    text = _reply(reply.code, reply.message)
    if 200 <= reply.code <= 299:
        return reply
    if 400 <= reply.code <= 499:
        raise TransientChannelError(f"not accepted: {text}")
    if 500 <= reply.code <= 599:
        raise PermanentChannelError(f"refused: {text}")
    raise AmbiguousDeliveryError(f"message sent, reply not understood: {text}")


def _buffered(protocol: SMTPProtocol) -> int:
    transport = protocol.transport
    if transport is None or transport.is_closing():
        raise SMTPServerDisconnected("connection lost while sending the message")
    return cast(asyncio.WriteTransport, transport).get_write_buffer_size()


async def _drain(protocol: SMTPProtocol, timeout: float) -> None:
    """Wait until the transport has passed the body on; raise if it stalls or drops."""
    loop = asyncio.get_running_loop()
    pending = _buffered(protocol)
    deadline = loop.time() + timeout
    interval = 0.0
    while pending:
        await asyncio.sleep(interval)
        now = _buffered(protocol)
        if now < pending:
            deadline = loop.time() + timeout
            interval = _POLL_FIRST
        elif loop.time() > deadline:
            raise SMTPTimeoutError("timed out sending the message")
        else:
            interval = min(max(interval * 2, _POLL_FIRST), _POLL_MAX)
        pending = now


def _mail_options(smtp: SMTP, parcel: Parcel, payload: bytes) -> tuple[list[str], str]:
    """``MAIL FROM`` parameters and the address encoding this message needs."""
    options: list[str] = []
    if smtp.supports_extension("size"):
        options.append(f"SIZE={len(payload)}")
    if not payload.isascii():
        if not smtp.supports_extension("8bitmime"):
            raise PermanentChannelError("8-bit message, and the server does not offer 8BITMIME")
        options.append("BODY=8BITMIME")
    if (parcel.envelope_from + parcel.recipient.email).isascii():
        return options, "ascii"
    if not smtp.supports_extension("smtputf8"):
        raise PermanentChannelError("non-ASCII address, and the server does not offer SMTPUTF8")
    return [*options, "SMTPUTF8"], "utf-8"


def _accepted_note(parts: Sequence[Part]) -> str:
    done = ", ".join(f"e-mail {p.number} of {p.count} ({p.detail})" for p in parts)
    return f"; already accepted, not to be sent again: {done}"


def _part(number: int, count: int, payload: bytes, reply: SMTPResponse) -> Part:
    return Part(
        number=number,
        count=count,
        ref=_message_id(payload),
        state=DeliveryState.ACCEPTED,
        proof=ProofLevel.MTA_ACCEPTED,
        detail=_reply(reply.code, reply.message),
    )


def _receipt(parts: Sequence[Part]) -> Receipt:
    """Accepted, with each e-mail's reply; the server's replies usually hold its queue ids."""
    if len(parts) == 1 and parts[0].count == 1:
        detail = parts[0].detail
    else:
        detail = "; ".join(f"e-mail {p.number} of {p.count}: {p.detail}" for p in parts)
    return Receipt(
        state=DeliveryState.ACCEPTED,
        proof=ProofLevel.MTA_ACCEPTED,
        provider_ref=" | ".join(p.detail.partition(" ")[2] for p in parts),
        detail=detail,
        parts=tuple(parts),
    )


class _Slot:
    """One connection of the pool; a parcel holds its slot until all its e-mails are sent."""

    def __init__(self) -> None:
        self.smtp: SMTP | None = None
        self.clean_since: float | None = None  # when its last transaction ended cleanly

    def drop(self) -> None:
        smtp, self.smtp = self.smtp, None
        if smtp is not None:
            smtp.close()


class SmtpChannel:
    """Sends each composed e-mail of a parcel to the recipient through one SMTP server."""

    name = ChannelName.EMAIL

    def __init__(
        self,
        settings: SmtpSettings,
        *,
        tls_context: ssl.SSLContext | None = None,
        connections: int = 1,
    ):
        self._settings = settings
        self._tls_context = tls_context or ssl.create_default_context()
        self._slots: list[_Slot] = [_Slot() for _ in range(max(1, connections))]
        self._free: asyncio.Queue[_Slot] = asyncio.Queue()
        for slot in self._slots:
            self._free.put_nowait(slot)

    @property
    def _server(self) -> str:
        return f"SMTP server {self._settings.host}:{self._settings.port}"

    async def send(self, parcel: Parcel) -> Receipt:
        messages = _check_parcel(parcel)
        count = len(messages)
        sent: list[Part] = []
        slot = await self._free.get()
        try:
            for number, payload in enumerate(messages, start=1):
                if number in parcel.sent_parts:
                    continue  # accepted in an earlier attempt: never sent twice
                try:
                    reply = await self._send_one(slot, parcel, payload)
                except ChannelError as exc:
                    which = "e-mail" if count == 1 else f"e-mail {number} of {count}"
                    text = f"{which} to {parcel.recipient.email} via {self._server}: {exc}"
                    if sent:
                        text += _accepted_note(sent)
                    raise type(exc)(self._scrub(text), parts=sent) from self._shown(exc)
                except asyncio.CancelledError:
                    slot.drop()  # a late reply must not be read as the next command's
                    raise
                sent.append(_part(number, count, payload, reply))
        finally:
            self._free.put_nowait(slot)
        return _receipt(sent)

    async def close(self) -> tuple[Artefact, ...]:
        for slot in self._slots:
            smtp, slot.smtp = slot.smtp, None
            if smtp is None:
                continue
            try:
                if smtp.is_connected:
                    with contextlib.suppress(SMTPException, OSError):  # the server went first
                        await smtp.quit()
            finally:
                smtp.close()
        return ()

    def _scrub(self, text: str) -> str:
        password = self._settings.password.get_secret_value()
        return text.replace(password, "***") if password else text

    def _shown(self, exc: BaseException) -> BaseException | None:
        """``exc`` to chain to, or None when some server echoed the password into it."""
        chain: list[BaseException] = []
        seen: BaseException | None = exc
        while seen is not None and seen not in chain:
            if self._scrub(str(seen)) != str(seen):
                return None
            chain.append(seen)
            seen = seen.__cause__ or seen.__context__
        return exc

    async def _send_one(self, slot: _Slot, parcel: Parcel, payload: bytes) -> SMTPResponse:
        smtp = await self._session(slot)
        try:
            options, encoding = _mail_options(smtp, parcel, payload)
            await smtp.mail(parcel.envelope_from, options=options, encoding=encoding)
            await smtp.rcpt(parcel.recipient.email, encoding=encoding)
            protocol = await self._send_body(smtp, payload)
        except ChannelError:
            raise
        except (SMTPException, OSError) as exc:
            raise _before_dot(exc, setup=False) from exc
        try:
            reply = await protocol.read_response(timeout=self._settings.timeout)
        except (SMTPException, OSError) as exc:
            smtp.close()
            raise AmbiguousDeliveryError(
                f"the message was sent but no reply came ({_one_line(str(exc))}); "
                "the server may have accepted it"
            ) from exc
        accepted = _final_reply(reply)
        slot.clean_since = asyncio.get_running_loop().time()
        return accepted

    async def _send_body(self, smtp: SMTP, payload: bytes) -> SMTPProtocol:
        """``DATA``, the body and the final dot; returns the protocol to read the reply from.

        Anything raised here happened before the dot was handed to the transport.
        """
        start = await smtp.execute_command(b"DATA")
        if start.code != _START_INPUT:
            raise SMTPDataError(start.code, start.message)
        protocol = smtp.protocol
        if protocol is None:
            raise SMTPServerDisconnected("connection lost after DATA")
        try:
            protocol.write(_wire_body(payload))
            await _drain(protocol, self._settings.timeout)
            protocol.write(b".\r\n")
        except BaseException:
            smtp.close()  # the server is mid-message; this connection cannot be reused
            raise
        return protocol

    async def _session(self, slot: _Slot) -> SMTP:
        """The slot's open connection, or a new one.

        A connection whose last transaction ended cleanly moments ago is used as it is;
        one idle for longer, or left mid-transaction, is checked with RSET first (a server
        may close an idle connection, and a parcel must not be deferred for that).
        """
        smtp = slot.smtp
        clean_since, slot.clean_since = slot.clean_since, None
        now = asyncio.get_running_loop().time()
        if smtp is not None and smtp.is_connected:
            if clean_since is not None and now - clean_since < _FRESH_SECONDS:
                return smtp
            try:
                await smtp.rset()
            except (SMTPException, OSError):
                smtp.close()
            else:
                return smtp
        slot.smtp = None
        try:
            slot.smtp = await self._connect()
        except ChannelError:
            raise
        except (SMTPException, OSError) as exc:
            raise _before_dot(exc, setup=True) from exc
        return slot.smtp

    async def _connect(self) -> SMTP:
        settings = self._settings
        if not settings.host:
            raise SmtpSetupError("no SMTP host set (SOLIDARITY_SMTP__HOST)")
        smtp = SMTP(
            hostname=settings.host,
            port=settings.port,
            timeout=settings.timeout,
            use_tls=settings.security is SmtpSecurity.TLS,
            start_tls=False,
            tls_context=self._tls_context,
        )
        try:
            await smtp.connect()
            if settings.security is SmtpSecurity.STARTTLS:
                await self._starttls(smtp)
            if smtp.is_ehlo_or_helo_needed:
                await smtp.ehlo()
            if settings.username:
                await self._login(smtp)
        except BaseException:
            smtp.close()
            raise
        return smtp

    async def _starttls(self, smtp: SMTP) -> None:
        await smtp.ehlo()
        if not smtp.supports_extension("starttls"):
            raise SmtpSetupError(
                f"{self._settings.host} does not offer STARTTLS; refusing to send in clear; "
                "set SOLIDARITY_SMTP__SECURITY=none to allow it"
            )
        await smtp.starttls()

    async def _login(self, smtp: SMTP) -> None:
        if not smtp.supports_extension("auth"):
            raise SmtpSetupError(
                f"{self._settings.host} does not offer AUTH, and a username is set"
            )
        await smtp.login(self._settings.username, self._settings.password.get_secret_value())
