"""The failures S3 gives but moto does not, from two small local servers.

A proxy in front of moto answers the first PUTs, or every PUT under one path, with ``503
SlowDown`` (S3's XML error body) and passes everything else on; a socket takes connections
and never answers.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP = frozenset({"connection", "content-length", "expect", "keep-alive", "transfer-encoding"})
SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>proxy</RequestId></Error>"
)


class FailingProxy:
    """A proxy in front of moto that answers PUTs with 503: the first ``fail_puts`` of them,
    and every one whose path starts with ``refuse_under`` (``/bucket/key-prefix``) when set.
    """

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.fail_puts = 0
        self.refuse_under = ""
        self.puts = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _proxy_handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def failing(self, method: str, path: str) -> bool:
        if method != "PUT":
            return False
        with self.lock:
            self.puts += 1
            refused = bool(self.refuse_under) and path.startswith(self.refuse_under)
            return refused or self.puts <= self.fail_puts


@contextmanager
def failing_proxy(upstream: str) -> Iterator[FailingProxy]:
    """A :class:`FailingProxy` in front of ``upstream``, serving for the length of the block."""
    made = FailingProxy(upstream)
    made.thread.start()
    try:
        yield made
    finally:
        made.server.shutdown()
        made.server.server_close()


def _proxy_handler(proxy: FailingProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, and 100-continue answered

        def _relay(self) -> None:
            assert "chunked" not in self.headers.get("Transfer-Encoding", "")
            body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
            if proxy.failing(self.command, self.path):
                self._answer(503, {"Content-Type": "application/xml"}, SLOW_DOWN)
                return
            upstream = HTTPConnection(*proxy.upstream, timeout=30)
            try:
                sent = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                upstream.request(self.command, self.path, body=body, headers=sent)
                answer = upstream.getresponse()
                payload = answer.read()
                kept = {k: v for k, v in answer.getheaders() if k.lower() not in HOP}
                if self.command == "HEAD":  # no body, but the object's length
                    kept["Content-Length"] = answer.getheader("Content-Length") or "0"
                self._answer(answer.status, kept, payload)
            finally:
                upstream.close()

        def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            headers.setdefault("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextmanager
def silent_server() -> Iterator[str]:
    """A server that accepts connections and never says a word; its URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()
