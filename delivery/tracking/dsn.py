"""Bounce reports, read without trusting them.

``classify`` turns the raw bytes of a message that arrived at the bounce address into one
of three answers:

* ``BounceReport``: a delivery status notification (RFC 3464 inside an RFC 3462
  ``multipart/report``, which is what Postfix, Exim, Sendmail, Gmail and Exchange/Office 365
  send), or one of the plain-text bounces some MTAs still send (qmail, old Exim). A
  plain-text bounce is accepted only when it names one of our deliveries *and* carries a
  clear 4xx or 5xx status.
* ``NotABounce``: an auto-reply (out-of-office and the like). Nothing to record.
* ``Unparseable``: everything else, malformed and hostile input included. A person reads
  it; nothing is guessed.

The delivery id comes, in this order, from the envelope recipient the report was sent to
(``bounces+<delivery-id>@<bounce_domain>``), from the Message-ID of the returned message
or headers, then from X-Original-Message-ID, In-Reply-To or References. Only ids at our
bounce domain count. A report whose envelope and returned Message-ID name two different
deliveries is Unparseable.

``outcome`` maps a report to a delivery state and a proof level. ``scrub`` takes the
addresses of supporters and recipients out of the evidence that is kept. Pure: no I/O.
"""

from __future__ import annotations

import base64
import contextlib
import email
import hashlib
import html
import quopri
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email import policy as email_policy
from email.errors import HeaderParseError
from email.generator import BytesGenerator
from email.header import Header, decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.utils import collapse_rfc2231_value, parseaddr
from io import BytesIO
from typing import Literal, get_args

from delivery.models import DeliveryState, ProofLevel

Action = Literal["failed", "delayed", "delivered", "relayed", "expanded"]
_ACTIONS: Mapping[str, Action] = {name: name for name in get_args(Action)}
# The status classes RFC 3464 allows with each action: a "failed" with 2.0.0 is not read.
_STATUS_CLASSES: Mapping[Action, str] = {
    "failed": "45",
    "delayed": "4",
    "delivered": "2",
    "relayed": "2",
    "expanded": "2",
}

MAX_REPORT_BYTES = 32 * 1024 * 1024  # a returned copy may carry a whole bundle PDF
REDACTED = "<redacted>"

_MAX_HEADER = 8 * 1024  # characters of one header value looked at
_MAX_TEXT = 256 * 1024  # characters of readable text searched
_MAX_PARTS = 200  # MIME parts of a report looked at
_MAX_BLOCKS = 101  # delivery-status blocks: the per-message one and 100 recipients
_ID = r"dlv-[0-9a-f]{20}"
_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
_STATUS_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_RETURNED_TYPES = frozenset(
    {
        "message/rfc822",
        "message/global",
        "text/rfc822-headers",
        "message/rfc822-headers",
        "message/global-headers",
    }
)
_ENVELOPE_HEADERS = (
    "Delivered-To",
    "X-Original-To",
    "Envelope-To",
    "X-Envelope-To",
    "To",
    "Received",
)
_REFERRING_HEADERS = ("X-Original-Message-ID", "In-Reply-To", "References")
_TYPED = re.compile(r"^[A-Za-z0-9-]{1,20}[ \t]*;[ \t]*")

