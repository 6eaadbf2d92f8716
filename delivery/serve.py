"""The HTTP endpoint for provider callbacks: ``solidarity serve``.

``POST /callbacks/phaxio`` takes Phaxio's send-fax callbacks (a multipart form POST, see
:mod:`delivery.channels.fax_phaxio`). Nothing is recorded before the ``X-Phaxio-Signature``
header is verified against the configured callback URL and token: a missing or wrong
signature is answered 403, a request that cannot be read as a callback 400. A verified
callback is kept as evidence, content-addressed, under
``evidence/fax/<sha256[:32]>.json`` (its form fields, the SHA-256 of any file part, and
the signature, so it can be checked again later); then its status is applied to the fax
part it names (:func:`delivery.tracking.fax.apply_status`) and the answer is 200 with
``{"outcome": ...}``. Phaxio repeats a callback it did not get a 2xx for; a repeated or
late callback changes nothing ("already recorded", "noted"), and a callback about a fax
we do not know is answered 200 too ("unknown fax"), so it is not sent again and again.

``GET /healthz`` answers ``{"ok": true}`` while the service runs.

The store is synchronous; its calls run in a worker thread, off the event loop. The
service speaks plain HTTP and belongs behind a proxy that terminates TLS.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Message

from delivery.channels.fax_phaxio import CallbackError, parse_callback, verify_callback
from delivery.config import Settings
from delivery.outbox import Artefact, Outbox
from delivery.store.tracking import TrackingStore
from delivery.tracking.fax import apply_status

SIGNATURE_HEADER = "x-phaxio-signature"
MAX_CALLBACK_BYTES = 2 * 1024 * 1024  # a send-fax callback is a few kilobytes
MAX_FIELDS = 100
_log = logging.getLogger("delivery.serve")


@dataclass(frozen=True, kw_only=True)
class Callback:
    """One callback request as read: its form fields and file parts, each name once."""

    form: dict[str, str]
    files: dict[str, bytes]
    signature: str


def _refuse(status: int, error: str) -> JSONResponse:
    return JSONResponse({"error": error}, status_code=status)


async def _body(request: Request) -> bytes:
    """The request body, refused once it is larger than a callback can be."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_CALLBACK_BYTES:
        raise CallbackError(f"callback larger than {MAX_CALLBACK_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_CALLBACK_BYTES:
            raise CallbackError(f"callback larger than {MAX_CALLBACK_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_callback(request: Request) -> Callback:
    """The form of a callback request; CallbackError when it is not a readable form."""
    body = await _body(request)
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    form: dict[str, str] = {}
    files: dict[str, bytes] = {}
    try:
        async with Request(request.scope, replay).form(
            max_files=MAX_FIELDS, max_fields=MAX_FIELDS
        ) as parsed:
            for name, value in parsed.multi_items():
                if name in form or name in files:
                    raise CallbackError(f"callback field {name!r} appears more than once")
                if isinstance(value, UploadFile):
                    files[name] = await value.read()
                else:
                    form[name] = value
    except (MultiPartException, HTTPException, ValueError) as exc:
        detail = exc.detail if isinstance(exc, HTTPException) else str(exc)
        raise CallbackError(f"callback form cannot be read: {detail}") from exc
    if not form:
        raise CallbackError("callback has no form fields")
    return Callback(
        form=form, files=files, signature=request.headers.get(SIGNATURE_HEADER, "").strip()
    )


def evidence_document(callback: Callback, url: str) -> bytes:
    """The callback as kept: UTF-8 JSON, sorted keys, file parts by digest, one newline."""
    files = {
        name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        for name, data in callback.files.items()
    }
    document: Mapping[str, object] = {
        "provider": "phaxio",
        "callback_url": url,
        "form": callback.form,
        "files": files,
        "signature": callback.signature,
    }
    return (json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def save_evidence(outbox: Outbox, document: bytes) -> Artefact:
    """Write the document under its own hash: the same callback twice is one file."""
    path = f"evidence/fax/{hashlib.sha256(document).hexdigest()[:32]}.json"
    return outbox.write(path, document)


def create_app(
    settings: Settings, store: TrackingStore, outbox: Outbox, *, actor: str
) -> Starlette:
    """The callback service: ``POST /callbacks/phaxio`` and ``GET /healthz``."""
    phaxio = settings.fax.phaxio
    if not phaxio.callback_token.get_secret_value() or not phaxio.callback_url:
        _log.warning("no Phaxio callback token or URL set: every callback will be refused")

    async def phaxio_callback(request: Request) -> JSONResponse:
        if not request.headers.get(SIGNATURE_HEADER, "").strip():
            return _refuse(403, "no X-Phaxio-Signature")
        try:
            callback = await read_callback(request)
        except CallbackError as exc:
            return _refuse(400, str(exc))
        token = phaxio.callback_token.get_secret_value()
        url = phaxio.callback_url
        if not verify_callback(url, callback.form, callback.files, callback.signature, token):
            _log.warning("Phaxio callback refused: signature not verified")
            return _refuse(403, "signature not verified")
        try:
            fax_id, status = parse_callback(callback.form)
        except CallbackError as exc:
            return _refuse(400, str(exc))
        evidence = await asyncio.to_thread(save_evidence, outbox, evidence_document(callback, url))
        outcome = await asyncio.to_thread(
            apply_status, store, fax_id, status, actor=actor, evidence=evidence
        )
        _log.info("Phaxio fax %s: %s (%s)", fax_id, status.detail, outcome)
        return JSONResponse({"outcome": outcome})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/callbacks/phaxio", phaxio_callback, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, every line to stderr (its access log goes to stdout by default)."""
    config: dict[str, Any] = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    for handler in config["handlers"].values():
        handler["stream"] = "ext://sys.stderr"
    config["loggers"]["delivery"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def _stopped(signum: int, frame: FrameType | None) -> None:
    """Nothing more to do: the server already shut down gracefully on this signal."""


def run_server(
    settings: Settings,
    store: TrackingStore,
    outbox: Outbox,
    *,
    actor: str,
    host: str,
    port: int,
) -> None:
    """Serve the callbacks until SIGINT or SIGTERM, then return.

    uvicorn finishes the requests under way (up to 30 s), then raises the signal it
    stopped on again, for the handler that was in place before it started; a no-op one is
    put there, so the shutdown ends in an ordinary return and the caller closes up as usual.
    """
    app = create_app(settings, store, outbox, actor=actor)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=_log_config(),
        lifespan="off",
        ws="none",
        server_header=False,
        timeout_graceful_shutdown=30,
    )
    server = uvicorn.Server(config)
    if threading.current_thread() is not threading.main_thread():
        server.run()  # signals reach only the main thread; uvicorn does not listen here
        return
    previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
