"""SES event notifications from an SQS queue → delivery events, the scrubbed event kept as evidence.

Written against the SES developer guide: "Contents of event data that Amazon SES publishes
to Amazon SNS" and its examples (event publishing through a configuration set, the record
named by ``eventType``), and "Amazon SNS notification contents for Amazon SES" (feedback
notifications set on an identity, named by ``notificationType``). A queue subscribed to
the SNS topic receives each record inside the SNS envelope (``{"Type": "Notification",
"MessageId": ..., "Message": "<the record as a JSON string>", ...}``); with raw message
delivery turned on it receives the record itself. Both are read. The SNS signature is not
checked: the queue, which only our topic may write to, is the trust boundary.

Each record is about one e-mail, found by ``mail.messageId``: the SES MessageId that
:class:`delivery.channels.ses.SesChannel` kept as that e-mail's part reference. What each
event type means:

* ``Delivery``: the recipient's mail server accepted it → ``DELIVERED`` with
  ``MTA_ACCEPTED``, the strongest proof e-mail gives;
* ``Bounce`` of type ``Permanent`` → ``BOUNCED``; ``Transient`` or ``Undetermined`` (SES
  gave up on a condition that may pass) → noted, no state change;
* ``Complaint`` → noted (a person decides what a complaint from an authority means);
* ``Reject`` (SES found a virus and sent nothing) and ``Rendering Failure`` → ``FAILED``;
* ``DeliveryDelay``, ``Send``, ``Open``, ``Click`` and ``Subscription`` → noted.

A record moves its part only forward (:meth:`delivery.store.tracking.TrackingStore.report`):
a late ``Delivery`` after a ``Bounce`` is noted, never applied. Each record is kept as
evidence under ``evidence/ses/<sha256>.json``, with every e-mail address other than the
organisation's and the recipient's replaced; the name comes from those bytes, so the same
record read twice is recorded once. A message that cannot be read, that is not an SES
record, or whose e-mail is not one of our deliveries' parts is quarantined under
``quarantine/ses/`` with the reason beside it, for a person — never guessed.

Nothing is taken off the queue until its record is safely recorded or quarantined: the
caller's ``done`` (:func:`delete`) runs after each one. A crash leaves the rest of the
queue to be read again.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as NoConnectionError

from delivery.config import Settings
from delivery.errors import (
    ConfigurationError,
    NotFoundError,
    PermanentError,
    TransientError,
)
from delivery.models import ChannelName, DeliveryState, ProofLevel
from delivery.outbox import Outbox
from delivery.store import Store
from delivery.store.tracking import Report
from delivery.store.work import DeliveryRow
from delivery.tracking.bounces import TrackReport, quarantine_in
from delivery.tracking.dsn import REDACTED

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

MAX_EVENT_BYTES = 1024 * 1024  # more than one SQS message holds
_MAX_DEPTH = 32  # levels of JSON nesting read; SES records have five or six
_MAX_DETAIL = 500  # characters of a report's detail
_RECEIVE_BATCH = 10  # the most SQS hands out in one ReceiveMessage

# An address, as in delivery.tracking.dsn: lengths bounded so a long run costs linear time.
_LOCAL = r"(?:\"[^\"\\\r\n]{1,64}\"|[A-Za-z0-9.!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]{1,64})"
_LABEL = r"[A-Za-z0-9\u0080-\U0010ffff-]{1,63}"
_DOMAIN = r"(?:\[[0-9A-Fa-f:.IPv]{1,50}\]|" + _LABEL + r"(?:\." + _LABEL + r"){0,10})"
_ADDRESS = re.compile(_LOCAL + "@" + _DOMAIN)

_Outcome = tuple[DeliveryState | None, ProofLevel, str]  # the state to move to, proof, detail


@dataclass(frozen=True, kw_only=True)
class SesEvent:
    """What one SES record says about one e-mail."""

    kind: str  # eventType or notificationType: "Delivery", "Bounce", ...
    message_id: str  # mail.messageId: the SES MessageId, the part's reference
    delivery_tag: str  # the "delivery" tag published with it (event publishing only), or ""
    state: DeliveryState | None  # None: noted only
    proof: ProofLevel
    detail: str
    provider_ref: str  # the bounce's or complaint's feedbackId, else the SES MessageId
    record: Mapping[str, Any]  # the record itself, out of any SNS envelope


@dataclass(frozen=True, kw_only=True)
class Unreadable:
    """A queue message that is not an SES record this reader can apply: quarantine it."""

    reason: str


class _RefusedError(Exception):
    """Raised while reading a record that cannot be read; the message is the reason."""


# -- reading -------------------------------------------------------------------------------


def read_event(body: bytes) -> SesEvent | Unreadable:
    """Read one queue message: an SNS notification wrapping an SES record, or the record.

    Never raises on the message: anything it cannot read is ``Unreadable`` with a reason.
    """
    if len(body) > MAX_EVENT_BYTES:
        return Unreadable(reason=f"{len(body)} bytes, more than the {MAX_EVENT_BYTES} read")
    try:
        return _describe(_unwrap(body))
    except _RefusedError as refused:
        return Unreadable(reason=str(refused))
    except (ValueError, TypeError, RecursionError) as exc:
        return Unreadable(reason=f"not readable JSON ({type(exc).__name__})")


def _object(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _RefusedError(f"{what} is not a JSON object")
    return value


def _text(value: object) -> str:
    """A field as one line of text; empty for a missing, null or non-scalar value."""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return " ".join(str(value).split())
    return ""


def _depth(value: object, level: int = 0) -> int:
    if level > _MAX_DEPTH:
        raise _RefusedError(f"nested more than {_MAX_DEPTH} levels deep")
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level


def _unwrap(body: bytes) -> Mapping[str, Any]:
    """The SES record, taken out of its SNS envelope when it has one."""
    outer = _object(json.loads(body.decode("utf-8")), "the message")
    _depth(outer)
    if "Type" not in outer:
        return outer
    kind = _text(outer.get("Type"))
    if kind != "Notification":
        raise _RefusedError(f"an SNS {kind[:40]!r} message, not a notification")
    inner = outer.get("Message")
    if not isinstance(inner, str):
        raise _RefusedError("an SNS notification without a Message string")
    record = _object(json.loads(inner), "the SNS notification's Message")
    _depth(record)
    return record


def _recipient_statuses(entries: object) -> str:
    """``status diagnosticCode`` of each recipient in a bounce or delay, joined."""
    if not isinstance(entries, list):
        return ""
    said = (
        f"{_text(e.get('status'))} {_text(e.get('diagnosticCode'))}".strip()
        for e in entries[:20]
        if isinstance(e, dict)
    )
    return "; ".join(s for s in said if s)


def _bounce(record: Mapping[str, Any]) -> _Outcome:
    bounce = _object(record.get("bounce"), "the bounce")
    kind = _text(bounce.get("bounceType")) or "Undetermined"
    detail = f"bounce {kind}/{_text(bounce.get('bounceSubType')) or 'Undetermined'}"
    statuses = _recipient_statuses(bounce.get("bouncedRecipients"))
    detail += f": {statuses}" if statuses else ""
    return (DeliveryState.BOUNCED if kind == "Permanent" else None), ProofLevel.NONE, detail


def _delivery(record: Mapping[str, Any]) -> _Outcome:
    delivery = _object(record.get("delivery"), "the delivery")
    reply = _text(delivery.get("smtpResponse")) or "no reply recorded"
    mta = _text(delivery.get("reportingMTA"))
    detail = f"delivered: {reply}" + (f" (reported by {mta})" if mta else "")
    return DeliveryState.DELIVERED, ProofLevel.MTA_ACCEPTED, detail


def _complaint(record: Mapping[str, Any]) -> _Outcome:
    complaint = _object(record.get("complaint"), "the complaint")
    kind = _text(complaint.get("complaintFeedbackType")) or "no feedback type given"
    sub = _text(complaint.get("complaintSubType"))
    return None, ProofLevel.NONE, f"complaint: {kind}" + (f" ({sub})" if sub else "")


def _reject(record: Mapping[str, Any]) -> _Outcome:
    reject = _object(record.get("reject"), "the reject")
    reason = _text(reject.get("reason")) or "no reason given"
    return DeliveryState.FAILED, ProofLevel.NONE, f"rejected by SES, not sent: {reason}"


def _rendering(record: Mapping[str, Any]) -> _Outcome:
    failure = _object(record.get("failure"), "the rendering failure")
    said = _text(failure.get("errorMessage")) or "no reason given"
    return DeliveryState.FAILED, ProofLevel.NONE, f"SES could not render it, not sent: {said}"


def _delay(record: Mapping[str, Any]) -> _Outcome:
    delay = _object(record.get("deliveryDelay"), "the delivery delay")
    detail = f"delayed ({_text(delay.get('delayType')) or 'no reason given'})"
    statuses = _recipient_statuses(delay.get("delayedRecipients"))
    detail += f": {statuses}" if statuses else ""
    until = _text(delay.get("expirationTime"))
    return None, ProofLevel.NONE, detail + (f"; SES keeps trying until {until}" if until else "")


def _noted(what: str) -> Callable[[Mapping[str, Any]], tuple[None, ProofLevel, str]]:
    def read(record: Mapping[str, Any]) -> tuple[None, ProofLevel, str]:
        return None, ProofLevel.NONE, what

    return read


_OUTCOMES: Mapping[str, Callable[[Mapping[str, Any]], _Outcome]] = {
    "Delivery": _delivery,
    "Bounce": _bounce,
    "Complaint": _complaint,
    "Reject": _reject,
    "Rendering Failure": _rendering,
    "DeliveryDelay": _delay,
    "Send": _noted("SES accepted the request and will try to deliver it"),
    "Open": _noted("opened (a tracking image was loaded)"),
    "Click": _noted("a link in it was followed"),
    "Subscription": _noted("the recipient changed their subscription preferences"),
}


def _delivery_tag(mail: Mapping[str, Any]) -> str:
    tags = mail.get("tags")
    values = tags.get("delivery") if isinstance(tags, dict) else None
    if isinstance(values, list) and values:
        return _text(values[0])
    return ""


def _describe(record: Mapping[str, Any]) -> SesEvent:
    """What one SES record means for its e-mail."""
    kind = _text(record.get("eventType")) or _text(record.get("notificationType"))
    if not kind:
        raise _RefusedError("neither eventType nor notificationType: not an SES record")
    read = _OUTCOMES.get(kind)
    if read is None:
        raise _RefusedError(f"an SES record of type {kind[:40]!r}, which this reader does not know")
    mail = _object(record.get("mail"), "the record's mail")
    message_id = _text(mail.get("messageId"))
    if not message_id:
        raise _RefusedError(f"a {kind} record without mail.messageId")
    state, proof, detail = read(record)
    feedback = record.get(kind.lower())
    feedback_id = _text(feedback.get("feedbackId")) if isinstance(feedback, dict) else ""
    return SesEvent(
        kind=kind,
        message_id=message_id,
        delivery_tag=_delivery_tag(mail),
        state=state,
        proof=proof,
        detail=f"SES {kind}: {detail}"[:_MAX_DETAIL],
        provider_ref=feedback_id or message_id,
        record=record,
    )


# -- scrubbing -----------------------------------------------------------------------------


def _keeper(addresses: Iterable[str]) -> Callable[[str], bool]:
    """Whether an address stays: a whole address given, or any address at a domain given."""
    whole: set[str] = set()
    domains: set[str] = set()
    for item in addresses:
        value = item.strip().lower()
        if value.startswith("@") or (value and "@" not in value):
            domains.add(value.lstrip("@"))
        elif value:
            whole.add(value)

    def keep(address: str) -> bool:
        lowered = address.lower()
        return lowered in whole or lowered.rpartition("@")[2] in domains

    return keep


def _scrub_value(value: object, keep: Callable[[str], bool]) -> object:
    if isinstance(value, str):
        return _ADDRESS.sub(lambda m: m.group(0) if keep(m.group(0)) else REDACTED, value)
    if isinstance(value, dict):
        return {_scrub_value(k, keep): _scrub_value(v, keep) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_value(v, keep) for v in value]
    return value


def scrub_record(record: Mapping[str, Any], addresses: Iterable[str]) -> dict[str, Any]:
    """The record as evidence to keep: every e-mail address but those in ``addresses`` redacted.

    ``addresses`` are whole addresses (the recipient's, the organisation's) or domains
    (``bounces.example.org`` or ``@bounces.example.org``) whose every address stays. Every
    other address, in any field, header value or key, becomes ``<redacted>``.
    """
    keep = _keeper(addresses)
    return {str(_scrub_value(k, keep)): _scrub_value(v, keep) for k, v in record.items()}


def evidence_bytes(record: Mapping[str, Any]) -> bytes:
    """The bytes kept for a record: its JSON, fields in the order SES sent them."""
    return json.dumps(record, ensure_ascii=False, indent=2).encode("utf-8") + b"\n"


# -- applying ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SesEventTracker:
    """Applies SES records to the deliveries whose e-mails they are about."""

    store: Store
    outbox: Outbox
    keep_addresses: tuple[str, ...]  # the organisation's own addresses and domains
    actor: str

    def track(
        self,
        messages: Iterable[tuple[str, bytes]],
        done: Callable[[str], None] | None = None,
    ) -> TrackReport:
        """Apply every message; ``done(key)`` is called once each is recorded or quarantined."""
        report = TrackReport()
        for key, raw in messages:
            report.read += 1
            report.outcomes[self._one(raw, report)] += 1
            if done is not None:
                done(key)
        return report

    def _one(self, raw: bytes, report: TrackReport) -> str:
        found = read_event(raw)
        if isinstance(found, Unreadable):
            return self._quarantine(raw, f"cannot read this message: {found.reason}", report)
        delivery = self.store.find_part(found.message_id, ChannelName.EMAIL)
        if delivery is None:
            why = f"names no delivery of ours (SES message {found.message_id})"
            return self._quarantine(raw, why, report)
        if found.delivery_tag and found.delivery_tag != delivery.id:
            why = (
                f"tagged for delivery {found.delivery_tag}, but SES message "
                f"{found.message_id} is part of delivery {delivery.id}"
            )
            return self._quarantine(raw, why, report)
        return self._apply(raw, found, delivery, report)

    def _apply(
        self, raw: bytes, found: SesEvent, delivery: DeliveryRow, report: TrackReport
    ) -> str:
        clean = scrub_record(found.record, (*self.keep_addresses, *self._recipient(delivery)))
        cleaned = evidence_bytes(clean)
        path = f"evidence/ses/{hashlib.sha256(cleaned).hexdigest()[:32]}.json"
        if self.store.evidence_recorded(f"delivery:{delivery.id}", path):
            return "already recorded"  # the same record, read again
        detail = _describe(clean).detail  # from the scrubbed record: no supporter's address
        evidence = self.outbox.write(path, cleaned)
        try:
            return self.store.report(
                Report(
                    ref=found.message_id,
                    state=found.state,
                    proof=found.proof,
                    detail=detail,
                    provider_ref=found.provider_ref,
                    artefacts=(evidence,),
                ),
                actor=self.actor,
            )
        except NotFoundError as exc:
            return self._quarantine(raw, str(exc), report)

    def _recipient(self, delivery: DeliveryRow) -> tuple[str, ...]:
        """The address the delivery went to, which the evidence keeps."""
        case = self.store.campaign().case(delivery.case)
        found = [r.email for r in case.recipients if r.slug == delivery.slug] if case else []
        return tuple(email for email in found if email)

    def _quarantine(self, raw: bytes, reason: str, report: TrackReport) -> str:
        report.quarantined.append(quarantine_in(self.outbox, "quarantine/ses", raw, reason))
        return "quarantined"


# -- the queue -----------------------------------------------------------------------------


def _queue_error(queue_url: str, what: str, exc: ClientError | BotoCoreError) -> Exception:
    """A failure to talk to SQS: TransientError when trying again may help."""
    where = f"SQS queue {queue_url}: {what}"
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", "") or "")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        said = " ".join(str(exc.response.get("Error", {}).get("Message", "") or "").split())
        text = f"{where}: {code or 'error'} (HTTP {status or '?'}): {said[:300]}"
        throttled = "throttl" in code.lower() or code == "RequestThrottled"
        return TransientError(text) if throttled or status >= 500 else PermanentError(text)
    said = " ".join(str(exc).split())
    if isinstance(exc, NoConnectionError | HTTPClientError):
        return TransientError(f"{where}: {said}")
    return PermanentError(f"{where}: {said}")  # credentials, region, configuration


def read_queue(
    client: SQSClient, queue_url: str, *, wait_seconds: int = 1
) -> Iterator[tuple[str, bytes]]:
    """Every message waiting in the queue, as (receipt handle, body), until a receive finds none.

    Nothing is deleted: pass each receipt handle to :func:`delete` once its message is
    recorded. A message received stays hidden from other readers for the queue's
    visibility timeout and comes back after it unless deleted. Raises TransientError when
    SQS cannot be reached or is busy, PermanentError when it refuses (no such queue,
    credentials, access).
    """
    while True:
        try:
            answer = client.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=_RECEIVE_BATCH,
                WaitTimeSeconds=wait_seconds,
            )
        except (ClientError, BotoCoreError) as exc:
            raise _queue_error(queue_url, "cannot receive", exc) from exc
        messages = answer.get("Messages", [])
        if not messages:
            return
        for message in messages:
            handle = message.get("ReceiptHandle", "")
            if handle:
                yield handle, message.get("Body", "").encode("utf-8")


def delete(client: SQSClient, queue_url: str, receipt_handle: str) -> None:
    """Take one message off the queue, once what it said is recorded."""
    try:
        client.delete_message(QueueUrl=queue_url, ReceiptHandle=receipt_handle)
    except (ClientError, BotoCoreError) as exc:
        raise _queue_error(queue_url, "cannot delete a message", exc) from exc


def queue_client(settings: Settings) -> SQSClient:
    """An SQS client for ``settings.ses.queue_url``, at the endpoint the queue URL names."""
    ses = settings.ses
    if not ses.queue_url:
        raise ConfigurationError("no SQS queue set for SES events (SOLIDARITY_SES__QUEUE_URL)")
    if not ses.region:
        raise ConfigurationError("no SES region set (SOLIDARITY_SES__REGION)")
    url = urlsplit(ses.queue_url)
    if url.scheme not in ("https", "http") or not url.netloc:
        raise ConfigurationError(f"SES queue URL {ses.queue_url!r} is not an SQS queue URL")
    config = Config(connect_timeout=10, read_timeout=60, retries={"mode": "standard"})
    try:
        return boto3.session.Session().client(
            "sqs",
            region_name=ses.region,
            endpoint_url=f"{url.scheme}://{url.netloc}",
            config=config,
        )
    except (BotoCoreError, ValueError) as exc:
        raise ConfigurationError(f"SQS client not usable: {exc}") from exc


def track_ses(
    settings: Settings,
    store: Store,
    outbox: Outbox,
    *,
    keep_addresses: Iterable[str],
    actor: str,
) -> TrackReport:
    """Read the SES event queue until it is empty, applying and deleting each message."""
    client = queue_client(settings)
    queue_url = settings.ses.queue_url
    tracker = SesEventTracker(
        store=store, outbox=outbox, keep_addresses=tuple(keep_addresses), actor=actor
    )
    try:
        return tracker.track(
            read_queue(client, queue_url),
            done=lambda handle: delete(client, queue_url, handle),
        )
    finally:
        client.close()
