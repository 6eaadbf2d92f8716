"""Mailbox readers on real Maildir and mbox files, the quarantine, and IMAP over real TLS."""

from __future__ import annotations

import contextlib
import mailbox
import shutil
import socket
import socketserver
import ssl
import stat
import subprocess
import threading
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from delivery.errors import InputError, PermanentError, TransientError
from delivery.tracking import (
    BounceReport,
    Fetched,
    Unparseable,
    classify,
    quarantine,
    read_imap,
    read_maildir,
    read_mbox,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "dsn"
PASSWORD = "s3cret pass"
REPORTS = {path.name: path.read_bytes() for path in sorted(FIXTURES.glob("*.eml"))}


# -- Maildir and mbox ----------------------------------------------------------------------


def test_read_maildir_yields_every_message_in_new_and_cur(tmp_path: Path) -> None:
    folder = tmp_path / "Maildir"
    box = mailbox.Maildir(folder, create=True)
    for number, raw in enumerate(REPORTS.values()):
        key = box.add(raw)
        if number % 2:  # read by a mail client: moved to cur with its info
            (folder / "new" / key).rename(folder / "cur" / f"{key}:2,S")
    assert len(list((folder / "cur").iterdir())) == len(REPORTS) // 2
    read = list(read_maildir(folder))
    assert sorted(raw for _, raw in read) == sorted(REPORTS.values())
    assert len({key for key, _ in read}) == len(REPORTS)


def test_a_maildir_message_removed_while_reading_is_skipped(tmp_path: Path) -> None:
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    keys = [box.add(raw) for raw in list(REPORTS.values())[:3]]
    reader = read_maildir(tmp_path / "Maildir")
    first_key, _ = next(reader)
    for key in keys:
        if key != first_key:
            box.remove(key)
    assert list(reader) == []


def test_read_mbox_yields_every_message(tmp_path: Path) -> None:
    path = tmp_path / "bounces.mbox"
    box = mailbox.mbox(path, create=True)
    for raw in REPORTS.values():
        box.add(raw)
    box.close()
    read = list(read_mbox(path))
    assert [key for key, _ in read] == [str(n) for n in range(len(REPORTS))]
    assert [raw.rstrip(b"\n") for _, raw in read] == [raw.rstrip(b"\n") for raw in REPORTS.values()]


def test_what_the_readers_yield_classifies(tmp_path: Path) -> None:
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    box.add(REPORTS["postfix_user_unknown.eml"])
    [(_, raw)] = list(read_maildir(tmp_path / "Maildir"))
    found = classify(raw, bounce_domain="bounces.example.org")
    assert isinstance(found, BounceReport)
    assert found.delivery_id == "dlv-3f9a1c7e52b04d8e61a7"


def test_missing_mailboxes_are_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a readable Maildir"):
        list(read_maildir(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="not a readable mbox"):
        list(read_mbox(tmp_path / "nowhere.mbox"))


# -- quarantine ----------------------------------------------------------------------------


def test_quarantine_writes_the_report_and_its_reason(tmp_path: Path) -> None:
    raw = REPORTS["truncated.eml"]
    result = classify(raw, bounce_domain="bounces.example.org")
    assert isinstance(result, Unparseable)
    eml = quarantine(raw, tmp_path / "quarantine", result.reason)
    note = eml.with_suffix(".reason.txt")
    assert eml.read_bytes() == raw
    text = note.read_text()
    assert f"reason: {result.reason}\n" in text
    assert f"report: {eml.name}\n" in text
    assert f"size: {len(raw)} bytes\n" in text
    for path in (eml, note):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in eml.parent.iterdir()) == sorted([eml.name, note.name])


def test_quarantining_the_same_report_twice_keeps_one_copy(tmp_path: Path) -> None:
    first = quarantine(b"Subject: x\n\nbody\n", tmp_path, "first look")
    second = quarantine(b"Subject: x\n\nbody\n", tmp_path, "second look\x00\x1b[31m")
    assert first == second
    assert len(list(tmp_path.iterdir())) == 2
    assert "reason: second look  [31m\n" in first.with_suffix(".reason.txt").read_text()


# -- IMAP ----------------------------------------------------------------------------------


class FakeImap(socketserver.ThreadingTCPServer):
    """Just enough IMAP4rev1 over TLS for one folder: flags kept per UID."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, context: ssl.SSLContext, messages: dict[int, bytes]) -> None:
        self.context = context
        self.messages = messages
        self.seen: set[int] = set()
        self.commands: list[str] = []
        super().__init__(("127.0.0.1", 0), ImapHandler)

    def get_request(self) -> tuple[socket.socket, object]:
        sock, address = super().get_request()
        return self.context.wrap_socket(sock, server_side=True), address


class ImapHandler(socketserver.StreamRequestHandler):
    server: FakeImap

    def say(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        self.say("* OK [CAPABILITY IMAP4rev1] fake IMAP ready")
        while line := self.rfile.readline():
            tag, _, command = line.decode().rstrip("\r\n").partition(" ")
            self.server.commands.append(command)
            if not self.answer(tag, command):
                return

    def answer(self, tag: str, command: str) -> bool:
        verb = command.split(" ")[0].upper()
        if verb == "CAPABILITY":
            self.say("* CAPABILITY IMAP4rev1")
        elif verb == "LOGIN" and command != f'LOGIN bounces "{PASSWORD}"':
            self.say(f"{tag} NO [AUTHENTICATIONFAILED] invalid credentials")
            return True
        elif verb == "SELECT":
            self.say(f"* {len(self.server.messages)} EXISTS")
            self.say("* OK [UIDVALIDITY 42] UIDs valid")
            self.say(f"{tag} OK [READ-WRITE] SELECT completed")
            return True
        elif verb == "UID":
            self.uid(command.split(" ", 3)[1:])
        elif verb == "LOGOUT":
            self.say("* BYE logging out")
            self.say(f"{tag} OK LOGOUT completed")
            return False
        self.say(f"{tag} OK {verb} completed")
        return True

    def uid(self, words: list[str]) -> None:
        action, messages = words[0].upper(), self.server.messages
        if action == "SEARCH":
            unseen = [str(uid) for uid in sorted(messages) if uid not in self.server.seen]
            self.say(" ".join(["* SEARCH", *unseen]))
        elif action == "FETCH":
            uid = int(words[1])
            if "PEEK" not in words[2].upper():
                self.server.seen.add(uid)  # a plain fetch sets \Seen, as real servers do
            raw = messages[uid]
            self.wfile.write(f"* {uid} FETCH (UID {uid} BODY[] {{{len(raw)}}}\r\n".encode())
            self.wfile.write(raw + b")\r\n")
        elif action == "STORE" and "\\Seen" in words[2]:
            self.server.seen.add(int(words[1]))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def server(certificate: tuple[Path, Path]) -> Iterator[FakeImap]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    messages = {
        3: REPORTS["postfix_user_unknown.eml"],
        5: REPORTS["qmail_bounce.eml"],
        8: REPORTS["out_of_office.eml"],
    }
    fake = FakeImap(context, messages)
    fake.seen.add(5)  # already read by someone
    thread = threading.Thread(target=fake.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.shutdown()
    fake.server_close()
    thread.join(timeout=5)


@pytest.fixture
def client(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


def imap(
    server: FakeImap, client: ssl.SSLContext, password: str = PASSWORD
) -> Generator[Fetched, None, None]:
    port = server.server_address[1]
    return read_imap("localhost", port, "bounces", password, "INBOX", ssl_context=client)


def test_read_imap_yields_unseen_messages_without_marking_them(
    server: FakeImap, client: ssl.SSLContext
) -> None:
    fetched = list(imap(server, client))
    assert [(f.key, f.raw) for f in fetched] == [
        ("42:3", REPORTS["postfix_user_unknown.eml"]),
        ("42:8", REPORTS["out_of_office.eml"]),
    ]
    assert server.seen == {5}
    assert "UID FETCH 3 (BODY.PEEK[])" in server.commands
    assert server.commands[-1] == "LOGOUT"
    assert not any(c.startswith(("CLOSE", "EXPUNGE")) for c in server.commands)


def test_done_marks_a_message_seen_and_it_is_not_read_again(
    server: FakeImap, client: ssl.SSLContext
) -> None:
    for fetched in imap(server, client):
        fetched.done()
    assert server.seen == {3, 5, 8}
    assert list(imap(server, client)) == []


def record_until_the_store_fails(reader: Generator[Fetched, None, None]) -> None:
    with contextlib.closing(reader):
        for fetched in reader:
            if fetched.key == "42:8":
                raise RuntimeError("the store went away")
            fetched.done()


def test_a_crash_before_done_loses_nothing(server: FakeImap, client: ssl.SSLContext) -> None:
    with pytest.raises(RuntimeError, match="store went away"):
        record_until_the_store_fails(imap(server, client))
    assert server.seen == {3, 5}
    assert server.commands[-1] == "LOGOUT"
    assert [f.key for f in imap(server, client)] == ["42:8"]


def test_done_after_the_connection_closed_refuses_loudly(
    server: FakeImap, client: ssl.SSLContext
) -> None:
    fetched = list(imap(server, client))
    with pytest.raises(TransientError, match="will be read again"):
        fetched[0].done()
    assert server.seen == {5}


def test_a_refused_login_is_permanent(server: FakeImap, client: ssl.SSLContext) -> None:
    with pytest.raises(PermanentError, match="refused"):
        list(imap(server, client, password="wrong"))


def test_an_untrusted_server_is_not_spoken_to(server: FakeImap) -> None:
    with pytest.raises(TransientError, match="cannot connect"):
        list(imap(server, ssl.create_default_context()))
    assert "LOGIN" not in " ".join(server.commands)


def test_a_server_that_is_not_there_is_transient(client: ssl.SSLContext) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    reader = read_imap("127.0.0.1", port, "u", "p", "INBOX", ssl_context=client, timeout=5)
    with pytest.raises(TransientError, match="cannot connect"):
        list(reader)


def test_folder_names_outside_ascii_are_refused(client: ssl.SSLContext) -> None:
    with pytest.raises(InputError, match="ASCII"):
        list(read_imap("localhost", 1, "u", "p", "Rückläufer", ssl_context=client))
