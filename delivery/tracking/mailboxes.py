"""Where bounce reports wait: a Maildir, an mbox file or an IMAP folder; and the quarantine.

Reading never removes or changes anything by itself. A Maildir or an mbox file is left as
it is: the caller moves or deletes what it has recorded. An IMAP message is fetched with
``BODY.PEEK[]``, which leaves it unseen, and is marked ``\\Seen`` only when the caller
calls its ``done``, after the result is safely recorded. A crash at any point leaves the
report where it was, to be read again; ``classify`` gives each report a ``source_id`` so
that reading it twice records it once.
"""

from __future__ import annotations

import hashlib
import imaplib
import mailbox
import os
import ssl
import tempfile
from collections.abc import Callable, Generator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from delivery.errors import InputError, PermanentError, TransientError


def read_maildir(path: Path | str) -> Generator[tuple[str, bytes], None, None]:
    """Every message in the Maildir at ``path`` (``new`` and ``cur``): (key, raw bytes).

    Keys are the Maildir's unique names, in sorted order, which is roughly arrival order.
    A message removed by someone else while reading is skipped.
    """
    try:
        box = mailbox.Maildir(path, factory=None, create=False)
        keys = sorted(box.iterkeys())
    except (mailbox.NoSuchMailboxError, OSError) as exc:
        raise InputError(f"{path}: not a readable Maildir: {exc}") from exc
    for key in keys:
        try:
            raw = box.get_bytes(key)
        except (KeyError, FileNotFoundError):
            continue
        yield key, raw


def read_mbox(path: Path | str) -> Generator[tuple[str, bytes], None, None]:
    """Every message in the mbox file at ``path``: (its position as a string, raw bytes).

    The raw bytes are the message without its ``From `` separator line. The file is read
    as it stood when reading began, without a lock; messages appended later are read
    next time.
    """
    try:
        box = mailbox.mbox(path, factory=None, create=False)
    except (mailbox.NoSuchMailboxError, OSError) as exc:
        raise InputError(f"{path}: not a readable mbox file: {exc}") from exc
    try:
        for key in box.iterkeys():
            yield str(key), box.get_bytes(key)
    finally:
        box.close()


class Fetched(NamedTuple):
    """One unseen IMAP message. Call ``done()`` once its result is safely recorded."""

    key: str  # "<UIDVALIDITY>:<UID>": the same message keeps the same key
    raw: bytes
    done: Callable[[], None]


def read_imap(
    host: str,
    port: int,
    user: str,
    password: str,
    folder: str,
    *,
    ssl_context: ssl.SSLContext,
    timeout: float = 60.0,
) -> Generator[Fetched, None, None]:
    """The unseen messages of an IMAP folder over TLS, one at a time, oldest first.

    Each comes with ``done``, which marks it ``\\Seen``; until then it stays unseen and
    the next run reads it again. ``done`` works only while the iteration is open (wrap it
    in ``contextlib.closing`` to log out early). Nothing is ever deleted or expunged.
    Raises TransientError for a connection that fails or drops, PermanentError when the
    server refuses the login or the folder.
    """
    where = f"IMAP {user}@{host}:{port}/{folder}"
    name = _quoted(folder)
    try:
        conn = imaplib.IMAP4_SSL(host, port, ssl_context=ssl_context, timeout=timeout)
    except (OSError, imaplib.IMAP4.error) as exc:
        raise TransientError(f"{where}: cannot connect: {exc}") from exc
    try:
        yield from _session(conn, user, password, name, where)
    except imaplib.IMAP4.abort as exc:
        raise TransientError(f"{where}: the connection dropped: {exc}") from exc
    except imaplib.IMAP4.error as exc:
        raise PermanentError(f"{where}: the server refused: {exc}") from exc
    except OSError as exc:
        raise TransientError(f"{where}: {exc}") from exc
    finally:
        _logout(conn)