# Plain-text bounces and auto-replies, recognised by their wording.
_DAEMON = re.compile(r"(?:mailer[-_]?daemon|postmaster|mail[-_]?daemon)@", re.I)
_QMAIL = re.compile(r"This is the qmail-send program", re.I)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|returned mail|failure notice|delivery status notification"
    r"|delivery (?:failure|has failed|problem)|mail delivery (?:failed|failure)"
    r"|unzustellbar|nicht zustellbar|non remis|non recapitabile",
    re.I,
)
_OUT_OF_OFFICE = re.compile(
    r"out of (?:the )?office|automatic reply|auto[- ]?reply|abwesenheitsnotiz"
    r"|automatische antwort|r[ée]ponse automatique|respuesta autom[aá]tica"
    r"|risposta automatica|automatisch antwoord",
    re.I,
)
_AUTO_REPLY_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Autoresponder")
_COPY_MARKER = re.compile(
    r"^[ \t]*-{2,}[ \t]*(?:below this line is a copy of the message|this is a copy of"
    r"|original message|the original message|message headers follow)",
    re.I | re.M,
)
_RECIPIENT_LINE = re.compile(r"^<([^<>\s@]{1,64}@[^<>\s@]{1,255})>:[ \t]*$", re.M)
_ADDRESS_LINE = re.compile(r"^[ \t]*<?([^<>\s@:]{1,64}@[^<>\s@:]{1,255})>?:?[ \t]*$", re.M)
_ENHANCED = re.compile(r"(?<![\d.])[45]\.\d{1,3}\.\d{1,3}(?!\.?\d)")
_REPLY_CODE = re.compile(r"(?:^|said:|\bsmtp;)[ \t]*([45][0-5]\d)(?=[ \t-])", re.I | re.M)
_DELAY_WORDS = re.compile(
    r"\bdelayed\b|will (?:keep|continue) trying|still trying|not yet been delivered",
    re.I,
)
_REMOTE = re.compile(
    r"\b(?:giving up on|connected to|host)[ \t]+\[?([a-z0-9-]+(?:\.[a-z0-9-]+)+)", re.I
)
_TAG = re.compile(r"<[^<>]{0,2000}>")
_LINE_TAG = re.compile(r"<(?:br|/p|/div|/tr|/li)\b[^<>]{0,200}>", re.I)

# An address, in bytes so that any charset and raw 8-bit text is covered. Lengths are
# bounded so that a long run of letters costs linear time.
_LOCAL = rb"(?:\"[^\"\\\r\n]{1,64}\"|[A-Za-z0-9.!#$%&'*+/=?^_`{|}~\x80-\xff-]{1,64})"
_LABEL = rb"[A-Za-z0-9\x80-\xff-]{1,63}"
_DOMAIN = rb"(?:\[[0-9A-Fa-f:.IPv]{1,50}\]|" + _LABEL + rb"(?:\." + _LABEL + rb"){0,10})"
_BARE = _LOCAL + rb"@" + _DOMAIN
_ADDRESS = re.compile(rb"<[ \t]*(" + _BARE + rb")[ \t]*>|(" + _BARE + rb")")
_UUENCODE = frozenset({"x-uuencode", "uuencode", "uue", "x-uue"})
_ENCODED_WORD = re.compile(r"=\?[^?\s]{1,40}\?[bBqQ]\?[^?\s]{0,2000}\?=")


@dataclass(frozen=True, kw_only=True)
class RecipientStatus:
    """One per-recipient block of a report.

    Values are as reported, with the address type of Final-Recipient, Original-Recipient
    and Remote-MTA (``rfc822;``, ``dns;``) taken off; Diagnostic-Code keeps its type
    (``smtp; 550 5.1.1 user unknown``).
    """

    final_recipient: str
    original_recipient: str
    action: Action
    status: str
    diagnostic: str
    remote_mta: str
    last_attempt: str


@dataclass(frozen=True, kw_only=True)
class BounceReport:
    """What a bounce says about one delivery.

    The top-level fields are the first recipient's block: the service sends one recipient
    per message. Every block is kept in ``recipients`` for the record. ``delivery_id`` is
    None only for a well-formed RFC 3464 report that names none of our deliveries: a
    person should look. ``arrival`` is the report's Arrival-Date, else the first
    recipient's Last-Attempt-Date, else empty. ``source_id`` is the report's own
    Message-ID, or ``sha256:<hex>`` of its bytes when it has none: record it to apply
    each report once. ``standard`` is False for a plain-text bounce read by its wording;
    its status may then be a class only (``5.0.0`` from a bare ``550``).
    """

    delivery_id: str | None
    action: Action
    status: str
    diagnostic: str
    remote_mta: str
    final_recipient: str
    arrival: str
    source_id: str
    reporting_mta: str = ""
    standard: bool = True
    recipients: tuple[RecipientStatus, ...] = ()


