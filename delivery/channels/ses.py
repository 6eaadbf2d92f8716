"""The e-mail channel through Amazon SES, API v2: the composed messages handed to SES as raw mail.

Written against the SES API v2 reference and the SES developer guide:

* SendEmail — https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html
  (``POST /v2/email/outbound-emails``: ``FromEmailAddress``, ``Destination``,
  ``Content.Raw.Data``, ``FeedbackForwardingEmailAddress``, ``EmailTags``,
  ``ConfigurationSetName``; the answer's ``MessageId``; the errors
  ``TooManyRequestsException``, ``LimitExceededException``, ``AccountSuspendedException``,
  ``SendingPausedException``, ``MessageRejected``, ``MailFromDomainNotVerifiedException``,
  ``NotFoundException`` and ``BadRequestException``);
* MessageTag — the name and value may hold only ASCII letters, digits, ``_`` and ``-``;
* Destination — SES does not support SMTPUTF8: the local part of an address must be ASCII,
  a domain outside ASCII must be given in Punycode;
* Amazon SES header fields — https://docs.aws.amazon.com/ses/latest/dg/header-fields.html
  (SES replaces the ``Message-ID`` and ``Date`` headers with its own).

Each composed e-mail of a parcel whose number is not in ``Parcel.sent_parts`` goes in its
own ``SendEmail`` call, its bytes as ``Content.Raw.Data`` exactly as composed, to the one
recipient in ``Destination.ToAddresses``, from the organisation's address (the identity SES
checks; the ``From`` header in the message is the same address). Each is tagged
``delivery=<delivery id>``, so the events SES publishes name the delivery, and goes
through ``SesSettings.configuration_set`` when one is set, which is where those events are
published. The API has no parameter for the envelope sender: SES uses its own (or the
identity's custom MAIL FROM domain). ``FeedbackForwardingEmailAddress`` is the documented
way to say where bounce and complaint messages go, and it is set to the parcel's envelope
sender (``bounces+<delivery-id>@<bounce_domain>``), so forwarded bounces reach the bounce
mailbox as they would over SMTP. Because SES replaces the Message-ID, the reference kept
for each e-mail is the ``MessageId`` SES returns: it is every event's ``mail.messageId``
(:mod:`delivery.tracking.ses_events`).

Outcomes of one call:

* accepted: a :class:`Part` per e-mail, ``ACCEPTED`` with ``MTA_ACCEPTED`` (SES took it),
  the SES ``MessageId`` as its ``ref``; the receipt's ``provider_ref`` is those ids joined
  with ",";
* throttling (``TooManyRequestsException``, ``Throttling``, a sending quota), HTTP 5xx,
  no connection, a connect timeout: :class:`TransientChannelError` — SES took nothing;
* credentials missing or refused, a request signature refused, the account suspended or
  its sending paused, the MAIL FROM domain not verified, the configuration set not found,
  a certificate that does not verify: :class:`ChannelSetupError` — about the settings, not
  the parcel;
* ``MessageRejected``, ``BadRequestException`` and any other 4xx:
  :class:`PermanentChannelError`;
* the request was sent and then no readable answer came (a read timeout, the connection
  closed, a 2xx without a ``MessageId``): :class:`AmbiguousDeliveryError` — SES may have
  taken it, so it must not be sent again without a person deciding.

The client makes each request once: botocore's own retries would send an e-mail again
after a read timeout, and the worker's retry strategy decides what is tried again. A
client passed to the constructor is used as it is, so build it with :func:`client_config`.
The boto3 calls run in a worker thread; a send cancelled while its request is out still
finishes there, and SES may take that e-mail.

When e-mail *k* of *n* fails, the error raised is e-mail *k*'s, of the class above; its
``parts`` are the e-mails this call had SES accept, and its text names them, so they are
recorded and a retry sends only the others. Error texts carry what SES said, with every
e-mail address but the recipient's and the organisation's replaced and access key ids
taken out.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Sequence
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    ParamValidationError,
    SSLError,
)
from botocore.exceptions import ConnectionError as NoConnectionError

from delivery.channels.base import Parcel, Receipt
from delivery.config import SesSettings
from delivery.errors import (
    AmbiguousDeliveryError,
    ChannelError,
    ChannelSetupError,
    PermanentChannelError,
    TransientChannelError,
)
from delivery.models import ChannelName, DeliveryState, Part, ProofLevel
from delivery.outbox import Artefact

if TYPE_CHECKING:
    from mypy_boto3_sesv2 import SESV2Client
    from mypy_boto3_sesv2.type_defs import SendEmailRequestTypeDef

CONNECT_TIMEOUT = 10.0  # seconds to open a connection to SES
READ_TIMEOUT = 60.0  # seconds to wait for SES to answer a request it was sent

_TRANSIENT = frozenset(
    {
        "TooManyRequestsException",
        "Throttling",
        "ThrottlingException",
        "LimitExceededException",  # a sending quota: it resets
        "RequestTimeout",
        "RequestTimeoutException",
        "ServiceUnavailable",
        "InternalFailure",
    }
)
_SETUP = frozenset(
    {
        "AccountSuspendedException",
        "SendingPausedException",
        "MailFromDomainNotVerifiedException",
        "NotFoundException",  # the configuration set named in the settings
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
    }
)
_TAG_VALUE = re.compile(r"[A-Za-z0-9_-]{1,256}")
_BAD_ADDRESS = re.compile(r"[\x00-\x20\x7f<>,;]")
_ATOM = r"[^\s<>()\[\]\\,;:\"'@]"
_ANY_ADDRESS = re.compile(_ATOM + "{1,64}@" + _ATOM + r"{0,254}(?<!\.)(?<=\w)")
_ACCESS_KEY = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{12,}\b")
_MAX_SAID = 300  # characters of what SES said kept in an error text


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _ses_address(value: str, what: str) -> str:
    """``value`` as SES takes it: ASCII local part, the domain in Punycode; else refused."""
    local, at, domain = value.strip().rpartition("@")
    if not at or not local or not domain or _BAD_ADDRESS.search(value.strip()):
        raise PermanentChannelError(f"{what} {value!r} is not a usable e-mail address")
    if not local.isascii():
        raise PermanentChannelError(
            f"{what} {value!r}: SES does not take a local part outside ASCII (no SMTPUTF8)"
        )
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise PermanentChannelError(f"{what} {value!r}: the domain is not valid") from exc
    return f"{local}@{ascii_domain}"


def _check_parcel(parcel: Parcel) -> None:
    """Refuse a parcel SES could not take, before anything is sent."""
    who = f"delivery {parcel.delivery_id} to {parcel.recipient.case}/{parcel.recipient.slug}"
    if not parcel.emails or not all(parcel.emails):
        raise PermanentChannelError(f"{who}: no composed e-mail in the parcel")
    if not _TAG_VALUE.fullmatch(parcel.delivery_id):
        raise PermanentChannelError(f"{who}: the delivery id cannot be an SES message tag")
    parser = BytesHeaderParser(policy=default_policy)
    count = len(parcel.emails)
    for number, data in enumerate(parcel.emails, start=1):
        if not str(parser.parsebytes(data).get("Message-ID", "")).strip():
            which = "the composed e-mail" if count == 1 else f"composed e-mail {number}"
            raise PermanentChannelError(f"{who}: {which} has no Message-ID")


def _certificate_refused(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "certificate verify failed" in text or "certificate_verify_failed" in text


def _transport_error(exc: BotoCoreError) -> ChannelError:
    """What a failure of botocore itself (no answer from SES) means."""
    said = _one_line(str(exc))
    if isinstance(exc, ParamValidationError):
        return PermanentChannelError(f"SES would not take the request: {said}")
    if isinstance(exc, SSLError):
        if _certificate_refused(exc):
            return ChannelSetupError(f"TLS certificate not verified: {said}")
        return AmbiguousDeliveryError(
            f"TLS failed while talking to SES ({said}); SES may have taken it"
        )
    if isinstance(exc, NoConnectionError):  # no connection, or a connect timeout: nothing sent
        return TransientChannelError(f"not sent: {said}")
    if isinstance(exc, HTTPClientError):  # read timeout, connection closed after the request
        return AmbiguousDeliveryError(
            f"the request was sent but no answer came ({said}); SES may have taken it"
        )
    return ChannelSetupError(f"SES client not usable: {said}")  # credentials, region, config


def _refusal(exc: ClientError, said: str) -> ChannelError:
    """What SES's error answer means: retry later, fix the settings, or give up."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "") or "")
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    text = f"SES refused it ({code or 'no error code'}, HTTP {status or '?'}): {said}"
    if code in _SETUP:
        return ChannelSetupError(text)
    if code in _TRANSIENT or status == 429 or status >= 500:
        return TransientChannelError(text)
    if status in (401, 403):
        return ChannelSetupError(text)
    return PermanentChannelError(text)


