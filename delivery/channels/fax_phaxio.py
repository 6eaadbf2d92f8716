"""The fax channel through Phaxio (Sinch Fax), API v2.1.

Written against Phaxio's public documentation (the v2 pages; the v2.1 API keeps these
request, object and callback formats under the ``https://api.phaxio.com/v2.1`` base):

* Create and send a fax — https://www.phaxio.com/docs/api/v2/faxes/create_and_send_fax
  (``POST faxes``, multipart: ``to`` in E.164, ``file`` with a file name in its part
  header, ``header_text`` of at most 50 characters, ``callback_url``, ``tag[TAG_NAME]``);
* Authentication — https://www.phaxio.com/docs/api/v2/intro/authentication (HTTP basic:
  the API key as user name, the API secret as password; ``GET faxes/<id>`` to look one up);
* Fax and recipient objects — https://www.phaxio.com/docs/api/v2/intro/objects (``id``,
  ``status``, ``num_pages``, ``recipients``, ``error_type``, ``error_message``, ``error_id``);
* Fax statuses — https://www.phaxio.com/docs/statuses (``queued``, ``pendingbatch``,
  ``inprogress``, ``success``, ``failure``, ``partialsuccess``);
* Error messages — https://www.phaxio.com/docs/errorMessages (the five error types and
  the numbered ``lineError`` messages: busy, no answer, call dropped, ...);
* Send fax callback — https://www.phaxio.com/docs/api/v2/faxes/send_callback (a multipart
  form POST with ``success``, ``is_test``, ``direction`` and the ``fax`` object as JSON);
* Verifying callback requests — https://www.phaxio.com/docs/security/callbacks (the
  ``X-Phaxio-Signature`` header).

Sending. The recipient's number must be E.164. Every fax starts with a cover sheet
(:func:`~delivery.channels.fax.with_cover`: the page count, "Part k of n" when split, to
and from whom). A fax holds at most ``PhaxioSettings.max_pages`` pages, its cover
included, so a longer bundle is split into several faxes of a cover and at most
``max_pages - 1`` bundle pages; each part's ``header_text`` ends in "part k of n". Every
fax is tagged ``tag[delivery]`` with the delivery id (and ``tag[part]`` = ``k/n`` when
split), so a fax found at Phaxio can be traced back to its delivery. Parts in
``Parcel.sent_parts`` (queued or delivered by an earlier attempt) are not faxed again: the
bundle is cut the same way and those part numbers are skipped. The receipt is
``ACCEPTED`` with ``ProofLevel.NONE`` (queued at the gateway, nothing confirmed yet);
``Receipt.parts`` holds one ``ACCEPTED`` part per fax queued by this call, its fax id as
``ref``, and ``provider_ref`` those fax ids joined with ",".

Outcomes of one ``POST``:

* no connection, a connect/write timeout, a failed write (the body did not leave), HTTP
  429 or 5xx: :class:`TransientChannelError`;
* HTTP 401 or 403 (key or secret refused), a redirect (wrong ``base_url``), a
  certificate that does not verify: :class:`ChannelSetupError`;
* any other 4xx (invalid number, a file Phaxio refuses): :class:`PermanentChannelError`;
* the request was sent and then no readable answer came (read timeout, connection
  closed, a 2xx body without a fax id): :class:`AmbiguousDeliveryError` — Phaxio may have
  queued the fax, so it must not be sent again without a person deciding.

When part *k* of a split bundle fails, the error raised is part *k*'s, of the same class;
its text names the fax ids already queued by this call and its ``parts`` carries them, so
they are recorded and a retry sends only the parts that are still missing.

Status. :meth:`PhaxioFax.status` (``GET faxes/<id>``) and :func:`parse_callback` both read
a fax object: ``success`` → ``DELIVERED`` with ``FAX_CONFIRMED``; ``failure`` with a
``lineError`` that another call may overcome (busy, no answer, call dropped, congestion,
ring timeout, network) → ``DEFERRED``; any other failure → ``FAILED``; ``queued``,
``pendingbatch`` and ``inprogress`` → no change (``state`` is ``None``). We send to one
recipient, so ``partialsuccess`` is read from that recipient's own status.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from delivery.channels.base import Parcel, Receipt
from delivery.channels.fax import FaxPart, checked_number, parts_to_send, split_pdf, with_cover
from delivery.config import SHIPPED_TEMPLATES, PhaxioSettings
from delivery.errors import (
    AmbiguousDeliveryError,
    ChannelError,
    ChannelSetupError,
    PermanentChannelError,
    TransientChannelError,
)
from delivery.models import ChannelName, DeliveryState, Part, ProofLevel
from delivery.outbox import Artefact
from delivery.render.env import make_environment

__all__ = [
    "CallbackError",
    "FaxStatus",
    "PhaxioFax",
    "callback_signature",
    "fax_status",
    "header_text",
    "parse_callback",
    "split_pdf",
    "verify_callback",
]

HEADER_MAX = 50  # characters of header_text Phaxio accepts
_PENDING = frozenset({"queued", "pendingbatch", "inprogress"})
# lineError ids (docs/errorMessages) that a later call may overcome: call dropped,
# congestion, ring timeout, busy, immediate hangup, no answer, problem establishing the
# connection, network error, problem with the remote carrier.
_RETRY_LINE_IDS = frozenset({11, 15, 16, 17, 19, 30, 43, 87, 88, 100, 110, 112})
_RETRY_LINE_WORDS = (
    "busy",
    "no answer",
    "dropped",
    "congestion",
    "ring timeout",
    "hangup",
    "network error",
    "establishing connection",
    "remote carrier",
)
# Failures that happen before the request body has left: nothing can have been queued.
_NOT_SENT: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.WriteError,
    httpx.WriteTimeout,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
    httpx.ProxyError,
)


class CallbackError(ChannelError, ValueError):
    """A callback request that is not a readable Phaxio sent-fax callback."""


@dataclass(frozen=True, kw_only=True)
class FaxStatus:
    """What Phaxio says about one fax; ``state`` is ``None`` while it is still under way."""

    state: DeliveryState | None
    proof: ProofLevel = ProofLevel.NONE
    detail: str = ""
    pages: int = 0


# --- callbacks ---------------------------------------------------------------------------


def callback_signature(
    url: str, form: Mapping[str, str], files: Mapping[str, bytes], token: str
) -> str:
    """The hex HMAC-SHA1 Phaxio puts in ``X-Phaxio-Signature`` (docs/security/callbacks).

    The URL as submitted to Phaxio, then each POST parameter's name and value sorted by
    name, then each file part's name and the SHA-1 hex digest of its contents sorted by
    name, all without delimiters, signed with the callback token.
    """
    signed = url + "".join(name + form[name] for name in sorted(form))
    for name in sorted(files):
        signed += name + hashlib.sha1(files[name]).hexdigest()  # noqa: S324 -- Phaxio's scheme
    return hmac.new(token.encode(), signed.encode(), hashlib.sha1).hexdigest()


def verify_callback(
    url: str,
    form: Mapping[str, str],
    files: Mapping[str, bytes],
    signature: str,
    token: str,
) -> bool:
    """Whether ``signature`` is Phaxio's signature of this callback (constant time)."""
    if not token or not signature:
        return False
    expected = callback_signature(url, form, files, token).encode()
    return hmac.compare_digest(expected, signature.strip().lower().encode())