@dataclass(frozen=True, kw_only=True)
class NotABounce:
    """An auto-reply or out-of-office notice: says nothing about delivery."""

    reason: str


@dataclass(frozen=True, kw_only=True)
class Unparseable:
    """A message that cannot be read as a report: quarantine it for a person."""

    reason: str


class _RefusedError(Exception):
    """Raised while reading a report that cannot be read; the message is the reason."""


@dataclass(frozen=True)
class _Patterns:
    envelope: re.Pattern[str]
    message_id: re.Pattern[str]


def _patterns(bounce_domain: str) -> _Patterns:
    domain = bounce_domain.strip().lower()
    if not domain or "@" in domain or any(ch.isspace() for ch in domain):
        raise ValueError(f"bounce domain {bounce_domain!r} is not a mail domain")
    host = re.escape(domain)
    return _Patterns(
        envelope=re.compile(rf"(?<![\w.+-])bounces\+({_ID})@{host}(?!\.?[\w-])", re.I),
        message_id=re.compile(rf"<[ \t]*({_ID})(?:\.\d{{1,4}})?@{host}[ \t]*>", re.I),
    )


def classify(raw: bytes, *, bounce_domain: str) -> BounceReport | NotABounce | Unparseable:
    """Read one message that arrived at the bounce address.

    Never raises on the message: anything it cannot read, malformed MIME, huge headers
    and unknown charsets included, is ``Unparseable`` with a reason. Raises ValueError
    only for a ``bounce_domain`` that is not a domain.
    """
    patterns = _patterns(bounce_domain)
    if len(raw) > MAX_REPORT_BYTES:
        return Unparseable(reason=f"{len(raw)} bytes, more than the {MAX_REPORT_BYTES} read")
    try:
        return _classify(raw, patterns)
    except _RefusedError as refused:
        return Unparseable(reason=str(refused))
    except Exception as exc:  # hostile input must never stop the reader
        return Unparseable(reason=f"the message could not be read ({type(exc).__name__})")


def _classify(raw: bytes, patterns: _Patterns) -> BounceReport | NotABounce:
    msg = email.message_from_bytes(raw, policy=email_policy.compat32)
    parts = _own_parts(msg)
    source_id = _source_id(msg, raw)
    kind = _report_kind(msg, parts)
    if kind == "delivery-status":
        return _standard(msg, parts, patterns, source_id)
    if kind is not None:
        raise _RefusedError(f"a multipart/report of type {kind[:40]!r}, not a delivery status")
    text = _readable(parts)
    if not _plainly_a_bounce(msg, text):
        reply = _auto_reply(msg)
        if reply is not None:
            return NotABounce(reason=reply)
        if not _BOUNCE_SUBJECT.search(_header(msg, "Subject")):
            raise _RefusedError("neither a delivery report nor an auto-reply")
    return _plain_bounce(msg, parts, text, patterns, source_id)


def outcome(report: BounceReport) -> tuple[DeliveryState | None, ProofLevel]:
    """The delivery state a report moves its delivery to, and the proof it gives.

    * failed with a 5.x.x status: ``(BOUNCED, NONE)``, refused for good.
    * failed with a 4.x.x status: ``(None, NONE)``. The reporting MTA gave up on a
      condition it calls transient (full mailbox, host unreachable): noted for a person,
      not taken as a refusal.
    * delayed: ``(None, NONE)``. Still being retried; noted only.
    * delivered: ``(DELIVERED, MTA_ACCEPTED)``. The final MTA put it in the mailbox, the
      strongest proof e-mail gives.
    * expanded: ``(DELIVERED, MTA_ACCEPTED)``. It was delivered to the address we sent
      to, which is a list that passed it on (RFC 3464 2.3.3); delivery to that address
      is what was asked.
    * relayed: ``(ACCEPTED, MTA_ACCEPTED)``. It was handed to a system that sends no
      reports (RFC 3464 2.3.3), so it shows only that a server further along took it,
      no more than an SMTP 250 does. DELIVERED would claim more than the report shows.
      A delivery already ACCEPTED or DELIVERED stays where it is: apply the state only
      where the state machine allows the move.
    """
    if report.action == "failed":
        state = DeliveryState.BOUNCED if report.status.startswith("5") else None
        return state, ProofLevel.NONE
    if report.action == "delayed":
        return None, ProofLevel.NONE
    if report.action == "relayed":
        return DeliveryState.ACCEPTED, ProofLevel.MTA_ACCEPTED
    return DeliveryState.DELIVERED, ProofLevel.MTA_ACCEPTED


