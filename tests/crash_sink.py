"""An SMTP server in its own process that writes down the Message-ID of every message it takes.

The crash tests kill workers mid-delivery; this server outlives them and is the witness of
what really reached a mail server. Each accepted message appends one line, its Message-ID,
to the log file, flushed and synced before the server answers 250: a line in the log is
a message the worker was told was accepted.

    python tests/crash_sink.py LOGFILE

prints ``ready <port>`` once it listens on 127.0.0.1; end of stdin stops it.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import os
import sys
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP

HEADERS = email.parser.BytesHeaderParser(policy=email.policy.SMTP)


class Witness:
    def __init__(self, log: Path) -> None:
        self.log = log

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        content = envelope.original_content or envelope.content or b""
        message_id = str(HEADERS.parsebytes(content).get("Message-ID", "")).strip()
        with self.log.open("a", encoding="utf-8") as out:
            out.write(message_id + "\n")
            out.flush()
            os.fsync(out.fileno())
        return "250 2.0.0 Ok: written down"


async def serve(log: Path) -> None:
    loop = asyncio.get_running_loop()
    witness = Witness(log)
    server = await loop.create_server(
        lambda: SMTP(witness, hostname="witness.invalid", enable_SMTPUTF8=True, loop=loop),
        host="127.0.0.1",
        port=0,
    )
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    async with server:
        while await stdin.readline():
            pass


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1])))
