"""An SMTP server that accepts every message, keeps none, and counts what it received.

Run as its own process by ``bench_email``, so that the server's work does not share a
process (or its event loop) with the client being measured:

    .venv/bin/python bench/smtp_sink.py [--host 127.0.0.1] [--port 0]

It listens on a free port unless one is given, then prints ``ready <host> <port>`` on
stdout. Every line read from stdin is answered with one line of counts so far:
``<messages> <bytes> <connections> <recipients>`` (bytes of message content as received,
connections as accepted). End of stdin stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from aiosmtpd.smtp import SMTP

HOSTNAME = "sink.invalid"  # not socket.getfqdn(), which may wait on DNS


class Counter:
    """The handler: accepts every message and counts it."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0
        self.connections = 0
        self.recipients = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages += 1
        self.bytes += len(envelope.original_content or envelope.content or b"")
        self.recipients += len(envelope.rcpt_tos)
        return "250 2.0.0 Ok: counted"

    def line(self) -> str:
        return f"{self.messages} {self.bytes} {self.connections} {self.recipients}"


async def serve(host: str, port: int) -> None:
    counter = Counter()
    loop = asyncio.get_running_loop()

    def connection() -> SMTP:
        counter.connections += 1
        return SMTP(counter, hostname=HOSTNAME, enable_SMTPUTF8=True, loop=loop)

    server = await loop.create_server(connection, host=host, port=port)
    bound = server.sockets[0].getsockname()
    print(f"ready {bound[0]} {bound[1]}", flush=True)
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    async with server:
        while await commands.readline():
            print(counter.line(), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (the default)")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