# -- headers and parts ---------------------------------------------------------------------


def _plain(text: str) -> str:
    """Text with raw 8-bit bytes read as UTF-8 (bad ones replaced) and whitespace folded."""
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        data = text.encode("utf-8", "replace")
    return " ".join(data.decode("utf-8", "replace").split())


def _decoded_header(value: object) -> str:
    text = str(value)[:_MAX_HEADER]
    if "=?" in text:
        with contextlib.suppress(HeaderParseError, LookupError, UnicodeError, ValueError):
            text = str(make_header(decode_header(text)))
    return _plain(text)


def _headers(msg: Message, name: str) -> list[str]:
    wanted = name.lower()
    found = [value for key, value in msg.raw_items() if key.lower() == wanted]
    return [_decoded_header(value) for value in found[:20]]


def _header(msg: Message, name: str) -> str:
    values = _headers(msg, name)
    return values[0] if values else ""


def _source_id(msg: Message, raw: bytes) -> str:
    value = _header(msg, "Message-ID")
    bracketed = re.search(r"<[^<>\s]{1,250}>", value)
    if bracketed:
        return bracketed.group(0)
    return value[:250] if value else f"sha256:{hashlib.sha256(raw).hexdigest()}"


def _own_parts(msg: Message) -> list[Message]:
    """The report's own MIME parts, depth first; returned messages are listed, not entered."""
    parts: list[Message] = []
    stack = [msg]
    while stack and len(parts) < _MAX_PARTS:
        part = stack.pop()
        parts.append(part)
        payload = part.get_payload()
        if part.get_content_maintype() == "multipart" and isinstance(payload, list):
            stack.extend(reversed([p for p in payload if isinstance(p, Message)]))
    return parts


def _text_of(part: Message) -> str:
    """A leaf part's content as text, in its declared charset (UTF-8 when unknown)."""
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    data = data[: _MAX_TEXT * 4]
    try:
        return data.decode(part.get_content_charset() or "utf-8", "replace")
    except (LookupError, ValueError):  # an unknown charset, or a codec that is not text
        return data.decode("utf-8", "replace")


def _readable(parts: list[Message]) -> str:
    """The human-readable text of a message: its text/plain and text/html parts."""
    chunks: list[str] = []
    for part in parts:
        ctype = part.get_content_type()
        if ctype == "text/plain":
            chunks.append(_text_of(part))
        elif ctype == "text/html":
            marked = _LINE_TAG.sub("\n", _text_of(part))
            chunks.append(html.unescape(_TAG.sub(" ", marked)))
        if sum(len(chunk) for chunk in chunks) > _MAX_TEXT:
            break
    return "\n".join(chunks)[:_MAX_TEXT]


def _report_kind(msg: Message, parts: list[Message]) -> str | None:
    """``delivery-status`` for a DSN, another report type's name, None for no report."""
    if any(part.get_content_type() in _STATUS_TYPES for part in parts):
        return "delivery-status"
    if msg.get_content_type() != "multipart/report":
        return None
    param = msg.get_param("report-type")
    kind = _plain(collapse_rfc2231_value(param)).lower() if param else ""
    if kind in ("delivery-status", "global-delivery-status"):
        return "delivery-status"
    return kind or "unnamed"


# -- the delivery id -----------------------------------------------------------------------