def parse_callback(form: Mapping[str, str]) -> tuple[str, FaxStatus]:
    """The fax id and status in a verified send-fax callback's form fields."""
    raw = form.get("fax")
    if raw is None:
        raise CallbackError("Phaxio callback: no 'fax' field")
    try:
        fax = json.loads(raw)
    except ValueError as exc:
        raise CallbackError(f"Phaxio callback: the 'fax' field is not JSON ({exc})") from exc
    if not isinstance(fax, dict):
        raise CallbackError("Phaxio callback: the 'fax' field is not a JSON object")
    fax_id = _text(fax.get("id"))
    if not fax_id.isdigit():
        raise CallbackError(f"Phaxio callback: fax id {fax_id!r} is not a number")
    direction = form.get("direction") or _text(fax.get("direction")) or "sent"
    if direction != "sent":
        raise CallbackError(f"Phaxio callback for fax {fax_id}: direction is {direction!r}")
    return fax_id, fax_status(fax)


# --- the fax object ----------------------------------------------------------------------


def _text(value: object) -> str:
    return "" if value is None or isinstance(value, (dict, list)) else str(value).strip()


def _number(value: object) -> int:
    text = _text(value)
    return int(text) if text.isdigit() else 0


def _recipients(fax: Mapping[str, object]) -> list[Mapping[str, object]]:
    found = fax.get("recipients")
    if not isinstance(found, list):
        return []
    return [r for r in found if isinstance(r, dict)]


def _error_of(fax: Mapping[str, object]) -> tuple[str, int, str]:
    """The error type, id and message: the fax's own, else its first recipient's."""
    for source in (fax, *_recipients(fax)):
        kind = _text(source.get("error_type"))
        message = _text(source.get("error_message")) or _text(source.get("error_code"))
        if kind or message:
            return kind, _number(source.get("error_id")), message
    return "", 0, ""


