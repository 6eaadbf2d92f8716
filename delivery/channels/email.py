"""The e-mail spool: the composed messages as ``.eml`` files in the outbox.

Nothing leaves the machine. The bytes are written exactly as composed (CRLF line ends),
so a later transport or a person with a mail client sends what was signed off, and
re-sending a parcel rewrites the same files with the same bytes. A bundle split over
several e-mails is written as several files, numbered in sending order.
"""

from __future__ import annotations

import asyncio
import email
import re
from email import policy

from delivery.channels.base import Parcel, Receipt
from delivery.errors import PermanentChannelError
from delivery.models import ChannelName, DeliveryState, ProofLevel
from delivery.outbox import Artefact, Outbox

# One path component: no separators, no control characters, no leading dot.
_COMPONENT = re.compile(r"[^/\\.\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]*")


def _who(parcel: Parcel) -> str:
    recipient = parcel.recipient
    return f"delivery {parcel.delivery_id} to {recipient.case}/{recipient.slug}"


def _component(parcel: Parcel, what: str, value: str) -> str:
    if not _COMPONENT.fullmatch(value):
        raise PermanentChannelError(f"{_who(parcel)}: {what} {value!r} is not a safe file name")
    return value


def eml_paths(parcel: Parcel) -> tuple[str, ...]:
    """Where the parcel's messages go, one path per composed e-mail.

    One e-mail: ``email/<case>/<recipient>/<delivery>.eml``; several:
    ``email/<case>/<recipient>/<delivery>-1-of-3.eml`` and so on, in order.
    """
    case = _component(parcel, "case", parcel.recipient.case)
    slug = _component(parcel, "recipient slug", parcel.recipient.slug)
    name = _component(parcel, "delivery id", parcel.delivery_id)
    count = len(parcel.emails)
    if count <= 1:
        return (f"email/{case}/{slug}/{name}.eml",)
    return tuple(f"email/{case}/{slug}/{name}-{k}-of-{count}.eml" for k in range(1, count + 1))


def _check_message(parcel: Parcel, data: bytes, which: str) -> None:
    """Refuse ``data`` unless it parses and carries a Message-ID."""
    try:
        message = email.message_from_bytes(data, policy=policy.default)
        message_id = str(message.get("Message-ID", "")).strip()
    except (ValueError, TypeError, LookupError) as exc:
        raise PermanentChannelError(f"{_who(parcel)}: {which} does not parse: {exc}") from exc
    if not message_id:
        raise PermanentChannelError(f"{_who(parcel)}: {which} has no Message-ID")


def _checked_messages(parcel: Parcel) -> tuple[bytes, ...]:
    """The composed messages, once each is known to parse and carry a Message-ID."""
    if not parcel.recipient.email.strip():
        raise PermanentChannelError(f"{_who(parcel)}: the recipient has no e-mail address")
    if not parcel.emails or not all(parcel.emails):
        raise PermanentChannelError(f"{_who(parcel)}: no composed e-mail in the parcel")
    count = len(parcel.emails)
    for number, data in enumerate(parcel.emails, start=1):
        which = "the composed e-mail" if count == 1 else f"composed e-mail {number} of {count}"
        _check_message(parcel, data, which)
    return parcel.emails


class EmailSpool:
    """Writes each composed e-mail to ``email/<case>/<recipient>/<delivery>[-k-of-n].eml``."""

    name = ChannelName.EMAIL

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    async def send(self, parcel: Parcel) -> Receipt:
        messages = _checked_messages(parcel)
        paths = eml_paths(parcel)
        written: list[Artefact] = []
        for path, data in zip(paths, messages, strict=True):
            written.append(await asyncio.to_thread(self._outbox.write, path, data))
        artefacts = tuple(written)
        first = artefacts[0].path
        detail = (
            f"e-mail written to the outbox as {first}"
            if len(artefacts) == 1
            else f"{len(artefacts)} e-mails written to the outbox, the first as {first}"
        )
        return Receipt(
            state=DeliveryState.SPOOLED,
            proof=ProofLevel.NONE,
            provider_ref=first,
            detail=detail,
            artefacts=artefacts,
        )

    async def close(self) -> tuple[Artefact, ...]:
        return ()