def _first_id(pattern: re.Pattern[str], texts: Iterable[str]) -> str | None:
    for text in texts:
        found = pattern.search(text)
        if found:
            return found.group(1).lower()
    return None


def _returned_headers(part: Message) -> Message | None:
    payload = part.get_payload()
    if isinstance(payload, list):
        first = payload[0] if payload else None
        return first if isinstance(first, Message) else None
    parser = HeaderParser(policy=email_policy.compat32)
    return parser.parsestr(_text_of(part)[:_MAX_TEXT], headersonly=True)


def _returned_ids(parts: list[Message]) -> list[str]:
    """The Message-ID of every returned message or header block in the report."""
    ids: list[str] = []
    for part in parts:
        if part.get_content_type() in _RETURNED_TYPES:
            headers = _returned_headers(part)
            if headers is not None:
                ids.extend(_headers(headers, "Message-ID"))
    return ids


def _delivery_id(
    msg: Message, patterns: _Patterns, returned: list[str], extra: list[str]
) -> str | None:
    """Envelope recipient, else returned Message-ID, else the referring headers."""
    envelope_values = [v for name in _ENVELOPE_HEADERS for v in _headers(msg, name)]
    envelope = _first_id(patterns.envelope, envelope_values)
    original = _first_id(patterns.message_id, returned)
    if envelope and original and envelope != original:
        raise _RefusedError(f"sent to {envelope} but returns the message of {original}")
    if envelope or original:
        return envelope or original
    referring = [v for name in _REFERRING_HEADERS for v in _headers(msg, name)]
    return _first_id(patterns.message_id, [*extra, *referring])


# -- RFC 3464 reports ----------------------------------------------------------------------


def _untyped(value: str) -> str:
    return _TYPED.sub("", value, count=1).strip()


def _fields(block: Message) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name, value in list(block.raw_items())[:100]:
        fields.setdefault(name.strip().lower(), _decoded_header(value))
    return fields


def _parse_blocks(text: str) -> list[dict[str, str]]:
    """Delivery-status fields, one dict per block; for parts the parser left as text."""
    blocks: list[dict[str, str]] = [{}]
    name = ""
    for line in text.splitlines()[:5000]:
        block = blocks[-1]
        if not line.strip():
            if block:
                blocks.append({})
            name = ""
        elif line[0] in " \t":
            if name:
                block[name] = _plain(f"{block[name]} {line[:_MAX_HEADER]}")[:_MAX_HEADER]
        else:
            key, colon, value = line.partition(":")
            name = key.strip().lower() if colon and key.strip().lower() not in block else ""
            if name:
                block[name] = _plain(value[:_MAX_HEADER])
    return [block for block in blocks if block]


def _status_blocks(part: Message) -> list[dict[str, str]]:
    """The blocks of a status part, however the parser left it.

    message/delivery-status comes as one header-only message per block; any other
    message/* type (RFC 6533's global one) as one message whose body holds the rest.
    """
    payload = part.get_payload()
    if not isinstance(payload, list):
        return _parse_blocks(_text_of(part))
    blocks = [p for p in payload[: _MAX_BLOCKS + 1] if isinstance(p, Message)]
    bodies = [block.get_payload(decode=True) for block in blocks]
    rest = b"\n\n".join(body[: _MAX_TEXT * 4] for body in bodies if isinstance(body, bytes))
    return [_fields(block) for block in blocks] + _parse_blocks(rest.decode("utf-8", "replace"))


def _is_recipient_block(block: Mapping[str, str]) -> bool:
    return any(name in block for name in ("action", "final-recipient", "status"))


def _split_blocks(
    blocks: list[dict[str, str]],
) -> tuple[dict[str, str], list[dict[str, str]]]:
    if len(blocks) > _MAX_BLOCKS:
        raise _RefusedError("more delivery-status blocks than a report on one message has")
    head = blocks[0] if blocks and not _is_recipient_block(blocks[0]) else {}
    recipients = [block for block in blocks if _is_recipient_block(block)]
    if not recipients:
        raise _RefusedError("the delivery-status part has no per-recipient block")
    return head, recipients


