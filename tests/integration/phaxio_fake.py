"""A local stand-in for the Phaxio v2.1 API, served over real HTTP by uvicorn.

It checks what the documented API checks (HTTP basic auth, an E.164 ``to``, a ``file``
part with a file name holding a PDF, ``header_text`` of at most 50 characters) and answers
in the documented shapes: ``{"success": ..., "message": ..., "data": ...}``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

API_KEY = "test-key"
API_SECRET = "test-secret"
E164 = re.compile(r"\+[1-9]\d{7,14}")


@dataclass
class SentFax:
    fields: dict[str, str]
    file_name: str
    pdf: bytes


@dataclass
class FakePhaxio:
    """State of the fake: what was sent, what to answer next."""

    url: str = ""
    sent: list[SentFax] = field(default_factory=list)
    faxes: dict[str, dict[str, object]] = field(default_factory=dict)
    force_status: int | None = None  # answer POSTs with this HTTP status...
    force_after: int = 0  # ...once this many faxes were queued
    hang: bool = False  # read the request, then never answer
    release: threading.Event = field(default_factory=threading.Event)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(70001))

    @property
    def base_url(self) -> str:
        return f"{self.url}/v2.1"


def _fail(status: int, message: str) -> JSONResponse:
    return JSONResponse({"success": False, "message": message}, status_code=status)


def _authorised(request: Request) -> bool:
    expected = base64.b64encode(f"{API_KEY}:{API_SECRET}".encode()).decode()
    return request.headers.get("authorization", "") == f"Basic {expected}"


async def _hang(fake: FakePhaxio) -> None:
    deadline = time.monotonic() + 30
    while not fake.release.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def _check_fields(fields: dict[str, str]) -> str:
    if not E164.fullmatch(fields.get("to", "")):
        return "Phone number is not formatted correctly or invalid: to"
    if len(fields.get("header_text", "")) > 50:
        return "header_text must be 50 characters or fewer"
    return ""


async def _create(request: Request, fake: FakePhaxio) -> JSONResponse:
    if not _authorised(request):
        return _fail(401, "Invalid API credentials")
    async with request.form() as form:
        upload = form.get("file")
        name = upload.filename if isinstance(upload, UploadFile) else None
        pdf = await upload.read() if isinstance(upload, UploadFile) else b""
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    if fake.hang:
        await _hang(fake)
        return _fail(504, "released")
    if fake.force_status is not None and len(fake.sent) >= fake.force_after:
        return _fail(fake.force_status, "forced failure")
    if not name:
        return _fail(422, "You must provide at least one file or content_url")
    problem = _check_fields(fields) or ("" if pdf.startswith(b"%PDF-") else "file is not a PDF")
    if problem:
        return _fail(422, problem)
    fax_id = str(next(fake._ids))
    fake.sent.append(SentFax(fields=fields, file_name=name, pdf=pdf))
    fake.faxes[fax_id] = {"id": int(fax_id), "direction": "sent", "status": "queued"}
    return JSONResponse(
        {"success": True, "message": "Fax queued for sending", "data": {"id": int(fax_id)}}
    )


async def _retrieve(request: Request, fake: FakePhaxio) -> JSONResponse:
    if not _authorised(request):
        return _fail(401, "Invalid API credentials")
    fax = fake.faxes.get(request.path_params["fax_id"])
    if fax is None:
        return _fail(404, "Fax not found")
    return JSONResponse({"success": True, "message": "Retrieved fax successfully", "data": fax})


def make_app(fake: FakePhaxio) -> Starlette:
    async def create(request: Request) -> JSONResponse:
        return await _create(request, fake)

    async def retrieve(request: Request) -> JSONResponse:
        return await _retrieve(request, fake)

    return Starlette(
        routes=[
            Route("/v2.1/faxes", create, methods=["POST"]),
            Route("/v2.1/faxes/{fax_id}", retrieve, methods=["GET"]),
        ]
    )


@contextmanager
def running_phaxio() -> Iterator[FakePhaxio]:
    """A fake Phaxio on a free local port, for the length of the block."""
    fake = FakePhaxio()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        make_app(fake), log_level="critical", lifespan="off", ws="none", http="h11"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the fake Phaxio server did not start")
        time.sleep(0.01)
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        fake.release.set()
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def sign(
    url: str, fields: list[tuple[str, str]], files: list[tuple[str, bytes]], token: str
) -> str:
    """The documented X-Phaxio-Signature, framed independently of the code under test."""
    text = url
    for name, value in sorted(fields):
        text += name + value
    for name, data in sorted(files):
        text += name + hashlib.sha1(data).hexdigest()  # noqa: S324 -- Phaxio's scheme
    return hmac.new(token.encode(), text.encode(), hashlib.sha1).hexdigest()
