"""The one protocol every channel implements; the worker knows nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from delivery.models import (
    ChannelName,
    DeliveryState,
    Organisation,
    Part,
    ProofLevel,
    Recipient,
)
from delivery.outbox import Artefact


@dataclass(frozen=True, kw_only=True)
class Parcel:
    """What a channel hands over: one bundle to one recipient."""

    delivery_id: str
    bundle_id: str
    channel: ChannelName
    organisation: Organisation
    recipient: Recipient
    pdf: bytes
    pages: int
    message_count: int
    emails: tuple[bytes, ...] = ()  # the RFC 5322 messages, in order, for the e-mail channel
    envelope_from: str = ""  # bounces+<delivery-id>@<bounce_domain>
    envelopes: tuple[tuple[int, int], ...] = ()  # post: 1-based page ranges, one per envelope
    # Parts an earlier attempt handed over (accepted or delivered): never sent again.
    sent_parts: frozenset[int] = frozenset()


@dataclass(frozen=True, kw_only=True)
class Receipt:
    """What a channel says happened."""

    state: DeliveryState
    proof: ProofLevel = ProofLevel.NONE
    provider_ref: str = ""
    detail: str = ""
    artefacts: tuple[Artefact, ...] = field(default_factory=tuple)
    parts: tuple[Part, ...] = ()  # when the provider tracks pieces separately, each piece


class Channel(Protocol):
    name: ChannelName

    async def send(self, parcel: Parcel) -> Receipt:
        """Hand one parcel over; raise TransientChannelError or PermanentChannelError."""
        ...

    async def close(self) -> tuple[Artefact, ...]:
        """Finish the run (write a print manifest, quit a connection); artefacts written."""
        ...
