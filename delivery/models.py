"""Frozen domain types and the state machines. Pure: no I/O."""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from delivery.errors import InvalidTransitionError

# The columns of a message file (CSV header or JSON keys), in their documented order.
MESSAGE_COLUMNS = (
    "external_id",
    "case",
    "to",
    "supporter_name",
    "supporter_email",
    "supporter_city",
    "supporter_country",
    "language",
    "kind",
    "body",
    "submitted_at",
    "event",
)


class RecipientKind(enum.StrEnum):
    AUTHORITY = "authority"  # government desk: case, demand and count
    PRISON = "prison"  # the prisoner: first names and countries only
    FAMILY = "family"  # the family home: warm cover, privacy


class ChannelName(enum.StrEnum):
    EMAIL = "email"  # SMTP, or an .eml file in the outbox
    FAX = "fax"  # fax gateway, or a fax-ready PDF and job file
    POST = "post"  # print-and-post: print job and mailroom manifest


class Format(enum.StrEnum):
    BUNDLE = "bundle"  # a printable PDF of every message
    DIGEST = "digest"  # an e-mail: counts, a sample, the bundle attached


class Fallback(enum.StrEnum):
    """What happens when a delivery fails for good on one of a recipient's channels."""

    REVIEW = "review"  # wait for a person (`solidarity review deliveries`)
    AUTO = "auto"  # try the recipient's next channel at once


class Cadence(enum.StrEnum):
    ONCE = "once"  # one automatic bundle; later messages wait for an on-demand run
    DAILY = "daily"  # at most one bundle per UTC day
    WEEKLY = "weekly"  # at most one bundle per ISO week


class MessageKind(enum.StrEnum):
    LETTER = "letter"  # a written letter, personal or pre-written
    EMAIL = "email"  # an e-mail sent through a campaign form
    FAX = "fax"  # a fax message
    TWEET = "tweet"  # a short public message
    PETITION = "petition"  # a petition line, signed
    SIGNATURE = "signature"  # a name only: no body

    @property
    def needs_body(self) -> bool:
        return self is not MessageKind.SIGNATURE


class ReviewState(enum.StrEnum):
    PENDING = "pending"  # waiting for a caseworker
    APPROVED = "approved"  # will be delivered
    REJECTED = "rejected"  # never delivered
    HELD = "held"  # set aside by a caseworker


class DeliveryState(enum.StrEnum):
    QUEUED = "queued"  # waiting for its channel
    SENDING = "sending"  # intent committed, transport under way
    ACCEPTED = "accepted"  # the provider took it (SMTP 250, fax queued)
    DELIVERED = "delivered"  # the strongest proof the channel gives
    DEFERRED = "deferred"  # transient failure, will retry
    FAILED = "failed"  # permanent failure
    BOUNCED = "bounced"  # a delivery status notification said no
    RETURNED = "returned"  # post came back to the sender
    HELD = "held"  # stopped by a caseworker; release resumes it
    CANCELLED = "cancelled"  # will never be sent
    UNKNOWN = "unknown"  # the provider may have it; settled by a person, never resent blindly
    SPOOLED = "spooled"  # written to the outbox for a human or a later transport


class ProofLevel(enum.IntEnum):
    NONE = 0  # no outside evidence
    MTA_ACCEPTED = 1  # a mail server accepted it
    CARRIER_SCAN = 2  # the postal carrier scanned it
    FAX_CONFIRMED = 3  # the receiving fax confirmed the pages
    SIGNED_RECEIPT = 4  # a signed receipt came back

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


