"""Every SMTP outcome, through the worker, as an operator and an auditor see it.

Each test runs the real worker (``solidarity worker --once --on-demand``) against a
server on a free local port and checks four things: the delivery's state as ``solidarity
status`` shows it, how many copies the server holds, the ledger entries for the delivery
(with the server's reply in them), and the envelope sender ``bounces+<delivery>@<domain>``.

The worker builds its SMTP channel itself, with ``ssl.create_default_context()``; OpenSSL
reads the trusted certificates from the file named by ``SSL_CERT_FILE``, so the TLS tests
point that variable at the test CA (written by ``trustme``). Nothing in ``delivery/`` is
patched. Time passing before a retry is the delivery's ``updated_at`` moved back in the
database, as if the run had happened ten minutes ago.
"""

from __future__ import annotations

import asyncio
import csv
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
from sqlalchemy import update

from delivery.campaign import load_campaign
from delivery.config import Settings
from delivery.importer import import_messages
from delivery.ledger import Event, verify
from delivery.models import DeliveryState, Part, ProofLevel, ReviewState
from delivery.outbox import LocalOutbox
from delivery.store import Store
from delivery.store.schema import deliveries
from delivery.store.work import DeliveryRow
from delivery.worker import RunSummary, Worker
from tests.integration.smtp_servers import (
    HOST,
    Copy,
    Mailbox,
    Plan,
    ServerThread,
    server_thread,
)

CASE = "detained-journalist"
DESK = "desk@justice.example.org"
BOUNCES = "bounces.example.org"
CAMPAIGN = f"""
[organisation]
name = "Solidarity desk"
email = "letters@example.org"
reply_to = "casework@example.org"
bounce_domain = "{BOUNCES}"

[organisation.address]
name = "Solidarity desk"
street = "1 Example Street"
city = "London"
postal_code = "WC1X 0DW"
country = "GB"

[[case]]
slug = "{CASE}"
name = "A detained journalist"
country = "GB"
summary = "A journalist detained for reporting on a peaceful protest."
demand = "Release the journalist immediately and unconditionally."
auto_approve = ["letter"]

  [[case.recipient]]
  slug = "justice-desk"
  kind = "authority"
  name = "Minister of Justice"
  language = "en"
  email = "{DESK}"
  channels = ["email"]
  format = "digest"
  cadence = "daily"
"""
MESSAGE = {
    "external_id": "web-0001",
    "case": CASE,
    "to": "authority",
    "supporter_name": "A supporter in Lyon",
    "supporter_email": "",
    "supporter_city": "Lyon",
    "supporter_country": "FR",
    "language": "en",
    "kind": "letter",
    "body": "Release the journalist now. Reporting on a protest is not a crime.",
    "submitted_at": "2026-12-14T10:02:00Z",
    "event": "",
}
TINY_EMAILS = {"max_attachment_mb": 0.005, "max_message_mb": 0.015}  # a page an e-mail
CASEWORKER = "caseworker@example.org"


# --- a campaign with one approved message, and the worker ------------------------------


@dataclass
class Desk:
    """One outbox and store, an approved message waiting for the justice desk."""

    outbox: Path
    store: Store

    def settings(self, port: int, security: str = "none", **changes: Any) -> Settings:
        smtp = {"host": HOST, "port": port, "security": security, "timeout": 5.0}
        return Settings(
            outbox=str(self.outbox),
            render={"processes": 1},
            smtp=smtp | changes.pop("smtp", {}),
            **changes,
        )

    def run(self, settings: Settings) -> RunSummary:
        return asyncio.run(Worker(settings, self.store).run_once(on_demand=True))

    def delivery(self) -> DeliveryRow:
        (row,) = self.store.deliveries_in(list(DeliveryState))
        return row

    def status(self) -> dict[str, int]:
        shown: dict[str, int] = self.store.status(case=CASE, recipient=None)["deliveries"]["email"]
        return shown

    def ledger(self, delivery_id: str) -> list[Event]:
        return list(self.store.events(subjects=[f"delivery:{delivery_id}"]))

    def later(self, delivery_id: str, minutes: int = 10) -> None:
        """As if the last attempt had been ``minutes`` ago: a retry is due."""
        moved = self.store.delivery(delivery_id).updated_at - timedelta(minutes=minutes)
        with self.store.engine.begin() as conn:
            conn.execute(
                update(deliveries).where(deliveries.c.id == delivery_id).values(updated_at=moved)
            )