def _part(number: int, count: int, message_id: str) -> Part:
    return Part(
        number=number,
        count=count,
        ref=message_id,
        state=DeliveryState.ACCEPTED,
        proof=ProofLevel.MTA_ACCEPTED,
        detail=f"accepted by SES as {message_id}",
    )


def _accepted_note(parts: Sequence[Part]) -> str:
    done = ", ".join(f"e-mail {p.number} of {p.count} (SES {p.ref})" for p in parts)
    return f"; already accepted, not to be sent again: {done}"


def _receipt(parts: Sequence[Part]) -> Receipt:
    """Accepted, each e-mail with the MessageId SES gave it."""
    if len(parts) == 1 and parts[0].count == 1:
        detail = parts[0].detail
    elif parts:
        detail = "; ".join(f"e-mail {p.number} of {p.count}: {p.detail}" for p in parts)
    else:
        detail = "every e-mail was accepted by an earlier attempt; nothing sent"
    return Receipt(
        state=DeliveryState.ACCEPTED,
        proof=ProofLevel.MTA_ACCEPTED,
        provider_ref=",".join(p.ref for p in parts),
        detail=detail,
        parts=tuple(parts),
    )


def client_config(
    *, connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT
) -> Config:
    """The botocore configuration a send needs: one attempt per request, bounded waits."""
    return Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"total_max_attempts": 1, "mode": "standard"},
    )


