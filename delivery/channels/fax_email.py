"""The fax channel through an e-mail-to-fax gateway: each fax an e-mail with the PDF attached.

Many fax services take a fax as an e-mail to ``<number>@<gateway domain>``: the number's
digits without the "+", the PDF attached. This channel builds those e-mails and hands
them to the operator's SMTP server through :class:`~delivery.channels.smtp.SmtpChannel`,
so TLS, the outcomes of each SMTP step and the boundary at the final dot are exactly the
e-mail channel's.

The recipient's fax number must be E.164. Every attached PDF starts with a cover sheet
(:func:`~delivery.channels.fax.with_cover`: the page count, "Part k of n" when split, to
and from whom). A fax holds at most ``FaxSettings.email_max_pages`` pages, its cover
included, so a longer bundle is split into several faxes of a cover and at most
``email_max_pages - 1`` bundle pages, one e-mail each. Every e-mail says which part it
carries, in a Subject most gateways print on their own cover sheet ("Fax to Minister of
Security: part 1 of 2, 25 pages", counting every page of the attached PDF) and in a
short text body; it comes from the organisation's address, and its Message-ID
``<{delivery_id}.{k}@{bounce_domain}>`` is the same on every attempt, so the gateway
(and a person reading its reports) can tell a retry from a new fax. Headers are built
only from campaign data (organisation, recipient name, number, counts): no supporter
text reaches a header.

Parts in ``Parcel.sent_parts`` (accepted by an earlier attempt) are not sent again. The
receipt is ``ACCEPTED`` with ``ProofLevel.MTA_ACCEPTED`` (the mail server took it; the
gateway's own report on the fax, if any, comes later by e-mail) and one part per e-mail
accepted by this call, its Message-ID as ``ref``. When e-mail *k* fails, the error is
the SMTP channel's for that e-mail, of the same class, and carries the parts already
accepted by this call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime
from email.errors import MessageError
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path

from delivery.channels.base import Parcel, Receipt
from delivery.channels.fax import FaxPart, checked_number, parts_to_send, with_cover
from delivery.channels.smtp import SmtpChannel
from delivery.config import SHIPPED_TEMPLATES, FaxSettings, SmtpSettings
from delivery.errors import ChannelError, ChannelSetupError, PermanentChannelError
from delivery.models import ChannelName, DeliveryState, Part, ProofLevel
from delivery.outbox import Artefact
from delivery.render.env import make_environment
from delivery.render.text import safe_label


def gateway_address(number: str, domain: str) -> str:
    """``+50422201234`` and ``fax.example.net`` → ``50422201234@fax.example.net``."""
    return f"{number.removeprefix('+')}@{domain}"


def message_id(parcel: Parcel, number: int) -> str:
    """The Message-ID of part ``number``: the same on every attempt."""
    return f"<{parcel.delivery_id}.{number}@{parcel.organisation.bounce_domain}>"


def subject(recipient_name: str, part: FaxPart) -> str:
    """``Fax to <name>: part 1 of 2, 25 pages`` (``Fax to <name>: 4 pages`` when whole).

    The pages are those of the fax: its cover sheet and its pages of the bundle.
    """
    pages = f"{part.fax_pages} pages"
    which = f"part {part.number} of {part.count}, {pages}" if part.count > 1 else pages
    return f"Fax to {safe_label(recipient_name)}: {which}"


def _body(parcel: Parcel, part: FaxPart) -> str:
    org = safe_label(parcel.organisation.name)
    if part.count > 1:
        which = (
            f"Part {part.number} of {part.count}: pages {part.first}-{part.last} of {part.total}."
        )
    else:
        which = f"The whole bundle: {part.total} page{'' if part.total == 1 else 's'}."
    lines = [
        f"Fax for {safe_label(parcel.recipient.name)} from {org}.",
        "",
        which,
        f"The attached PDF has {part.fax_pages} pages, its cover sheet included.",
        "",
        f"Reference: {parcel.bundle_id}",
    ]
    return "\n".join(lines) + "\n"


def compose(parcel: Parcel, gateway: str, part: FaxPart, pdf: bytes) -> bytes:
    """One e-mail to the gateway: the fax ``pdf`` (the part with its cover) attached.

    Headers come from campaign data only.
    """
    try:
        return _compose(parcel, gateway, part, pdf)
    except (ValueError, MessageError) as exc:
        raise PermanentChannelError(
            f"delivery {parcel.delivery_id}: fax e-mail {part.number} of {part.count} to "
            f"{gateway} cannot be built: {exc}"
        ) from exc


def _compose(parcel: Parcel, gateway: str, part: FaxPart, pdf: bytes) -> bytes:
    org = parcel.organisation
    message = EmailMessage(policy=SMTP)
    message["From"] = Address(display_name=safe_label(org.name), addr_spec=org.email)
    message["To"] = gateway
    if org.reply_to:
        message["Reply-To"] = org.reply_to
    message["Subject"] = subject(parcel.recipient.name, part)
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id(parcel, part.number)
    message.set_content(_body(parcel, part))
    name = f"fax-part-{part.number}-of-{part.count}.pdf" if part.count > 1 else "fax.pdf"
    message.add_attachment(pdf, maintype="application", subtype="pdf", filename=name)
    return message.as_bytes()


def _accepted(part: FaxPart, ref: str, receipt: Receipt) -> Part:
    return Part(
        number=part.number,
        count=part.count,
        ref=ref,
        state=DeliveryState.ACCEPTED,
        proof=ProofLevel.MTA_ACCEPTED,
        detail=f"cover sheet and pages {part.first}-{part.last}: {receipt.detail}",
    )


def _with_sent(exc: ChannelError, sent: Sequence[Part]) -> ChannelError:
    """``exc`` again, naming and carrying the e-mails this attempt had already handed over."""
    if not sent:
        return exc
    done = ", ".join(f"part {p.number} of {p.count} ({p.ref})" for p in sent)
    return type(exc)(f"{exc}; already accepted, not to be sent again: {done}", parts=sent)


class EmailFax:
    """Sends each parcel's bundle as one or more e-mails to an e-mail-to-fax gateway."""

    name = ChannelName.FAX

    def __init__(
        self,
        smtp: SmtpSettings,
        fax: FaxSettings,
        *,
        tls_context: ssl.SSLContext | None = None,
        templates: Path = SHIPPED_TEMPLATES,
    ) -> None:
        self._fax = fax
        self._smtp = SmtpChannel(smtp, tls_context=tls_context)
        self._templates = templates
        self._env = make_environment(templates)

    def _domain(self) -> str:
        domain = self._fax.email_domain.strip().strip(".")
        if not domain:
            raise ChannelSetupError(
                "e-mail-to-fax: no gateway domain set (SOLIDARITY_FAX__EMAIL_DOMAIN)"
            )
        if "@" in domain or any(c.isspace() or not c.isprintable() for c in domain):
            raise ChannelSetupError(f"e-mail-to-fax: {domain!r} is not a domain name")
        return domain

    async def send(self, parcel: Parcel) -> Receipt:
        domain = self._domain()
        number = checked_number(parcel)
        gateway = gateway_address(number, domain)
        count, todo = await asyncio.to_thread(parts_to_send, parcel, self._fax.email_max_pages)
        recipient = dataclasses.replace(parcel.recipient, email=gateway)
        envelope_from = (
            parcel.envelope_from
            or f"bounces+{parcel.delivery_id}@{parcel.organisation.bounce_domain}"
        )
        sent: list[Part] = []
        for part in todo:
            try:
                pdf = await asyncio.to_thread(
                    with_cover, parcel, part, templates=self._templates, env=self._env
                )
                email = compose(parcel, gateway, part, pdf)
                one = dataclasses.replace(
                    parcel,
                    recipient=recipient,
                    emails=(email,),
                    envelope_from=envelope_from,
                    sent_parts=frozenset(),
                )
                receipt = await self._smtp.send(one)
            except ChannelError as exc:
                raise _with_sent(exc, sent) from exc
            sent.append(_accepted(part, message_id(parcel, part.number), receipt))
        return _receipt(gateway, count, sent)

    async def close(self) -> tuple[Artefact, ...]:
        return await self._smtp.close()


def _receipt(gateway: str, count: int, sent: Sequence[Part]) -> Receipt:
    if not sent:
        detail = f"nothing to e-mail to {gateway}: all {count} part(s) were handed over before"
    elif len(sent) == count:
        detail = f"e-mailed to {gateway} as {count} fax(es)"
    else:
        numbers = ", ".join(str(p.number) for p in sent)
        detail = f"e-mailed to {gateway}: part(s) {numbers} of {count}"
    return Receipt(
        state=DeliveryState.ACCEPTED,
        proof=ProofLevel.MTA_ACCEPTED,
        provider_ref=",".join(p.ref for p in sent),
        detail=detail,
        parts=tuple(sent),
    )
