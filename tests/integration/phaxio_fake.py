"""A local stand-in for the Phaxio v2.1 API, served over real HTTP by uvicorn.

It checks what the documented API checks (HTTP basic auth, an E.164 ``to``, a ``file``
part with a file name holding a PDF, ``header_text`` of at most 50 characters) and answers
in the documented shapes: ``{"success": ..., "message": ..., "data": ...}``. Its faxes are
fax objects as documented (docs/api/v2/intro/objects): a test finishes one with
:meth:`FakePhaxio.finish` and has the fake build the signed send-fax callback Phaxio would
POST about it (:meth:`FakePhaxio.callback`, docs/api/v2/faxes/send_callback).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import uvicorn
from pypdf import PdfReader
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

API_KEY = "test-key"
API_SECRET = "test-secret"
E164 = re.compile(r"\+[1-9]\d{7,14}")
BOUNDARY = "----phaxio-callback-boundary-7f3c"
# How a finished fax reads (docs/statuses, docs/errorMessages): status, then error fields.
OUTCOMES: dict[str, dict[str, object]] = {
    "success": {"status": "success"},
    "inprogress": {"status": "inprogress"},
    "busy": {
        "status": "failure",
        "error_type": "lineError",
        "error_id": 17,
        "error_message": "Busy",
    },
    "no answer": {
        "status": "failure",
        "error_type": "lineError",
        "error_id": 16,
        "error_message": "No answer",
    },
    "not operational": {
        "status": "failure",
        "error_type": "lineError",
        "error_id": 34,
        "error_message": "Phone number not operational",
    },
}


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
    status_error: int | None = None  # answer GET faxes/<id> with this HTTP status
    release: threading.Event = field(default_factory=threading.Event)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(70001))

    @property
    def base_url(self) -> str:
        return f"{self.url}/v2.1"

    def finish(self, fax_id: str, outcome: str) -> dict[str, object]:
        """Move one fax to an outcome of :data:`OUTCOMES`, as Phaxio's fax object shows it."""
        fax = self.faxes[fax_id]
        fields = OUTCOMES[outcome]
        done = fields["status"] != "inprogress"
        fax.update({k: v for k, v in fields.items() if k != "status"})
        fax["status"] = fields["status"]
        if done:
            fax["completed_at"] = "2026-12-15T10:04:00.000-06:00"
        recipients = fax["recipients"]
        assert isinstance(recipients, list)
        recipients[0].update({**fields, "retry_count": 1 if done else 0})
        return fax

    def callback(
        self, fax_id: str, *, url: str, token: str, files: list[tuple[str, bytes]] | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """The multipart body and headers of the send-fax callback about one fax, signed."""
        fax = self.faxes[fax_id]
        fields = [
            ("success", "true" if fax["status"] == "success" else "false"),
            ("is_test", "false"),
            ("direction", "sent"),
            ("fax", json.dumps(fax)),
        ]
        body = multipart(fields, files or [])
        headers = {
            "content-type": f"multipart/form-data; boundary={BOUNDARY}",
            "x-phaxio-signature": sign(url, fields, files or [], token),
        }
        return body, headers


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
    fake.faxes[fax_id] = _fax_object(fax_id, fields, pdf)
    return JSONResponse(
        {"success": True, "message": "Fax queued for sending", "data": {"id": int(fax_id)}}
    )


def _fax_object(fax_id: str, fields: dict[str, str], pdf: bytes) -> dict[str, object]:
    tags = {k[4:-1]: v for k, v in fields.items() if k.startswith("tag[") and k.endswith("]")}
    return {
        "id": int(fax_id),
        "direction": "sent",
        "num_pages": len(PdfReader(io.BytesIO(pdf)).pages),
        "status": "queued",
        "is_test": False,
        "created_at": "2026-12-15T10:00:00.000-06:00",
        "caller_id": "+15005550006",
        "from_number": None,
        "completed_at": None,
        "cost": 7,
        "tags": tags,
        "recipients": [{"phone_number": fields["to"], "status": "queued", "retry_count": 0}],
        "error_type": None,
        "error_id": None,
        "error_message": None,
    }


async def _retrieve(request: Request, fake: FakePhaxio) -> JSONResponse:
    if not _authorised(request):
        return _fail(401, "Invalid API credentials")
    if fake.status_error is not None:
        return _fail(fake.status_error, "forced failure")
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
def serving(app: ASGIApp, what: str = "the test server") -> Iterator[str]:
    """``app`` served by uvicorn on a free local port, for the length of the block; its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="critical", lifespan="off", ws="none", http="h11")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextmanager
def running_phaxio() -> Iterator[FakePhaxio]:
    """A fake Phaxio on a free local port, for the length of the block."""
    fake = FakePhaxio()
    with serving(make_app(fake), "the fake Phaxio server") as url:
        fake.url = url
        try:
            yield fake
        finally:
            fake.release.set()


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


def multipart(fields: list[tuple[str, str]], files: list[tuple[str, bytes]]) -> bytes:
    """A multipart/form-data body with :data:`BOUNDARY`, as a web client frames one."""
    out = b""
    for name, value in fields:
        out += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value.encode() + b"\r\n"
    for name, data in files:
        out += (
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; "
            f'name="{name}"; filename="{name}.pdf"\r\nContent-Type: application/pdf\r\n\r\n'
        ).encode()
        out += data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()