def _problem(action: str, status: str, final: str) -> str | None:
    known = _ACTIONS.get(action)
    if known is None:
        return f"Action {action[:40]!r} is not one RFC 3464 defines"
    if not _STATUS.fullmatch(status):
        return f"Status {status[:40]!r} is not a status code"
    if status[0] not in _STATUS_CLASSES[known]:
        return f"Action {known} cannot have Status {status}"
    return None if final else "no Final-Recipient"


def _recipient(block: Mapping[str, str], number: int) -> RecipientStatus:
    action = (block.get("action", "").split() or [""])[0].lower()
    status = (block.get("status", "").split() or [""])[0]
    final = _untyped(block.get("final-recipient", ""))
    problem = _problem(action, status, final)
    if problem is not None:
        raise _RefusedError(f"recipient block {number}: {problem}")
    return RecipientStatus(
        final_recipient=final,
        original_recipient=_untyped(block.get("original-recipient", "")),
        action=_ACTIONS[action],
        status=status,
        diagnostic=block.get("diagnostic-code", ""),
        remote_mta=_untyped(block.get("remote-mta", "")),
        last_attempt=block.get("last-attempt-date", ""),
    )


def _standard(
    msg: Message, parts: list[Message], patterns: _Patterns, source_id: str
) -> BounceReport:
    status_part = next((p for p in parts if p.get_content_type() in _STATUS_TYPES), None)
    if status_part is None:
        raise _RefusedError("a delivery-status report without its message/delivery-status part")
    head, blocks = _split_blocks(_status_blocks(status_part))
    recipients = tuple(_recipient(block, n) for n, block in enumerate(blocks, start=1))
    extra = [head.get("x-original-message-id", "")]
    first = recipients[0]
    return BounceReport(
        delivery_id=_delivery_id(msg, patterns, _returned_ids(parts), extra),
        action=first.action,
        status=first.status,
        diagnostic=first.diagnostic,
        remote_mta=first.remote_mta,
        final_recipient=first.final_recipient,
        arrival=head.get("arrival-date", "") or first.last_attempt,
        source_id=source_id,
        reporting_mta=_untyped(head.get("reporting-mta", "")),
        standard=True,
        recipients=recipients,
    )


# -- plain-text bounces and auto-replies ---------------------------------------------------


def _plainly_a_bounce(msg: Message, text: str) -> bool:
    """From a mailer daemon, naming failed recipients, or in qmail's words."""
    sender = parseaddr(_header(msg, "From"))[1]
    return bool(
        _DAEMON.match(sender) or _header(msg, "X-Failed-Recipients") or _QMAIL.search(text[:4000])
    )


def _auto_reply(msg: Message) -> str | None:
    submitted = _header(msg, "Auto-Submitted").split(";")[0].strip().lower()
    if submitted and submitted != "no":
        return f"auto-reply (Auto-Submitted: {submitted[:40]})"
    for name in _AUTO_REPLY_HEADERS:
        values = _headers(msg, name)
        if values and values[0].lower() not in ("no", "false", "0"):
            return f"auto-reply ({name})"
    if _header(msg, "Precedence").lower() == "auto_reply":
        return "auto-reply (Precedence: auto_reply)"
    if _OUT_OF_OFFICE.search(_header(msg, "Subject")):
        return "out-of-office (by its subject)"
    return None


def _line_at(text: str, position: int) -> str:
    start = text.rfind("\n", 0, position) + 1
    end = text.find("\n", position)
    return " ".join(text[start : end if end >= 0 else len(text)].split())[:500]


def _text_status(block: str) -> tuple[str, str]:
    """The first clear status in a bounce's wording, and the line it is on."""
    enhanced = _ENHANCED.search(block)
    if enhanced:
        return enhanced.group(0), _line_at(block, enhanced.start())
    code = _REPLY_CODE.search(block)
    if code:
        return f"{code.group(1)[0]}.0.0", _line_at(block, code.start(1))
    raise _RefusedError("a plain-text bounce without a clear 4xx or 5xx status")