@pytest.fixture
def desk(tmp_path: Path, database_url: str) -> Iterator[Desk]:
    outbox = tmp_path / "outbox"
    campaign = tmp_path / "campaign.toml"
    campaign.write_text(CAMPAIGN, encoding="utf-8")
    messages = tmp_path / "messages.csv"
    with messages.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=list(MESSAGE))
        writer.writeheader()
        writer.writerow(MESSAGE)
    settings = Settings(outbox=str(outbox), database_url=database_url)
    store = Store.connect(settings.database_url)
    store.save_campaign(load_campaign(campaign), actor="test", source="campaign.toml", sha256="-")
    import_messages(store, messages, source="web", settings=settings)
    store.decide(store.clean_pending(case=None), ReviewState.APPROVED, actor="test")
    yield Desk(outbox, store)
    store.close()


@pytest.fixture
def servers() -> Iterator[ServerThread]:
    with server_thread() as running:
        yield running


# --- certificates ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST).configure_cert(context)
    return context


@pytest.fixture
def trust_test_ca(ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The system trust store, for this test, is the test CA alone."""
    bundle = tmp_path / "test-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


# --- what the operator and the auditor see ---------------------------------------------


def envelope(delivery: DeliveryRow) -> str:
    return f"bounces+{delivery.id}@{BOUNCES}"


def message_id(delivery: DeliveryRow, number: int | None = None) -> str:
    return f"<{delivery.id}.{number}@{BOUNCES}>" if number else f"<{delivery.id}@{BOUNCES}>"


def kinds(events: list[Event]) -> list[str]:
    return [e.kind for e in events]


def assert_held_once(copies: list[Copy], delivery: DeliveryRow) -> Copy:
    (copy,) = copies
    assert copy.message_id == message_id(delivery) == delivery.message_id_header
    assert copy.mail_from == envelope(delivery)
    assert copy.rcpt_tos == (DESK,)
    return copy


def assert_chain_intact(desk: Desk) -> None:
    assert verify(desk.store.events(), LocalOutbox(desk.outbox).sha256) == []


def assert_waiting(desk: Desk, reply: str) -> DeliveryRow:
    """Deferred, the server's reply shown to the operator and kept in the ledger."""
    delivery = desk.delivery()
    assert delivery.state is DeliveryState.DEFERRED
    assert desk.status() == {"deferred": 1}
    assert reply in delivery.last_error
    assert delivery.proof is ProofLevel.NONE
    events = desk.ledger(delivery.id)
    assert kinds(events) == ["delivery.queued", "delivery.sending", "delivery.deferred"]
    assert reply in events[-1].data()["detail"]
    assert events[-1].data()["detail"] == delivery.last_error
    return delivery


def assert_accepted_on_retry(desk: Desk, settings: Settings, reply: str) -> DeliveryRow:
    """Not due yet: nothing sent. Due: sent once, accepted."""
    delivery = desk.delivery()
    assert desk.run(settings).deliveries == {}
    assert desk.delivery() == delivery
    assert len(desk.ledger(delivery.id)) == 3

    desk.later(delivery.id)
    assert desk.run(settings).deliveries == {"email:accepted": 1}
    delivery = desk.delivery()
    assert delivery.state is DeliveryState.ACCEPTED
    assert delivery.attempts == 2
    assert desk.status() == {"accepted": 1}
    events = desk.ledger(delivery.id)
    assert kinds(events)[3:] == ["delivery.sending", "delivery.accepted"]
    assert reply in events[2].data()["detail"]
    assert_chain_intact(desk)
    return delivery


# --- accepted ---------------------------------------------------------------------------


@pytest.mark.parametrize("security", ["none", "starttls", "tls"])
@pytest.mark.usefixtures("trust_test_ca")
def test_a_250_is_accepted_with_one_copy(
    security: str, desk: Desk, servers: ServerThread, server_tls: ssl.SSLContext
) -> None:
    mailbox = Mailbox()
    port = servers.mailbox(
        mailbox,
        starttls=server_tls if security == "starttls" else None,
        implicit=server_tls if security == "tls" else None,
    )
    settings = desk.settings(port, security)

    summary = desk.run(settings)

    assert summary.deliveries == {"email:accepted": 1}
    assert summary.errors == []
    delivery = desk.delivery()
    assert delivery.state is DeliveryState.ACCEPTED
    assert delivery.proof is ProofLevel.MTA_ACCEPTED
    assert delivery.provider_ref == "2.0.0 Ok: queued as Q1"
    assert delivery.last_error == ""
    assert desk.status() == {"accepted": 1}
    copy = assert_held_once(mailbox.held, delivery)
    assert copy.tls is (security != "none")
    assert mailbox.mail_from == [envelope(delivery)]
    events = desk.ledger(delivery.id)
    assert kinds(events) == ["delivery.queued", "delivery.sending", "delivery.accepted"]
    accepted = events[-1].data()
    assert accepted["proof"] == "mta-accepted"
    assert accepted["detail"] == "250 2.0.0 Ok: queued as Q1"
    assert [p["ref"] for p in accepted["parts"]] == [message_id(delivery)]
    assert_chain_intact(desk)

    assert desk.run(settings).deliveries == {}  # accepted is done: never sent again
    assert len(mailbox.held) == 1


# --- deferred, and tried again when due -------------------------------------------------


def test_a_421_greeting_defers_and_the_retry_waits_for_its_time(
    desk: Desk, servers: ServerThread
) -> None:
    server, port = servers.scripted(Plan.GREET_421)
    settings = desk.settings(port)

    assert desk.run(settings).deliveries == {"email:deferred": 1}

    delivery = assert_waiting(desk, "greeting: 421 4.3.2 mx.example.org busy, try again later")
    assert server.held == []
    assert server.mail_from == []
    assert server.connections == 1

    delivery = assert_accepted_on_retry(desk, settings, "421 4.3.2")
    assert server.connections == 2
    assert_held_once(server.held, delivery)
    assert server.mail_from == [envelope(delivery)]


def test_a_421_to_mail_from_defers_and_the_retry_waits_for_its_time(
    desk: Desk, servers: ServerThread
) -> None:
    mailbox = Mailbox(mail_replies=["421 4.7.0 too many messages from you, try again later"])
    settings = desk.settings(servers.mailbox(mailbox))

    assert desk.run(settings).deliveries == {"email:deferred": 1}

    delivery = assert_waiting(
        desk, f"MAIL FROM <{envelope(desk.delivery())}> refused: 421 4.7.0 too many messages"
    )
    assert mailbox.held == []
    assert mailbox.mail_from == [envelope(delivery)]

    delivery = assert_accepted_on_retry(desk, settings, "421 4.7.0")
    assert_held_once(mailbox.held, delivery)
    assert mailbox.mail_from == [envelope(delivery)] * 2


def test_a_450_to_rcpt_defers(desk: Desk, servers: ServerThread) -> None:
    mailbox = Mailbox(rcpt_replies=["450 4.2.1 mailbox busy, try again later"])
    settings = desk.settings(servers.mailbox(mailbox))

    assert desk.run(settings).deliveries == {"email:deferred": 1}

    delivery = assert_waiting(desk, f"RCPT TO <{DESK}> refused: 450 4.2.1 mailbox busy")
    assert mailbox.held == []
    assert mailbox.mail_from == [envelope(delivery)]
    assert mailbox.rcpt_to == [DESK]


def test_a_connection_dropped_before_data_defers(desk: Desk, servers: ServerThread) -> None:
    server, port = servers.scripted(Plan.DROP_AFTER_RCPT)

    assert desk.run(desk.settings(port)).deliveries == {"email:deferred": 1}

    delivery = assert_waiting(desk, "not sent")
    assert server.held == []
    assert server.mail_from == [envelope(delivery)]
    assert server.rcpt_to == [DESK]


def test_a_server_that_never_greets_defers_after_the_timeout(
    desk: Desk, servers: ServerThread
) -> None:
    server, port = servers.scripted(Plan.SILENT)

    summary = desk.run(desk.settings(port, smtp={"timeout": 1.0}))

    assert summary.deliveries == {"email:deferred": 1}
    assert_waiting(desk, "not sent")
    assert "timed out" in desk.delivery().last_error.lower()
    assert server.connections == 1
    assert server.held == []
    assert server.mail_from == []


# --- refused for good -------------------------------------------------------------------


def test_a_550_to_the_only_rcpt_fails_the_delivery(desk: Desk, servers: ServerThread) -> None:
    # One recipient per transaction: a refused RCPT is the whole outcome, not a partial one.
    mailbox = Mailbox(rcpt_replies=["550 5.1.1 <desk@justice.example.org>: no such mailbox"])
    settings = desk.settings(servers.mailbox(mailbox))

    summary = desk.run(settings)

    assert summary.deliveries == {"email:failed": 1}
    delivery = desk.delivery()
    assert delivery.state is DeliveryState.FAILED
    assert desk.status() == {"failed": 1}
    refusal = f"RCPT TO <{DESK}> refused: 550 5.1.1 <{DESK}>: no such mailbox"
    assert refusal in delivery.last_error
    assert [d.id for d in desk.store.not_arrived()] == [delivery.id]  # a person decides
    events = desk.ledger(delivery.id)
    assert kinds(events) == ["delivery.queued", "delivery.sending", "delivery.failed"]
    assert refusal in events[-1].data()["detail"]
    assert mailbox.held == []
    assert mailbox.mail_from == [envelope(delivery)]
    assert mailbox.rcpt_to == [DESK]

    desk.later(delivery.id, minutes=24 * 60)
    assert desk.run(settings).deliveries == {}  # failed is final: never tried again
    assert mailbox.mail_from == [envelope(delivery)]
    assert_chain_intact(desk)


# --- unknown: sent, no reply ------------------------------------------------------------


def test_a_drop_after_the_final_dot_is_unknown_until_a_person_resends(
    desk: Desk, servers: ServerThread
) -> None:
    server, port = servers.scripted(Plan.DROP_AFTER_DOT)
    settings = desk.settings(port)

    assert desk.run(settings).deliveries == {"email:unknown": 1}

    delivery = desk.delivery()
    assert delivery.state is DeliveryState.UNKNOWN
    assert desk.status() == {"unknown": 1}
    assert "the server may have accepted it" in delivery.last_error
    assert [d.id for d in desk.store.not_arrived()] == [delivery.id]
    assert_held_once(server.held, delivery)
    events = desk.ledger(delivery.id)
    assert kinds(events) == ["delivery.queued", "delivery.sending", "delivery.unknown"]
    assert events[-1].data()["detail"] == delivery.last_error

    desk.later(delivery.id, minutes=24 * 60)
    assert desk.run(settings).deliveries == {}  # never resent without a person
    assert desk.delivery().state is DeliveryState.UNKNOWN
    assert len(server.held) == 1
    assert server.connections == 1

    desk.store.requeue_unknown(
        delivery.id, reason="the server's log shows no copy", actor=CASEWORKER
    )
    assert desk.run(settings).deliveries == {"email:accepted": 1}

    delivery = desk.delivery()
    assert delivery.state is DeliveryState.ACCEPTED
    assert delivery.proof is ProofLevel.MTA_ACCEPTED
    assert desk.status() == {"accepted": 1}
    first, second = server.held
    assert first.message_id == second.message_id == delivery.message_id_header
    assert first.content == second.content
    assert server.mail_from == [envelope(delivery)] * 2
    events = desk.ledger(delivery.id)
    assert kinds(events) == [
        "delivery.queued",
        "delivery.sending",
        "delivery.unknown",
        "delivery.queued",
        "delivery.sending",
        "delivery.accepted",
    ]
    decision = events[3]
    assert decision.actor == CASEWORKER
    assert decision.data()["from"] == "unknown"
    assert "same Message-ID: the server's log shows no copy" in decision.data()["detail"]
    assert events[4].actor.startswith("worker@")  # the worker sent it, on the person's decision
    assert_chain_intact(desk)


# --- the channel cannot work as configured ----------------------------------------------


def test_starttls_not_offered_stops_the_run_and_sends_nothing_in_clear(
    desk: Desk, servers: ServerThread
) -> None:
    mailbox = Mailbox()
    port = servers.mailbox(mailbox)  # no TLS certificate: STARTTLS not offered

    summary = desk.run(desk.settings(port, "starttls"))

    (error,) = summary.errors
    assert f"{HOST} does not offer STARTTLS; refusing to send in clear" in error
    assert summary.deliveries == {}
    delivery = desk.delivery()
    assert delivery.state is DeliveryState.DEFERRED  # waits for the operator
    assert desk.status() == {"deferred": 1}
    assert mailbox.mail_from == []  # not one command of the message went in clear
    assert mailbox.held == []
    events = desk.ledger(delivery.id)
    assert kinds(events) == ["delivery.queued", "delivery.sending", "delivery.deferred"]
    waiting = events[-1].data()["detail"]
    assert "waiting for an operator" in waiting
    # Why it waits, where `solidarity status` and an auditor look, not only in this run's output.
    assert "does not offer STARTTLS" in waiting
    assert waiting == delivery.last_error


# --- one delivery in several e-mails ----------------------------------------------------


def test_a_split_digest_resends_only_the_emails_not_accepted(
    desk: Desk, servers: ServerThread
) -> None:
    mailbox = Mailbox(data_replies=["250 2.0.0 Ok: queued as P1", "451 4.3.0 try again later"])
    settings = desk.settings(servers.mailbox(mailbox), email=TINY_EMAILS)

    assert desk.run(settings).deliveries == {"email:deferred": 1}

    delivery = assert_waiting(desk, "451 4.3.0 try again later")
    (part,) = desk.store.parts(delivery.id)
    count = part.count
    assert count >= 2
    assert part == Part(
        number=1,
        count=count,
        ref=message_id(delivery, 1),
        state=DeliveryState.ACCEPTED,
        proof=ProofLevel.MTA_ACCEPTED,
        detail="250 2.0.0 Ok: queued as P1",
    )
    assert f"e-mail 2 of {count} to {DESK}" in delivery.last_error
    assert f"already accepted, not to be sent again: e-mail 1 of {count}" in delivery.last_error
    assert [c.message_id for c in mailbox.held] == [message_id(delivery, 1)]
    assert mailbox.mail_from == [envelope(delivery)] * 2  # e-mail 2 went, and was refused

    desk.later(delivery.id)
    assert desk.run(settings).deliveries == {"email:accepted": 1}

    delivery = desk.delivery()
    assert delivery.state is DeliveryState.ACCEPTED
    assert desk.status() == {"accepted": 1}
    numbers = range(1, count + 1)
    assert [c.message_id for c in mailbox.held] == [message_id(delivery, n) for n in numbers]
    assert {c.mail_from for c in mailbox.held} == {envelope(delivery)}
    assert len(mailbox.mail_from) == 2 + count - 1  # the retry began at e-mail 2
    parts = desk.store.parts(delivery.id)
    assert [(p.number, p.state) for p in parts] == [(n, DeliveryState.ACCEPTED) for n in numbers]
    events = desk.ledger(delivery.id)
    assert kinds(events) == [
        "delivery.queued",
        "delivery.sending",
        "delivery.deferred",
        "delivery.sending",
        "delivery.accepted",
    ]
    assert [p["number"] for p in events[2].data()["parts"]] == [1]
    assert [p["number"] for p in events[-1].data()["parts"]] == list(numbers)[1:]
    assert_chain_intact(desk)
