"""The worker with an SMTP server configured: accepted, deferred, and never sent twice."""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import mailbox
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from delivery.campaign import load_campaign
from delivery.config import Settings
from delivery.importer import import_messages
from delivery.ledger import verify
from delivery.models import ChannelName, DeliveryState, ReviewState
from delivery.outbox import LocalOutbox
from delivery.store import Store
from delivery.tracking.bounces import BounceTracker
from delivery.tracking.dsn import scrub
from delivery.tracking.mailboxes import read_mbox
from delivery.worker import Worker
from tests.postgres import sql

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


class Recorder:
    """An SMTP server's handler: records what arrives, or answers with a set reply."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []
        self.reply = "250 2.0.0 Ok: queued"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.reply.startswith("250"):
            self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return self.reply


@pytest.fixture
def smtp_server() -> Iterator[tuple[Recorder, int]]:
    recorder = Recorder()
    with socket.socket() as probe:  # a free port: the controller checks it with a connection
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield recorder, port
    finally:
        controller.stop()


@pytest.fixture
def setup(
    tmp_path: Path, smtp_server: tuple[Recorder, int], database_url: str
) -> tuple[Settings, Store, Recorder]:
    recorder, port = smtp_server
    settings = Settings(
        outbox=str(tmp_path / "outbox"),
        database_url=database_url,
        render={"processes": 1},
        smtp={"host": "127.0.0.1", "port": port, "security": "none", "timeout": 10},
    )
    store = Store.connect(settings.database_url)
    campaign = load_campaign(FIXTURES / "campaign_reference.toml")
    store.save_campaign(campaign, actor="test", source="campaign.toml", sha256="-")
    import_messages(store, FIXTURES / "messages_sample.csv", source="web", settings=settings)
    store.decide(store.clean_pending(case=None), ReviewState.APPROVED, actor="test")
    return settings, store, recorder


def _email_deliveries(store: Store) -> dict[str, DeliveryState]:
    states = [s for s in DeliveryState]
    return {d.slug: d.state for d in store.deliveries_in(states) if d.channel == ChannelName.EMAIL}


def test_mail_is_accepted_by_the_server_once(setup: tuple[Settings, Store, Recorder]) -> None:
    settings, store, recorder = setup
    worker = Worker(settings, store)
    asyncio.run(worker.run_once(on_demand=True))

    assert _email_deliveries(store) == {
        "ru-prosecutor-general": DeliveryState.ACCEPTED,
        "arkhipov-family": DeliveryState.ACCEPTED,
    }
    assert len(recorder.received) == 2
    for mail_from, rcpt, content in recorder.received:
        message = email.message_from_bytes(content, policy=email.policy.default)
        delivery_id = message["Message-ID"].strip("<>").split("@")[0]
        assert mail_from == f"bounces+{delivery_id}@bounces.example.org"
        assert rcpt == [message["To"].addresses[0].addr_spec]
    assert not list(settings.outbox_path.glob("email/**/*.eml"))  # sent, not spooled

    asyncio.run(worker.run_once(on_demand=True))
    assert len(recorder.received) == 2


def test_a_run_stopped_mid_send_leaves_the_delivery_unknown_not_resent(
    setup: tuple[Settings, Store, Recorder],
) -> None:
    settings, store, recorder = setup
    worker = Worker(settings, store)
    asyncio.run(worker.run_once(on_demand=True))
    (family,) = [
        d for d in store.deliveries_in([DeliveryState.ACCEPTED]) if d.slug == "arkhipov-family"
    ]
    # as if the process died after committing the intent
    sql(store, "UPDATE deliveries SET state = 'sending' WHERE id = :id", id=family.id)

    summary = asyncio.run(worker.run_once(on_demand=True))

    assert store.delivery(family.id).state == DeliveryState.UNKNOWN
    assert summary.deliveries == {"email:unknown": 1}
    assert len(recorder.received) == 2


def test_a_4xx_reply_defers_and_the_retry_waits_its_turn(
    setup: tuple[Settings, Store, Recorder],
) -> None:
    settings, store, recorder = setup
    recorder.reply = "451 4.3.0 try again later"
    worker = Worker(settings, store)
    first = asyncio.run(worker.run_once(on_demand=True))
    assert first.deliveries["email:deferred"] == 2
    assert set(_email_deliveries(store).values()) == {DeliveryState.DEFERRED}

    recorder.reply = "250 2.0.0 Ok: queued"
    again = asyncio.run(worker.run_once(on_demand=True))  # a minute has not passed
    assert "email:accepted" not in again.deliveries
    assert recorder.received == []


DSN = FIXTURES / "dsn"


def _report(fixture: str, fixture_id: str, delivery_id: str) -> bytes:
    return (DSN / fixture).read_bytes().replace(fixture_id.encode(), delivery_id.encode())


def test_bounce_reports_move_accepted_mail_and_keep_scrubbed_evidence(
    setup: tuple[Settings, Store, Recorder], tmp_path: Path
) -> None:
    settings, store, _ = setup
    asyncio.run(Worker(settings, store).run_once(on_demand=True))
    by_slug = {d.slug: d for d in store.deliveries_in([DeliveryState.ACCEPTED])}
    family, prosecutor = by_slug["arkhipov-family"], by_slug["ru-prosecutor-general"]
    mbox = mailbox.mbox(tmp_path / "bounces.mbox")
    mbox.add(_report("postfix_user_unknown.eml", "dlv-3f9a1c7e52b04d8e61a7", family.id))
    mbox.add(_report("postfix_delivered.eml", "dlv-9d8c7b6a5f4e3d2c1b0a", prosecutor.id))
    mbox.add(_report("postfix_delayed.eml", "dlv-0a1b2c3d4e5f60718293", prosecutor.id))
    mbox.add((DSN / "out_of_office.eml").read_bytes())
    mbox.add((DSN / "garbage.eml").read_bytes())
    mbox.flush()
    mbox.close()
    outbox = LocalOutbox(settings.outbox_path)
    org = store.campaign().organisation
    tracker = BounceTracker(
        store=store,
        outbox=outbox,
        bounce_domain=org.bounce_domain,
        keep_addresses=(org.bounce_domain,),
        actor="test",
    )

    first = tracker.track(read_mbox(tmp_path / "bounces.mbox"))

    assert first.outcomes == {
        "bounced": 1,
        "delivered": 1,
        "noted": 1,  # a delay after "delivered" never moves it back
        "auto-reply": 1,
        "quarantined": 1,
    }
    assert store.delivery(family.id).state == DeliveryState.BOUNCED
    assert "5.1.1" in store.delivery(family.id).last_error  # what `review deliveries` shows
    assert store.delivery(prosecutor.id).state == DeliveryState.DELIVERED
    (quarantined,) = first.quarantined
    assert Path(quarantined).is_file()
    evidence = list(outbox.walk("evidence"))
    assert len(evidence) == 3
    for path in evidence:
        assert b"family.arkhipov@example.net" not in outbox.read(path)
    assert verify(store.events(), outbox.sha256) == []

    again = tracker.track(read_mbox(tmp_path / "bounces.mbox"))
    assert again.outcomes["already recorded"] == 3
    events = store.ledger_size()
    tracker.track(read_mbox(tmp_path / "bounces.mbox"))
    assert store.ledger_size() == events
    assert store.delivery(family.id).state == DeliveryState.BOUNCED


def test_a_report_whose_evidence_was_written_but_not_recorded_is_recorded_next_time(
    setup: tuple[Settings, Store, Recorder], tmp_path: Path
) -> None:
    settings, store, _ = setup
    asyncio.run(Worker(settings, store).run_once(on_demand=True))
    family = next(
        d for d in store.deliveries_in([DeliveryState.ACCEPTED]) if d.slug == "arkhipov-family"
    )
    raw = _report("postfix_user_unknown.eml", "dlv-3f9a1c7e52b04d8e61a7", family.id)
    outbox = LocalOutbox(settings.outbox_path)
    org = store.campaign().organisation
    tracker = BounceTracker(
        store=store,
        outbox=outbox,
        bounce_domain=org.bounce_domain,
        keep_addresses=(org.bounce_domain,),
        actor="test",
    )
    # A run that stopped between writing the evidence and recording the event:
    cleaned = scrub(raw, tracker.keep_addresses)
    outbox.write(f"evidence/bounces/{hashlib.sha256(cleaned).hexdigest()[:32]}.eml", cleaned)

    report = tracker.track([("1", raw)])

    assert report.outcomes == {"bounced": 1}
    assert store.delivery(family.id).state == DeliveryState.BOUNCED
    assert verify(store.events(), outbox.sha256) == []