_S = DeliveryState
TRANSITIONS: Mapping[DeliveryState, frozenset[DeliveryState]] = {
    _S.QUEUED: frozenset({_S.SENDING, _S.HELD, _S.CANCELLED}),
    _S.SENDING: frozenset(
        {_S.ACCEPTED, _S.DELIVERED, _S.SPOOLED, _S.DEFERRED, _S.FAILED, _S.UNKNOWN}
    ),
    # ACCEPTED → DEFERRED: a fax gateway took it, then the line was busy; it is tried again.
    _S.ACCEPTED: frozenset({_S.DELIVERED, _S.BOUNCED, _S.FAILED, _S.RETURNED, _S.DEFERRED}),
    _S.DELIVERED: frozenset({_S.BOUNCED, _S.RETURNED}),
    _S.DEFERRED: frozenset({_S.SENDING, _S.HELD, _S.CANCELLED, _S.FAILED}),
    _S.FAILED: frozenset(),
    _S.BOUNCED: frozenset(),
    _S.RETURNED: frozenset(),
    _S.HELD: frozenset({_S.QUEUED, _S.CANCELLED}),
    _S.CANCELLED: frozenset(),
    # UNKNOWN → QUEUED only by a person's decision (same Message-ID), never by the worker.
    _S.UNKNOWN: frozenset({_S.ACCEPTED, _S.DELIVERED, _S.FAILED, _S.BOUNCED, _S.QUEUED}),
    _S.SPOOLED: frozenset({_S.ACCEPTED, _S.DELIVERED, _S.RETURNED, _S.CANCELLED}),
}
HOLDABLE: frozenset[DeliveryState] = frozenset({_S.QUEUED, _S.DEFERRED})


def check_transition(old: DeliveryState, new: DeliveryState) -> DeliveryState:
    """Return `new` when the machine allows `old -> new`, else raise."""
    if new not in TRANSITIONS[old]:
        raise InvalidTransitionError(f"delivery cannot move from {old} to {new}")
    return new


_NEGATIVE = (_S.RETURNED, _S.BOUNCED, _S.FAILED)
_PROGRESS = (_S.SPOOLED, _S.ACCEPTED, _S.DELIVERED)


@dataclass(frozen=True, kw_only=True)
class Part:
    """One piece of a delivery that its provider tracks on its own.

    The e-mails of a digest split for size, the faxes of a bundle over the gateway's page
    limit, the envelopes of a prison bundle: each has its own provider reference and moves
    on its own; the delivery's state is what all of them say together (:func:`combined`).
    """

    number: int  # 1-based
    count: int
    ref: str  # the provider's reference: Message-ID, fax id, envelope id
    state: DeliveryState
    proof: ProofLevel = ProofLevel.NONE
    detail: str = ""


def combined(parts: Sequence[Part]) -> tuple[DeliveryState, ProofLevel] | None:
    """The state all the parts of one delivery say together, or None while they disagree.

    One part returned, bounced or failed is the delivery's outcome (in that order); one
    part to be tried again defers it; otherwise the delivery is as far along as its least
    advanced part, once every part is known — proved only as strongly as its weakest.
    """
    if not parts:
        return None
    states = {p.state for p in parts}
    for bad in _NEGATIVE:
        if bad in states:
            return bad, ProofLevel.NONE
    if _S.DEFERRED in states:
        return _S.DEFERRED, ProofLevel.NONE
    count = max(p.count for p in parts)
    if len({p.number for p in parts}) < count or not states <= set(_PROGRESS):
        return None
    least = min(states, key=_PROGRESS.index)
    return least, min(p.proof for p in parts)


@dataclass(frozen=True, kw_only=True)
class Address:
    name: str
    street: str
    city: str
    postal_code: str
    country: str
    region: str = ""

    def lines(self) -> tuple[str, ...]:
        city_line = " ".join(p for p in (self.postal_code, self.city) if p)
        parts = (self.name, self.street, city_line, self.region, self.country)
        return tuple(p for p in parts if p)


@dataclass(frozen=True, kw_only=True)
class Organisation:
    name: str
    email: str
    reply_to: str
    bounce_domain: str
    address: Address


@dataclass(frozen=True, kw_only=True)
class Recipient:
    case: str
    slug: str
    kind: RecipientKind
    name: str
    language: str
    channels: tuple[ChannelName, ...]
    format: Format
    cadence: Cadence
    email: str = ""
    fax: str = ""
    address: Address | None = None
    prisoner_number: str = ""
    facility: str = ""
    page_limit: int | None = None
    extra: Mapping[str, object] = field(default_factory=dict)

    def envelope_lines(self) -> tuple[str, ...]:
        """The addressee block: the person (with a prisoner's number), then the address."""
        first = f"{self.name}, {self.prisoner_number}" if self.prisoner_number else self.name
        lines = [first]
        if self.facility:
            lines.append(self.facility)
        if self.address is not None:
            seen = {line.casefold() for line in lines} | {self.name.casefold()}
            lines.extend(line for line in self.address.lines() if line.casefold() not in seen)
        return tuple(lines)