def _worth_retrying(kind: str, error_id: int, message: str) -> bool:
    if kind != "lineError":
        return False
    if error_id:
        return error_id in _RETRY_LINE_IDS
    lowered = message.lower()
    return any(word in lowered for word in _RETRY_LINE_WORDS)


def _failure(fax: Mapping[str, object], pages: int) -> FaxStatus:
    kind, error_id, message = _error_of(fax)
    parts = [kind or "unknown error", f"#{error_id}" if error_id else "", message]
    detail = "failure: " + " ".join(p for p in parts if p)
    if _worth_retrying(kind, error_id, message):
        return FaxStatus(state=DeliveryState.DEFERRED, detail=detail, pages=pages)
    return FaxStatus(state=DeliveryState.FAILED, detail=detail, pages=pages)


def _delivered(pages: int, detail: str) -> FaxStatus:
    return FaxStatus(
        state=DeliveryState.DELIVERED, proof=ProofLevel.FAX_CONFIRMED, detail=detail, pages=pages
    )


def fax_status(fax: Mapping[str, object]) -> FaxStatus:
    """What a Phaxio fax object means for the delivery."""
    status = _text(fax.get("status"))
    pages = _number(fax.get("num_pages"))
    if status == "success":
        return _delivered(pages, f"success: {pages} pages confirmed by the receiving fax")
    if status in _PENDING:
        return FaxStatus(state=None, detail=status, pages=pages)
    if status == "failure":
        return _failure(fax, pages)
    if status == "partialsuccess":
        recipients = _recipients(fax)
        if len(recipients) == 1 and _text(recipients[0].get("status")) == "success":
            return _delivered(pages, "partialsuccess: the one recipient succeeded")
        return _failure(fax, pages)
    return FaxStatus(state=None, detail=f"unrecognised Phaxio status {status!r}", pages=pages)


# --- sending -----------------------------------------------------------------------------


def header_text(sender: str, part: int, parts: int) -> str:
    """The page header: the sender, and "part k of n" when the bundle was split."""
    suffix = f" - part {part} of {parts}" if parts > 1 else ""
    name = " ".join(sender.split())[: HEADER_MAX - len(suffix)].rstrip()
    return (name + suffix).strip()


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


def _answer(response: httpx.Response) -> str:
    """Phaxio's ``message`` (or the start of the body) for an error's text."""
    try:
        body = response.json()
    except ValueError:
        return _one_line(response.text)
    if isinstance(body, dict) and body.get("message"):
        return _one_line(str(body["message"]))
    return _one_line(response.text)