def _quoted(folder: str) -> str:
    """An IMAP quoted string; folders with names outside ASCII are refused."""
    if not folder or not folder.isascii() or any(ch in folder for ch in "\r\n\0"):
        raise InputError(f"IMAP folder {folder!r}: give a non-empty ASCII name")
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _said(data: list[Any]) -> str:
    text = b" ".join(item for item in data if isinstance(item, bytes))
    return text.decode("utf-8", "replace")[:200]


def _session(
    conn: imaplib.IMAP4, user: str, password: str, folder: str, where: str
) -> Generator[Fetched, None, None]:
    conn.login(user, password)
    typ, data = conn.select(folder)
    if typ != "OK":
        raise PermanentError(f"{where}: cannot open the folder: {_said(data)}")
    _, validity = conn.response("UIDVALIDITY")
    prefix = _said(validity) or "0"
    for uid in _unseen(conn, where):
        raw = _fetch(conn, uid, where)
        if raw is not None:  # None: expunged by someone else meanwhile
            yield Fetched(key=f"{prefix}:{uid}", raw=raw, done=_marker(conn, uid, where))


def _unseen(conn: imaplib.IMAP4, where: str) -> list[str]:
    typ, data = conn.uid("SEARCH", "UNSEEN")
    if typ != "OK":
        raise PermanentError(f"{where}: cannot search for unseen messages: {_said(data)}")
    return [uid for uid in _said(data).split() if uid.isdigit()]


def _fetch(conn: imaplib.IMAP4, uid: str, where: str) -> bytes | None:
    typ, data = conn.uid("FETCH", uid, "(BODY.PEEK[])")
    if typ != "OK":
        raise TransientError(f"{where}: cannot fetch message {uid}: {_said(data)}")
    for item in data:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
            return item[1]
    return None


def _marker(conn: imaplib.IMAP4, uid: str, where: str) -> Callable[[], None]:
    def done() -> None:
        if conn.state != "SELECTED":
            raise TransientError(
                f"{where}: message {uid} not marked seen, the connection is closed; "
                "it will be read again"
            )
        try:
            typ, data = conn.uid("STORE", uid, "+FLAGS.SILENT", r"(\Seen)")
        except (OSError, imaplib.IMAP4.error) as exc:
            raise TransientError(f"{where}: message {uid} not marked seen: {exc}") from exc
        if typ != "OK":
            raise TransientError(f"{where}: message {uid} not marked seen: {_said(data)}")

    return done


def _logout(conn: imaplib.IMAP4) -> None:
    """Log out without CLOSE: CLOSE would expunge what others flagged as deleted."""
    try:
        conn.logout()
    except (OSError, imaplib.IMAP4.error):
        try:
            conn.shutdown()
        except OSError:
            return


def quarantine(raw: bytes, folder: Path, reason: str) -> Path:
    """Keep a report a person must read: ``report-<sha256>.eml`` and ``.reason.txt`` beside it.

    The name comes from the bytes, so the same report quarantined twice is kept once.
    Both files are written whole or not at all (a temporary file, then a rename) and are
    readable by their owner only: a report carries recipients' and supporters' addresses.
    The reason is written first, so an ``.eml`` is never found without it. Returns the
    path of the ``.eml`` file.
    """
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    (reason_name, text), (name, _) = quarantine_files(raw, reason)
    _write_whole(folder / reason_name, text)
    target = folder / name
    _write_whole(target, raw)
    return target


def quarantine_files(raw: bytes, reason: str) -> tuple[tuple[str, bytes], tuple[str, bytes]]:
    """The two quarantined files, in the order to write them: the reason, then the report."""
    digest = hashlib.sha256(raw).hexdigest()
    stem = f"report-{digest[:32]}"
    note = "".join(ch if ch.isprintable() or ch == "\n" else " " for ch in reason)
    when = datetime.now(UTC).isoformat(timespec="seconds")
    text = (
        f"reason: {note}\nreport: {stem}.eml\nsize: {len(raw)} bytes\n"
        f"sha256: {digest}\nquarantined: {when}\n"
    )
    return (f"{stem}.reason.txt", text.encode("utf-8")), (f"{stem}.eml", raw)


def _write_whole(path: Path, data: bytes) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