@dataclass(frozen=True, kw_only=True)
class Case:
    slug: str
    name: str
    country: str
    summary: str
    demand: str
    auto_approve: frozenset[MessageKind]
    danger_words: tuple[str, ...]
    recipients: tuple[Recipient, ...]
    fallback: Fallback = Fallback.REVIEW


@dataclass(frozen=True, kw_only=True)
class Campaign:
    organisation: Organisation
    cases: tuple[Case, ...]

    def case(self, slug: str) -> Case | None:
        return next((c for c in self.cases if c.slug == slug), None)


@dataclass(frozen=True, kw_only=True)
class MessageDraft:
    """One accepted row of a message file, ready to store."""

    source: str
    external_id: str
    line: int
    case: str
    to: str
    supporter_name: str
    supporter_email: str
    supporter_city: str
    supporter_country: str
    language: str
    kind: MessageKind
    body: str
    submitted_at: datetime
    event: str
    metadata: Mapping[str, str]


@dataclass(frozen=True, kw_only=True)
class Message:
    """A stored message, as collect and merge see it."""

    id: int
    source: str
    external_id: str
    case: str
    supporter_name: str
    supporter_email: str
    supporter_city: str
    supporter_country: str
    language: str
    kind: MessageKind
    body: str
    body_sha256: str
    submitted_at: datetime
    event: str
    ref: str = ""  # message_ref: how the ledger and manifests name it
    body_mac: str = ""  # body_mac: the keyed fingerprint of its words


@dataclass(frozen=True, kw_only=True)
class Flag:
    """Why a screening rule wants a human to look."""

    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.detail}" if self.detail else self.rule


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def message_ref(link_key: bytes, source: str, external_id: str) -> str:
    """How the ledger names a supporter's message: an HMAC of its source and external id.

    Under the message's own key, erased at retention: while the key lives, the operator can
    tie a ledger entry to the form system's id; once it is gone, nobody can.
    """
    data = "\x1f".join(("ref", source, external_id)).encode("utf-8")
    return hmac.new(link_key, data, hashlib.sha256).hexdigest()


def body_mac(link_key: bytes, body: str) -> str:
    """How the ledger and the manifests fingerprint a supporter's words: keyed, never plain.

    A plain SHA-256 of a short text ("Free him now") can be confirmed by guessing it; an
    HMAC under the message's key cannot, and once the key is erased it links to nothing.
    """
    return hmac.new(link_key, b"body\x1f" + body.encode("utf-8"), hashlib.sha256).hexdigest()


def erased_tag(id_key: bytes, source: str, external_id: str) -> str:
    """What stands for an erased message's external id, so importing it again finds it.

    Under the installation's id key (not the message's): the row keeps no readable id,
    yet a file imported a second time after retention is still recognised as already
    delivered, never delivered twice.
    """
    data = "\x1f".join(("erased", source, external_id)).encode("utf-8")
    return "erased:" + hmac.new(id_key, data, hashlib.sha256).hexdigest()[:40]


def stable_id(prefix: str, *parts: str, key: bytes = b"", length: int = 20) -> str:
    """A deterministic id: the same parts (and key) always give the same id.

    With ``key`` (the installation's secret) the id is an HMAC, so nobody who lacks the key
    can work it out from what it is made of: a bounce address or a fax tag naming it
    cannot be forged for a delivery one has not been told about.
    """
    data = "\x1f".join((prefix, *parts)).encode()
    if key:
        digest = hmac.new(key, data, hashlib.sha256).hexdigest()
    else:
        digest = hashlib.sha256(data).hexdigest()
    return f"{prefix}-{digest[:length]}"