def _certificate_problem(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None or isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _transport_error(exc: httpx.TransportError, what: str) -> ChannelError:
    certificate = _certificate_problem(exc)
    if certificate is not None:
        return ChannelSetupError(f"{what}: TLS certificate not verified: {certificate}")
    text = f"{what}: {type(exc).__name__}: {_one_line(str(exc)) or 'no detail'}"
    if isinstance(exc, _NOT_SENT):
        return TransientChannelError(f"{text} (not sent)")
    return AmbiguousDeliveryError(
        f"{text} after the request was sent: Phaxio may have queued the fax; "
        "do not resend before checking the Phaxio fax list"
    )


def _refusal(response: httpx.Response, what: str) -> ChannelError | None:
    """The error for a non-2xx answer, or ``None`` for a 2xx."""
    code = response.status_code
    if 200 <= code <= 299:
        return None
    text = f"{what}: HTTP {code} {_answer(response)}"
    if code in (401, 403):
        return ChannelSetupError(f"{text} (check the Phaxio API key and secret)")
    if 300 <= code <= 399:
        return ChannelSetupError(f"{text} (redirected: check the Phaxio base_url)")
    if code == 429 or code >= 500:
        return TransientChannelError(text)
    return PermanentChannelError(text)


def _data(response: httpx.Response) -> Mapping[str, object] | None:
    """The ``data`` object of a ``{"success": true, ...}`` answer, if it is one."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("success") is not True:
        return None
    data = body.get("data")
    return data if isinstance(data, dict) else None


def _queued_id(response: httpx.Response, what: str) -> str:
    refused = _refusal(response, what)
    if refused is not None:
        raise refused
    data = _data(response)
    fax_id = _text(data.get("id")) if data is not None else ""
    if not fax_id:
        raise AmbiguousDeliveryError(
            f"{what}: HTTP {response.status_code} without a fax id ({_one_line(response.text)}):"
            " Phaxio may have queued the fax; do not resend before checking"
        )
    return fax_id


def _with_queued(exc: ChannelError, queued: Sequence[Part]) -> ChannelError:
    """``exc`` again, naming and carrying the parts this attempt had already queued."""
    if not queued:
        return exc
    ids = ", ".join(part.ref for part in queued)
    return type(exc)(
        f"{exc}; already queued at Phaxio for this delivery: fax {ids}"
        " (re-sending the whole parcel would fax those parts again)",
        parts=queued,
    )


def _queued_part(part: FaxPart, fax_id: str) -> Part:
    pages = f"pages {part.first}-{part.last}" if part.count > 1 else f"{part.pages} pages"
    span = f"cover sheet and {pages}"
    return Part(
        number=part.number,
        count=part.count,
        ref=fax_id,
        state=DeliveryState.ACCEPTED,
        proof=ProofLevel.NONE,
        detail=f"queued at Phaxio as fax {fax_id} ({span})",
    )


class PhaxioFax:
    """Sends each parcel's bundle as one or more faxes through the Phaxio API."""

    name = ChannelName.FAX

    def __init__(
        self,
        settings: PhaxioSettings,
        *,
        client: httpx.AsyncClient | None = None,
        templates: Path = SHIPPED_TEMPLATES,
    ) -> None:
        self._settings = settings
        self._templates = templates
        self._env = make_environment(templates)
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=settings.timeout)
        self._base = settings.base_url.rstrip("/")

    def _auth(self) -> tuple[str, str]:
        secret = self._settings.api_secret.get_secret_value()
        if not self._settings.api_key or not secret:
            raise ChannelSetupError("Phaxio: api_key and api_secret must both be set")
        return self._settings.api_key, secret

    def _form(self, parcel: Parcel, number: str, part: int, parts: int) -> dict[str, str]:
        form = {"to": number, "tag[delivery]": parcel.delivery_id}
        header = header_text(parcel.organisation.name, part, parts)
        if header:
            form["header_text"] = header
        if parts > 1:
            form["tag[part]"] = f"{part}/{parts}"
        if self._settings.callback_url:
            form["callback_url"] = self._settings.callback_url
        return form

    async def _post(self, parcel: Parcel, number: str, pdf: bytes, part: int, parts: int) -> str:
        what = f"delivery {parcel.delivery_id}, fax {part} of {parts} to {number}"
        files = {"file": (f"bundle-part-{part}.pdf", pdf, "application/pdf")}
        try:
            response = await self._client.post(
                f"{self._base}/faxes",
                data=self._form(parcel, number, part, parts),
                files=files,
                auth=self._auth(),
                timeout=self._settings.timeout,
            )
        except httpx.TransportError as exc:
            raise _transport_error(exc, what) from exc
        return _queued_id(response, what)

    async def send(self, parcel: Parcel) -> Receipt:
        number = checked_number(parcel)
        self._auth()
        count, todo = await asyncio.to_thread(parts_to_send, parcel, self._settings.max_pages)
        queued: list[Part] = []
        for part in todo:
            try:
                pdf = await asyncio.to_thread(
                    with_cover, parcel, part, templates=self._templates, env=self._env
                )
                fax_id = await self._post(parcel, number, pdf, part.number, count)
            except ChannelError as exc:
                raise _with_queued(exc, queued) from exc
            queued.append(_queued_part(part, fax_id))
        return _receipt(number, count, queued)

    async def status(self, fax_id: str) -> FaxStatus:
        """Phaxio's current status of one fax (``GET faxes/<id>``)."""
        if not fax_id.isdigit():
            raise PermanentChannelError(f"Phaxio fax id {fax_id!r} is not a number")
        what = f"status of Phaxio fax {fax_id}"
        try:
            response = await self._client.get(
                f"{self._base}/faxes/{fax_id}", auth=self._auth(), timeout=self._settings.timeout
            )
        except httpx.TransportError as exc:
            raise TransientChannelError(f"{what}: {type(exc).__name__}: {exc}") from exc
        refused = _refusal(response, what)
        if refused is not None:
            raise refused
        data = _data(response)
        if data is None:
            raise TransientChannelError(f"{what}: unreadable answer {_one_line(response.text)}")
        return fax_status(data)

    async def close(self) -> tuple[Artefact, ...]:
        if self._owns_client:
            await self._client.aclose()
        return ()


def _receipt(number: str, count: int, queued: Sequence[Part]) -> Receipt:
    ids = ", ".join(part.ref for part in queued)
    if not queued:
        detail = f"nothing to fax to {number}: all {count} part(s) were handed over before"
    elif len(queued) == count:
        detail = f"queued at Phaxio for {number} as {count} fax(es): {ids}"
    else:
        numbers = ", ".join(str(part.number) for part in queued)
        detail = f"queued at Phaxio for {number}: part(s) {numbers} of {count} as fax {ids}"
    return Receipt(
        state=DeliveryState.ACCEPTED,
        proof=ProofLevel.NONE,
        provider_ref=",".join(part.ref for part in queued),
        detail=detail,
        parts=tuple(queued),
    )