class SesChannel:
    """Sends each composed e-mail of a parcel to the recipient through Amazon SES (API v2)."""

    name = ChannelName.EMAIL

    def __init__(self, settings: SesSettings, *, client: SESV2Client | None = None) -> None:
        self._settings = settings
        self._given = client
        self._client: SESV2Client | None = client
        self._lock = threading.Lock()  # sends run in worker threads; one client is built

    @property
    def _where(self) -> str:
        return f"SES {self._settings.endpoint_url or self._settings.region or '(no region)'}"

    async def send(self, parcel: Parcel) -> Receipt:
        _check_parcel(parcel)
        recipient = _ses_address(parcel.recipient.email, "recipient")
        count = len(parcel.emails)
        sent: list[Part] = []
        for number, payload in enumerate(parcel.emails, start=1):
            if number in parcel.sent_parts:
                continue  # accepted in an earlier attempt: never sent twice
            try:
                message_id = await asyncio.to_thread(self._send_one, parcel, recipient, payload)
            except ChannelError as exc:
                which = "e-mail" if count == 1 else f"e-mail {number} of {count}"
                text = f"{which} to {parcel.recipient.email} via {self._where}: {exc}"
                if sent:
                    text += _accepted_note(sent)
                raise type(exc)(text, parts=sent) from None  # botocore's text is in ours
            sent.append(_part(number, count, message_id))
        return _receipt(sent)

    async def close(self) -> tuple[Artefact, ...]:
        client, self._client = self._client, self._given
        if client is not None and client is not self._given:
            client.close()
        return ()

    def _connect(self) -> SESV2Client:
        """The client given, or one built from the settings and the usual AWS credentials."""
        with self._lock:
            return self._client or self._build()

    def _build(self) -> SESV2Client:
        """A client from the settings and the usual AWS credential sources, read now."""
        if not self._settings.region:
            raise ChannelSetupError("no SES region set (SOLIDARITY_SES__REGION)")
        try:
            self._client = boto3.session.Session().client(
                "sesv2",
                region_name=self._settings.region,
                endpoint_url=self._settings.endpoint_url or None,
                config=client_config(),
            )
        except (BotoCoreError, ValueError) as exc:
            raise ChannelSetupError(f"SES client not usable: {_one_line(str(exc))}") from exc
        return self._client

    def _request(self, parcel: Parcel, recipient: str, payload: bytes) -> SendEmailRequestTypeDef:
        request: SendEmailRequestTypeDef = {
            "Destination": {"ToAddresses": [recipient]},
            "Content": {"Raw": {"Data": payload}},
            "EmailTags": [{"Name": "delivery", "Value": parcel.delivery_id}],
        }
        if parcel.organisation.email:
            request["FromEmailAddress"] = _ses_address(
                parcel.organisation.email, "organisation address"
            )
        if parcel.envelope_from:
            request["FeedbackForwardingEmailAddress"] = _ses_address(
                parcel.envelope_from, "envelope sender"
            )
        if self._settings.configuration_set:
            request["ConfigurationSetName"] = self._settings.configuration_set
        return request

    def _send_one(self, parcel: Parcel, recipient: str, payload: bytes) -> str:
        """Hand one e-mail to SES (in a worker thread); its SES MessageId."""
        client = self._connect()
        request = self._request(parcel, recipient, payload)
        try:
            answer = client.send_email(**request)
        except ClientError as exc:
            message = str(exc.response.get("Error", {}).get("Message", "") or "")
            raise _refusal(exc, self._said(parcel, message)) from exc
        except BotoCoreError as exc:
            raise _transport_error(exc) from exc
        message_id = str(answer.get("MessageId", "") or "").strip()
        if not message_id:
            raise AmbiguousDeliveryError(
                "SES answered without a MessageId; it may have taken the e-mail"
            )
        return message_id

    def _said(self, parcel: Parcel, text: str) -> str:
        """What SES said, on one line: no access key ids, no addresses but ours and theirs."""
        keep = {
            parcel.recipient.email.lower(),
            parcel.organisation.email.lower(),
            parcel.organisation.reply_to.lower(),
            parcel.envelope_from.lower(),
        }

        def redact(match: re.Match[str]) -> str:
            return match.group(0) if match.group(0).lower() in keep else "<redacted>"

        clean = _ANY_ADDRESS.sub(redact, _ACCESS_KEY.sub("<access key id>", _one_line(text)))
        return clean[:_MAX_SAID] + ("…" if len(clean) > _MAX_SAID else "")