def _text_blocks(msg: Message, section: str) -> list[tuple[str, str]]:
    """(recipient, its text): qmail's ``<address>:`` blocks, else the whole section.

    The whole section's recipient is the first X-Failed-Recipients, else the first line
    that is an address alone, as Exim lists them.
    """
    marks = list(_RECIPIENT_LINE.finditer(section))[:_MAX_BLOCKS]
    if not marks:
        failed = _header(msg, "X-Failed-Recipients").split(",")[0].strip()
        alone = _ADDRESS_LINE.search(section)
        return [(failed or (alone.group(1) if alone else ""), section)]
    ends = [mark.start() for mark in marks[1:]] + [len(section)]
    return [(m.group(1), section[m.end() : end]) for m, end in zip(marks, ends, strict=True)]


def _text_recipient(address: str, block: str, section: str) -> RecipientStatus:
    status, line = _text_status(block)
    delayed = status.startswith("4") and _DELAY_WORDS.search(section) is not None
    remote = _REMOTE.search(block)
    return RecipientStatus(
        final_recipient=address,
        original_recipient="",
        action="delayed" if delayed else "failed",
        status=status,
        diagnostic=line,
        remote_mta=remote.group(1) if remote else "",
        last_attempt="",
    )


def _plain_bounce(
    msg: Message, parts: list[Message], text: str, patterns: _Patterns, source_id: str
) -> BounceReport:
    marker = _COPY_MARKER.search(text)
    section = text[: marker.start()] if marker else text
    blocks = _text_blocks(msg, section)
    recipients = tuple(_text_recipient(address, block, section) for address, block in blocks)
    delivery_id = _delivery_id(msg, patterns, [*_returned_ids(parts), text], [])
    if delivery_id is None:
        raise _RefusedError("a plain-text bounce that names none of our deliveries")
    first = recipients[0]
    return BounceReport(
        delivery_id=delivery_id,
        action=first.action,
        status=first.status,
        diagnostic=first.diagnostic,
        remote_mta=first.remote_mta,
        final_recipient=first.final_recipient,
        arrival="",
        source_id=source_id,
        standard=False,
        recipients=recipients,
    )


# -- scrubbing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Keep:
    """The organisation's own addresses: whole addresses and whole domains."""

    addresses: frozenset[bytes]
    domains: frozenset[bytes]

    @classmethod
    def of(cls, items: Iterable[str]) -> _Keep:
        addresses: set[bytes] = set()
        domains: set[bytes] = set()
        for item in items:
            value = item.strip().lower().encode("utf-8")
            if value.startswith(b"@") or (value and b"@" not in value):
                domains.add(value.lstrip(b"@"))
            elif value:
                addresses.add(value)
        return cls(frozenset(addresses), frozenset(domains))

    def __call__(self, address: bytes) -> bool:
        lowered = address.lower()
        return lowered in self.addresses or lowered.rpartition(b"@")[2] in self.domains


def _scrub_bytes(data: bytes, keep: _Keep) -> bytes:
    def replace(match: re.Match[bytes]) -> bytes:
        address = match.group(1) or match.group(2)
        return match.group(0) if keep(address) else REDACTED.encode()

    return _ADDRESS.sub(replace, data)


def _scrub_text(text: str, keep: _Keep) -> str:
    """Scrub a string the parser made from bytes (raw 8-bit bytes kept as surrogates)."""
    try:
        data = text.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        data = text.encode("utf-8", "surrogateescape")
    return _scrub_bytes(data, keep).decode("ascii", "surrogateescape")


def _scrub_encoded_word(word: str, keep: _Keep) -> str:
    try:
        decoded = str(make_header(decode_header(word))).encode("utf-8")
    except (HeaderParseError, LookupError, UnicodeError, ValueError):
        return word
    clean = _scrub_bytes(decoded, keep)
    if clean == decoded:
        return word
    return Header(clean.decode("utf-8"), "utf-8").encode(maxlinelen=0)


