"""The e-mail spool: the composed message as an ``.eml`` file in the outbox.

Nothing leaves the machine. The bytes are written exactly as composed (CRLF line ends),
so a later transport or a person with a mail client sends what was signed off, and
re-sending a parcel rewrites the same file with the same bytes.
"""

from __future__ import annotations

import asyncio
import email
import re
from email import policy

from delivery.channels.base import Parcel, Receipt
from delivery.errors import PermanentChannelError
from delivery.models import ChannelName, DeliveryState, ProofLevel
from delivery.outbox import Artefact, LocalOutbox

# One path component: no separators, no control characters, no leading dot.
_COMPONENT = re.compile(r"[^/\\.\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]*")


def _who(parcel: Parcel) -> str:
    recipient = parcel.recipient
    return f"delivery {parcel.delivery_id} to {recipient.case}/{recipient.slug}"


def _component(parcel: Parcel, what: str, value: str) -> str:
    if not _COMPONENT.fullmatch(value):
        raise PermanentChannelError(f"{_who(parcel)}: {what} {value!r} is not a safe file name")
    return value


def eml_path(parcel: Parcel) -> str:
    """Where the parcel's message goes: ``email/<case>/<recipient>/<delivery>.eml``."""
    case = _component(parcel, "case", parcel.recipient.case)
    slug = _component(parcel, "recipient slug", parcel.recipient.slug)
    name = _component(parcel, "delivery id", parcel.delivery_id)
    return f"email/{case}/{slug}/{name}.eml"


def _checked_message(parcel: Parcel) -> bytes:
    """The composed bytes, once they are known to parse and carry a Message-ID."""
    if not parcel.recipient.email.strip():
        raise PermanentChannelError(f"{_who(parcel)}: the recipient has no e-mail address")
    if not parcel.email:
        raise PermanentChannelError(f"{_who(parcel)}: no composed e-mail in the parcel")
    try:
        message = email.message_from_bytes(parcel.email, policy=policy.default)
        message_id = str(message.get("Message-ID", "")).strip()
    except (ValueError, TypeError, LookupError) as exc:
        raise PermanentChannelError(
            f"{_who(parcel)}: the composed e-mail does not parse: {exc}"
        ) from exc
    if not message_id:
        raise PermanentChannelError(f"{_who(parcel)}: the composed e-mail has no Message-ID")
    return parcel.email


class EmailSpool:
    """Writes each composed e-mail to ``email/<case>/<recipient>/<delivery>.eml``."""

    name = ChannelName.EMAIL

    def __init__(self, outbox: LocalOutbox) -> None:
        self._outbox = outbox

    async def send(self, parcel: Parcel) -> Receipt:
        data = _checked_message(parcel)
        path = eml_path(parcel)
        artefact = await asyncio.to_thread(self._outbox.write, path, data)
        return Receipt(
            state=DeliveryState.SPOOLED,
            proof=ProofLevel.NONE,
            provider_ref=artefact.path,
            detail=f"e-mail written to the outbox as {artefact.path}",
            artefacts=(artefact,),
        )

    async def close(self) -> tuple[Artefact, ...]:
        return ()
