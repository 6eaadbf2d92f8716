"""What DATA carries: the composed bytes with CRLF line ends and leading dots doubled."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from delivery.channels.smtp import _message_id, _wire_body


def reference(message: bytes) -> bytes:
    """RFC 5321 section 4.5.2, written the obvious way."""
    body = re.sub(rb"\r\n|\n|\r", b"\r\n", message)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return re.sub(rb"(?m)^\.", b"..", body)


@given(st.lists(st.sampled_from([b".", b"a", b"\r", b"\n", b"\r\n", b"..", b" ", b"\xc3\xa9"])))
def test_the_wire_form_is_what_rfc_5321_asks_for(pieces: list[bytes]) -> None:
    message = b"".join(pieces)
    assert _wire_body(message) == reference(message)


def test_a_line_of_a_single_dot_cannot_end_the_data_early() -> None:
    wire = _wire_body(b"Subject: x\n\nfirst\n.\nlast")
    assert wire == b"Subject: x\r\n\r\nfirst\r\n..\r\nlast\r\n"
    assert b"\r\n.\r\n" not in wire


def test_the_message_id_is_read_from_the_headers_only() -> None:
    message = b"From: a@example.org\r\nMessage-ID: <dlv-1@example.org>\r\n\r\nMessage-ID: <x@y>\r\n"
    assert _message_id(message) == "<dlv-1@example.org>"
    assert _message_id(b"From: a@example.org\n\nMessage-ID: <x@y>\n") == ""