def _scrub_header_value(value: object, keep: _Keep) -> str:
    text = _ENCODED_WORD.sub(lambda m: _scrub_encoded_word(m.group(0), keep), str(value))
    return _scrub_text(text, keep)


def _scrub_headers(part: Message, keep: _Keep) -> None:
    items = list(part.raw_items())
    clean = [(name, _scrub_header_value(value, keep)) for name, value in items]
    if clean == items:
        return
    for name in {name for name, _ in items}:
        del part[name]
    for name, value in clean:
        part[name] = value


def _scrub_body(part: Message, keep: _Keep) -> None:
    """Scrub a leaf part's content in its transfer encoding, the bytes otherwise kept."""
    cte = _header(part, "Content-Transfer-Encoding").lower()
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return
    clean = _scrub_bytes(data, keep)
    if clean == data:
        return
    if cte == "base64":
        part.set_payload(base64.encodebytes(clean).decode("ascii"))
    elif cte == "quoted-printable":
        part.set_payload(quopri.encodestring(clean.replace(b"\r\n", b"\n")).decode("ascii"))
    else:
        part.set_payload(clean.decode("ascii", "surrogateescape"))


def _drop_body(part: Message, payload: str) -> None:
    """Replace a part not searched for addresses (a PDF, an image, uuencoded) by a note."""
    ctype = re.sub(r"[^\w.+/-]", "", part.get_content_type())[:80]
    for name in {name for name in part if name.lower().startswith("content-")}:
        del part[name]
    part["Content-Type"] = 'text/plain; charset="us-ascii"'
    part.set_payload(f"[a {ctype} part of {len(payload)} encoded bytes was removed]\n")


def _scrub_part(part: Message, keep: _Keep) -> None:
    _scrub_headers(part, keep)
    if isinstance(part.preamble, str):
        part.preamble = _scrub_text(part.preamble, keep)
    if isinstance(part.epilogue, str):
        part.epilogue = _scrub_text(part.epilogue, keep)
    payload = part.get_payload()
    if not isinstance(payload, str):
        return
    uuencoded = _header(part, "Content-Transfer-Encoding").lower() in _UUENCODE
    if part.get_content_maintype() in ("text", "message", "multipart") and not uuencoded:
        _scrub_body(part, keep)
    else:
        _drop_body(part, payload)


def _as_bytes(msg: Message, *, crlf: bool) -> bytes:
    out = BytesIO()
    flat = email_policy.compat32.clone(linesep="\r\n" if crlf else "\n", max_line_length=0)
    BytesGenerator(out, mangle_from_=False, policy=flat).flatten(msg)
    return out.getvalue()


def scrub(raw: bytes, addresses: Iterable[str]) -> bytes:
    """The report as evidence to keep: every e-mail address but the organisation's redacted.

    ``addresses`` are the organisation's own, which stay: a whole address
    (``write4rights@example.org``), or a domain for every address at it
    (``bounces.example.org`` or ``@bounces.example.org``: the bounce addresses and our
    Message-IDs). Every other address, in any header or body, returned messages and
    delivery-status fields included, becomes ``<redacted>``; so does anything shaped like
    an address, such as other servers' Message-IDs, so take ``source_id`` first.
    Base64 and quoted-printable text is decoded, scrubbed and encoded again. Parts that
    cannot be searched (PDFs, images, other binary) are replaced by a one-line note. The
    result still parses as e-mail. Should the structure defeat the parser, the raw bytes
    are scrubbed as they stand.
    """
    keep = _Keep.of(addresses)
    try:
        msg = email.message_from_bytes(raw, policy=email_policy.compat32)
        for part in msg.walk():
            _scrub_part(part, keep)
        return _as_bytes(msg, crlf=b"\r\n" in raw[:8192])
    except Exception:  # hostile structure: fall back to the bytes as they stand
        return _scrub_bytes(raw, keep)
