"""The fax gateway end to end: parts sent, callbacks and polling moving them, e-mail to fax.

Against real parts: a fake of Phaxio's documented API over HTTP, an SMTP server
(aiosmtpd) for the e-mail-to-fax gateway, a SQLite store with the reference campaign
loaded, and the callback service as an ASGI app (and once as a real server process).
"""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from pypdf import PdfReader

from delivery.campaign import load_campaign
from delivery.channels.base import Parcel, Receipt
from delivery.channels.fax_email import EmailFax
from delivery.channels.fax_phaxio import PhaxioFax
from delivery.config import FaxSettings, Settings, SmtpSettings
from delivery.errors import ChannelError, ChannelSetupError, PermanentChannelError
from delivery.importer import import_messages
from delivery.ledger import verify
from delivery.models import (
    ChannelName,
    DeliveryState,
    Organisation,
    ProofLevel,
    Recipient,
    ReviewState,
)
from delivery.outbox import LocalOutbox
from delivery.serve import create_app
from delivery.store import Store
from delivery.tracking.fax import poll_phaxio
from tests.builders import numbered_pdf
from tests.integration.phaxio_fake import (
    API_KEY,
    API_SECRET,
    FakePhaxio,
    multipart,
    running_phaxio,
    serving,
    sign,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
ROOT = Path(__file__).resolve().parent.parent.parent
TOKEN = "callback-token-gateway"
CALLBACK_URL = "https://campaigns.example.org/callbacks/phaxio"
CASE, SLUG = "honduras-defenders", "hn-minister-security"
GATEWAY = "50422201234@fax.example.net"  # the minister's +50422201234 at the fax gateway
ACCEPTED, DELIVERED = DeliveryState.ACCEPTED, DeliveryState.DELIVERED


@dataclasses.dataclass(frozen=True)
class World:
    settings: Settings
    store: Store
    outbox: LocalOutbox
    delivery_id: str
    bundle_id: str
    organisation: Organisation
    recipient: Recipient


@pytest.fixture
def world(tmp_path: Path, database_url: str) -> World:
    settings = Settings(
        outbox=str(tmp_path / "outbox"),
        database_url=database_url,
        fax={
            "gateway": "phaxio",
            "phaxio": {
                "api_key": API_KEY,
                "api_secret": API_SECRET,
                "callback_token": TOKEN,
                "callback_url": CALLBACK_URL,
                "timeout": 5.0,
            },
        },
    )
    store = Store.connect(settings.database_url)
    campaign = load_campaign(FIXTURES / "campaign_reference.toml")
    store.save_campaign(campaign, actor="test", source="campaign.toml", sha256="-")
    import_messages(store, FIXTURES / "messages_sample.csv", source="web", settings=settings)
    store.decide(store.clean_pending(case=None), ReviewState.APPROVED, actor="test")
    bundle_id = store.create_bundle(store.recipient_ids()[(CASE, SLUG)], "once", actor="test")
    assert bundle_id is not None
    org = campaign.organisation
    delivery_id = store.ensure_delivery(
        store.bundle(bundle_id), ChannelName.FAX, bounce_domain=org.bounce_domain, actor="test"
    )
    case = campaign.case(CASE)
    assert case is not None
    (recipient,) = [r for r in case.recipients if r.slug == SLUG]
    return World(
        settings=settings,
        store=store,
        outbox=LocalOutbox(settings.outbox_path),
        delivery_id=delivery_id,
        bundle_id=bundle_id,
        organisation=org,
        recipient=recipient,
    )


@pytest.fixture
def phaxio() -> Iterator[FakePhaxio]:
    with running_phaxio() as fake:
        yield fake


@pytest.fixture
def client(world: World) -> Iterator[httpx.Client]:
    """The callback service over real HTTP, as Phaxio reaches it."""
    app = create_app(world.settings, world.store, world.outbox, actor="phaxio-callback")
    with serving(app, "the callback service") as url, httpx.Client(base_url=url) as http:
        yield http


# --- helpers -----------------------------------------------------------------------------


def page_numbers(pdf: bytes) -> list[int]:
    """The bundle pages a fax carries, read back after its cover sheet."""
    cover, *pages = PdfReader(io.BytesIO(pdf)).pages
    assert f"Pages: {len(pages) + 1} including this cover" in cover.extract_text()
    return [int(page.extract_text().strip().removeprefix("Page ")) for page in pages]


def make_parcel(
    world: World, pages: int, *, sent: frozenset[int] = frozenset(), fax: str | None = None
) -> Parcel:
    recipient = world.recipient if fax is None else dataclasses.replace(world.recipient, fax=fax)
    return Parcel(
        delivery_id=world.delivery_id,
        bundle_id=world.bundle_id,
        channel=ChannelName.FAX,
        organisation=world.organisation,
        recipient=recipient,
        pdf=numbered_pdf(pages),
        pages=pages,
        message_count=1,
        envelope_from=f"bounces+{world.delivery_id}@{world.organisation.bounce_domain}",
        sent_parts=sent,
    )


def phaxio_channel(world: World, fake: FakePhaxio) -> PhaxioFax:
    config = world.settings.fax.phaxio.model_copy(update={"base_url": fake.base_url})
    return PhaxioFax(config)


async def _send(channel: PhaxioFax | EmailFax, parcel: Parcel) -> Receipt:
    try:
        return await channel.send(parcel)
    finally:
        await channel.close()


def hand_over(world: World, channel: PhaxioFax | EmailFax, parcel: Parcel) -> Receipt:
    """What the worker does: commit the intent, send, record the receipt and its parts."""
    assert world.store.transition(world.delivery_id, DeliveryState.SENDING, actor="worker")
    try:
        receipt = asyncio.run(_send(channel, parcel))
    except ChannelError as exc:
        world.store.transition(
            world.delivery_id,
            DeliveryState.DEFERRED,
            actor="worker",
            detail=str(exc),
            parts=exc.parts,
        )
        raise
    world.store.transition(
        world.delivery_id,
        receipt.state,
        actor="worker",
        proof=receipt.proof,
        provider_ref=receipt.provider_ref,
        detail=receipt.detail,
        parts=receipt.parts,
    )
    return receipt


def fax_parts(world: World) -> list[tuple[int, int, str, DeliveryState, ProofLevel]]:
    return [
        (p.number, p.count, p.ref, p.state, p.proof) for p in world.store.parts(world.delivery_id)
    ]


def callback(
    client: httpx.Client, fake: FakePhaxio, fax_id: str, *, token: str = TOKEN
) -> httpx.Response:
    body, headers = fake.callback(fax_id, url=CALLBACK_URL, token=token)
    return client.post("/callbacks/phaxio", content=body, headers=headers)


def outcome(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["outcome"])


def poll(world: World, fake: FakePhaxio) -> Counter[str]:
    async def run() -> Counter[str]:
        channel = phaxio_channel(world, fake)
        try:
            return await poll_phaxio(world.store, channel, actor="phaxio-poll")
        finally:
            await channel.close()

    return asyncio.run(run())


def delivery_events(world: World) -> list[tuple[str, dict[str, Any]]]:
    events = world.store.events(subjects=[f"delivery:{world.delivery_id}"])
    return [(e.kind, e.data()) for e in events]


# --- sending through Phaxio ----------------------------------------------------------------


def test_a_sixty_page_bundle_is_faxed_as_two_parts_and_both_are_recorded(
    world: World, phaxio: FakePhaxio
) -> None:
    receipt = hand_over(world, phaxio_channel(world, phaxio), make_parcel(world, 60))

    assert [(p.number, p.count, p.ref, p.state) for p in receipt.parts] == [
        (1, 2, "70001", ACCEPTED),
        (2, 2, "70002", ACCEPTED),
    ]
    assert fax_parts(world) == [
        (1, 2, "70001", ACCEPTED, ProofLevel.NONE),
        (2, 2, "70002", ACCEPTED, ProofLevel.NONE),
    ]
    assert world.store.delivery(world.delivery_id).state is ACCEPTED
    assert [page_numbers(f.pdf) for f in phaxio.sent] == [  # 50 pages a fax, cover included
        list(range(1, 50)),
        list(range(50, 61)),
    ]
    assert [phaxio.faxes[i]["tags"] for i in ("70001", "70002")] == [
        {"delivery": world.delivery_id, "part": "1/2"},
        {"delivery": world.delivery_id, "part": "2/2"},
    ]


def test_a_part_that_fails_after_another_was_queued_carries_the_queued_one(
    world: World, phaxio: FakePhaxio
) -> None:
    phaxio.force_status, phaxio.force_after = 503, 1
    with pytest.raises(ChannelError, match="fax 2 of 2") as caught:
        hand_over(world, phaxio_channel(world, phaxio), make_parcel(world, 60))

    assert [(p.number, p.ref, p.state) for p in caught.value.parts] == [(1, "70001", ACCEPTED)]
    assert world.store.delivery(world.delivery_id).state is DeliveryState.DEFERRED
    assert world.store.sent_parts(world.delivery_id) == {1}

    phaxio.force_status = None
    parcel = make_parcel(world, 60, sent=world.store.sent_parts(world.delivery_id))
    receipt = hand_over(world, phaxio_channel(world, phaxio), parcel)

    assert len(phaxio.sent) == 2  # part 1 once, part 2 once
    assert page_numbers(phaxio.sent[1].pdf) == list(range(50, 61))
    assert [(p.number, p.ref) for p in receipt.parts] == [(2, "70002")]
    assert [p[2] for p in fax_parts(world)] == ["70001", "70002"]


# --- callbacks ---------------------------------------------------------------------------


def test_signed_success_callbacks_for_both_parts_deliver_with_fax_confirmation(
    world: World, phaxio: FakePhaxio, client: httpx.Client
) -> None:
    hand_over(world, phaxio_channel(world, phaxio), make_parcel(world, 60))

    phaxio.finish("70001", "success")
    assert outcome(callback(client, phaxio, "70001")) == "noted"
    assert world.store.delivery(world.delivery_id).state is ACCEPTED
    phaxio.finish("70002", "success")
    assert outcome(callback(client, phaxio, "70002")) == "delivered"

    delivery = world.store.delivery(world.delivery_id)
    assert (delivery.state, delivery.proof) == (DELIVERED, ProofLevel.FAX_CONFIRMED)
    assert {(p[3], p[4]) for p in fax_parts(world)} == {(DELIVERED, ProofLevel.FAX_CONFIRMED)}
    kinds = [kind for kind, _ in delivery_events(world)]
    assert kinds[-2:] == ["note.part", "delivery.delivered"]
    _, delivered = delivery_events(world)[-1]
    (artefact,) = delivered["artefacts"]
    assert artefact["path"].startswith("evidence/fax/")
    kept = world.outbox.read(artefact["path"])
    assert artefact["path"] == f"evidence/fax/{hashlib.sha256(kept).hexdigest()[:32]}.json"
    document = json.loads(kept)
    assert json.loads(document["form"]["fax"])["id"] == 70002
    assert document["signature"]
    assert verify(world.store.events(), world.outbox.sha256) == []


def test_a_callback_with_a_bad_or_missing_signature_is_refused_and_changes_nothing(
    world: World, phaxio: FakePhaxio, client: httpx.Client
) -> None:
    hand_over(world, phaxio_channel(world, phaxio), make_parcel(world, 60))
    phaxio.finish("70001", "success")
    events = world.store.ledger_size()
    body, headers = phaxio.callback("70001", url=CALLBACK_URL, token=TOKEN)

    wrong_token = callback(client, phaxio, "70001", token="someone-elses-token")
    unsigned = client.post(
        "/callbacks/phaxio",
        content=body,
        headers={"content-type": headers["content-type"]},
    )
    tampered = client.post(
        "/callbacks/phaxio", content=body.replace(b'"success"', b'"failure"'), headers=headers
    )

    assert [r.status_code for r in (wrong_token, unsigned, tampered)] == [403, 403, 403]
    assert world.store.ledger_size() == events
    assert {p[3] for p in fax_parts(world)} == {ACCEPTED}
    assert world.store.delivery(world.delivery_id).state is ACCEPTED
    assert not (world.outbox.root / "evidence").exists()


def test_the_same_callback_twice_is_recorded_once(
    world: World, phaxio: FakePhaxio, client: httpx.Client
) -> None:
    hand_over(world, phaxio_channel(world, phaxio), make_parcel(world, 60))
    phaxio.finish("70001", "success")

    assert outcome(callback(client, phaxio, "70001")) == "noted"
    events = world.store.ledger_size()
    assert outcome(callback(client, phaxio, "70001")) == "already recorded"

    assert world.store.ledger_size() == events
    assert len(list(world.outbox.walk("evidence/fax"))) == 1
    assert fax_parts(world)[0][3] is DELIVERED


@pytest.mark.parametrize(
    ("late", "noted_as"), [("inprogress", "progress"), ("busy", "late-report")]
)
def test_a_late_callback_after_success_is_only_noted(
    world: World, phaxio: FakePhaxio, client: httpx.Client, late: str, noted_as: str
) -> None:
    hand_over(world, phaxio_channel(world, phaxio), make_parcel(world, 60))
    for fax_id in ("70001", "70002"):
        phaxio.finish(fax_id, "success")
        callback(client, phaxio, fax_id)
    assert world.store.delivery(world.delivery_id).state is DELIVERED

    phaxio.finish("70002", late)
    assert outcome(callback(client, phaxio, "70002")) == "noted"

    delivery = world.store.delivery(world.delivery_id)
    assert (delivery.state, delivery.proof) == (DELIVERED, ProofLevel.FAX_CONFIRMED)
    assert {p[3] for p in fax_parts(world)} == {DELIVERED}
    assert delivery_events(world)[-1][0] == f"note.{noted_as}"


def report_by_callback(
    world: World, fake: FakePhaxio, client: httpx.Client, fax_ids: list[str]
) -> None:
    for fax_id in fax_ids:
        outcome(callback(client, fake, fax_id))


def report_by_polling(
    world: World, fake: FakePhaxio, client: httpx.Client, fax_ids: list[str]
) -> None:
    found = poll(world, fake)
    assert sum(found.values()) == len(fax_ids), found


@pytest.mark.parametrize("report", [report_by_callback, report_by_polling])
def test_a_busy_second_part_defers_and_only_that_part_is_faxed_again(
    world: World, phaxio: FakePhaxio, client: httpx.Client, report: Any
) -> None:
    hand_over(world, phaxio_channel(world, phaxio), make_parcel(world, 60))
    phaxio.finish("70001", "success")
    phaxio.finish("70002", "busy")
    report(world, phaxio, client, ["70001", "70002"])

    delivery = world.store.delivery(world.delivery_id)
    assert delivery.state is DeliveryState.DEFERRED
    assert "Busy" in delivery.last_error
    assert [p[3] for p in fax_parts(world)] == [DELIVERED, DeliveryState.DEFERRED]
    sent = world.store.sent_parts(world.delivery_id)
    assert sent == {1}

    receipt = hand_over(world, phaxio_channel(world, phaxio), make_parcel(world, 60, sent=sent))

    assert len(phaxio.sent) == 3  # exactly one new fax: part 2
    again = phaxio.sent[-1]
    assert again.fields["tag[part]"] == "2/2"
    assert again.fields["header_text"].endswith("part 2 of 2")
    assert page_numbers(again.pdf) == list(range(50, 61))
    assert [(p.number, p.ref) for p in receipt.parts] == [(2, "70003")]
    assert world.store.delivery(world.delivery_id).state is ACCEPTED

    phaxio.finish("70003", "success")
    report(world, phaxio, client, ["70003"])
    delivery = world.store.delivery(world.delivery_id)
    assert (delivery.state, delivery.proof) == (DELIVERED, ProofLevel.FAX_CONFIRMED)
    assert fax_parts(world) == [
        (1, 2, "70001", DELIVERED, ProofLevel.FAX_CONFIRMED),
        (2, 2, "70003", DELIVERED, ProofLevel.FAX_CONFIRMED),
    ]
    assert outcome(callback(client, phaxio, "70002")) == "unknown fax"  # the replaced fax
    assert verify(world.store.events(), world.outbox.sha256) == []


def test_a_callback_that_arrives_while_another_part_is_being_resent_waits_for_the_worker(
    world: World, phaxio: FakePhaxio, client: httpx.Client
) -> None:
    hand_over(world, phaxio_channel(world, phaxio), make_parcel(world, 60))
    phaxio.finish("70002", "busy")
    outcome(callback(client, phaxio, "70002"))
    assert world.store.delivery(world.delivery_id).state is DeliveryState.DEFERRED

    # The worker commits its intent to fax part 2 again; then part 1's success arrives.
    assert world.store.transition(world.delivery_id, DeliveryState.SENDING, actor="worker")
    phaxio.finish("70001", "success")
    assert outcome(callback(client, phaxio, "70001")) == "noted"
    assert world.store.delivery(world.delivery_id).state is DeliveryState.SENDING

    receipt = asyncio.run(
        _send(phaxio_channel(world, phaxio), make_parcel(world, 60, sent=frozenset({1})))
    )
    assert world.store.transition(
        world.delivery_id, receipt.state, actor="worker", parts=receipt.parts
    )
    phaxio.finish("70003", "success")
    assert outcome(callback(client, phaxio, "70003")) == "delivered"
    delivery = world.store.delivery(world.delivery_id)
    assert (delivery.state, delivery.proof) == (DELIVERED, ProofLevel.FAX_CONFIRMED)
    assert verify(world.store.events(), world.outbox.sha256) == []


def test_polling_records_nothing_while_under_way_and_counts_gateway_errors(
    world: World, phaxio: FakePhaxio
) -> None:
    hand_over(world, phaxio_channel(world, phaxio), make_parcel(world, 60))
    events = world.store.ledger_size()

    assert poll(world, phaxio) == Counter({"under way": 2})
    phaxio.status_error = 503
    assert poll(world, phaxio) == Counter({"transient error": 2})
    assert world.store.ledger_size() == events

    phaxio.status_error = None
    phaxio.finish("70001", "success")
    phaxio.finish("70002", "not operational")
    assert poll(world, phaxio) == Counter({"noted": 1, "failed": 1})
    assert world.store.delivery(world.delivery_id).state is DeliveryState.FAILED
    assert poll(world, phaxio) == Counter()  # nothing accepted is left to ask about


def test_a_signed_callback_that_is_not_a_sent_fax_callback_is_a_bad_request(
    world: World, phaxio: FakePhaxio, client: httpx.Client
) -> None:
    hand_over(world, phaxio_channel(world, phaxio), make_parcel(world, 3))
    events = world.store.ledger_size()
    fields = [("direction", "sent"), ("fax", "not json")]
    headers = {
        "content-type": "multipart/form-data; boundary=----phaxio-callback-boundary-7f3c",
        "x-phaxio-signature": sign(CALLBACK_URL, fields, [], TOKEN),
    }

    unreadable = client.post("/callbacks/phaxio", content=multipart(fields, []), headers=headers)
    not_a_form = client.post(
        "/callbacks/phaxio",
        content=b'{"fax": {"id": 70001}}',
        headers={"content-type": "application/json", "x-phaxio-signature": "ab" * 20},
    )

    assert (unreadable.status_code, not_a_form.status_code) == (400, 400)
    assert world.store.ledger_size() == events


def test_a_callback_with_a_file_part_is_verified_with_it_and_an_unknown_fax_is_answered(
    world: World, phaxio: FakePhaxio, client: httpx.Client
) -> None:
    hand_over(world, phaxio_channel(world, phaxio), make_parcel(world, 3))
    phaxio.faxes["79999"] = {**phaxio.faxes["70001"], "id": 79999, "status": "success"}
    events = world.store.ledger_size()
    scan = numbered_pdf(1)
    body, headers = phaxio.callback("79999", url=CALLBACK_URL, token=TOKEN, files=[("file", scan)])

    answer = client.post("/callbacks/phaxio", content=body, headers=headers)

    assert outcome(answer) == "unknown fax"
    assert world.store.ledger_size() == events
    (kept,) = world.outbox.walk("evidence/fax")
    files = json.loads(world.outbox.read(kept))["files"]
    assert files == {"file": {"sha256": hashlib.sha256(scan).hexdigest(), "size": len(scan)}}


def test_healthz_answers(client: httpx.Client) -> None:
    answer = client.get("/healthz")
    assert (answer.status_code, answer.json()) == (200, {"ok": True})


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_server_logs_to_stderr_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    script = textwrap.dedent(
        f"""
        from delivery.config import Settings
        from delivery.outbox import LocalOutbox
        from delivery.serve import run_server
        from delivery.store import Store

        settings = Settings(outbox={str(tmp_path / "outbox")!r})
        store = Store.connect(settings.database_url)
        outbox = LocalOutbox(settings.outbox_path)
        run_server(settings, store, outbox, actor="test", host="127.0.0.1", port={port})
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOLIDARITY_")}
    env["PYTHONPATH"] = str(ROOT)
    server = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.communicate()[1].decode()
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.05)
        assert answer.json() == {"ok": True}
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=20)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()

    assert server.returncode == 0
    assert out == b""
    assert b"GET /healthz" in err
    assert b"Finished server process" in err


# --- e-mail to fax -----------------------------------------------------------------------


class Recorder:
    """An SMTP server's handler: records every message offered, answers from a script."""

    def __init__(self) -> None:
        self.offered: list[tuple[str, str, list[str], bytes]] = []
        self.replies: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        reply = self.replies.pop(0) if self.replies else "250 2.0.0 Ok: queued"
        self.offered.append((reply, envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return reply

    @property
    def accepted(self) -> list[tuple[str, list[str], EmailMessage]]:
        return [
            (sender, rcpt, _parse(content))
            for reply, sender, rcpt, content in self.offered
            if reply.startswith("250")
        ]


def _parse(content: bytes) -> EmailMessage:
    message = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


@pytest.fixture
def smtp_server() -> Iterator[tuple[Recorder, int]]:
    recorder = Recorder()
    port = _free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield recorder, port
    finally:
        controller.stop()


def email_fax(port: int, **fax: object) -> EmailFax:
    smtp = SmtpSettings(host="127.0.0.1", port=port, security="none", timeout=10)
    settings = FaxSettings.model_validate(
        {"gateway": "email", "email_domain": "fax.example.net", "email_max_pages": 25, **fax}
    )
    return EmailFax(smtp, settings)


def _attachment(message: EmailMessage) -> tuple[str, bytes]:
    (attached,) = list(message.iter_attachments())
    assert attached.get_content_type() == "application/pdf"
    payload = attached.get_content()
    assert isinstance(payload, bytes)
    return str(attached.get_filename()), payload


def test_a_thirty_page_fax_is_two_emails_to_the_gateway_each_saying_its_part(
    world: World, smtp_server: tuple[Recorder, int]
) -> None:
    recorder, port = smtp_server
    receipt = hand_over(world, email_fax(port), make_parcel(world, 30))

    ids = [f"<{world.delivery_id}.{k}@bounces.example.org>" for k in (1, 2)]
    assert [(p.number, p.count, p.ref, p.state, p.proof) for p in receipt.parts] == [
        (1, 2, ids[0], ACCEPTED, ProofLevel.MTA_ACCEPTED),
        (2, 2, ids[1], ACCEPTED, ProofLevel.MTA_ACCEPTED),
    ]
    assert [p[2] for p in fax_parts(world)] == ids
    accepted = recorder.accepted
    assert [rcpt for _, rcpt, _ in accepted] == [[GATEWAY], [GATEWAY]]
    assert {sender for sender, _, _ in accepted} == {
        f"bounces+{world.delivery_id}@bounces.example.org"
    }
    messages = [m for _, _, m in accepted]
    assert [m["Subject"] for m in messages] == [
        "Fax to Minister of Security: part 1 of 2, 25 pages",  # the cover and 24 pages
        "Fax to Minister of Security: part 2 of 2, 7 pages",
    ]
    assert [m["Message-ID"] for m in messages] == ids
    for message in messages:
        assert message["To"] == GATEWAY
        assert message["From"].addresses[0].addr_spec == "write4rights@example.org"
        assert set(message.keys()) == {
            "From",
            "To",
            "Reply-To",
            "Subject",
            "Date",
            "Message-ID",
            "MIME-Version",
            "Content-Type",
        }
    attached = [_attachment(m) for m in messages]
    assert [name for name, _ in attached] == ["fax-part-1-of-2.pdf", "fax-part-2-of-2.pdf"]
    assert [len(PdfReader(io.BytesIO(pdf)).pages) for _, pdf in attached] == [25, 7]
    assert [page_numbers(pdf) for _, pdf in attached] == [
        list(range(1, 25)),
        list(range(25, 31)),
    ]


def test_an_emailed_part_refused_for_now_is_sent_again_alone_with_the_same_message_id(
    world: World, smtp_server: tuple[Recorder, int]
) -> None:
    recorder, port = smtp_server
    recorder.replies = ["250 2.0.0 Ok: queued", "451 4.3.0 try again later"]
    with pytest.raises(ChannelError, match="451") as caught:
        hand_over(world, email_fax(port), make_parcel(world, 30))
    first_try = _parse(recorder.offered[1][3])["Message-ID"]
    assert [(p.number, p.ref) for p in caught.value.parts] == [
        (1, f"<{world.delivery_id}.1@bounces.example.org>")
    ]
    assert world.store.sent_parts(world.delivery_id) == {1}

    parcel = make_parcel(world, 30, sent=world.store.sent_parts(world.delivery_id))
    receipt = hand_over(world, email_fax(port), parcel)

    assert len(recorder.offered) == 3  # part 1 once; part 2 refused, then accepted
    retried = recorder.accepted[-1][2]
    assert retried["Message-ID"] == first_try == f"<{world.delivery_id}.2@bounces.example.org>"
    assert retried["Subject"].endswith("part 2 of 2, 7 pages")
    assert [p.number for p in receipt.parts] == [2]
    assert world.store.delivery(world.delivery_id).state is ACCEPTED


def test_a_number_not_in_e164_is_refused_before_any_email(
    world: World, smtp_server: tuple[Recorder, int]
) -> None:
    recorder, port = smtp_server
    with pytest.raises(PermanentChannelError, match=rf"{CASE}/{SLUG}.*E\.164"):
        asyncio.run(_send(email_fax(port), make_parcel(world, 3, fax="0504 2220 1234")))
    assert recorder.offered == []


def test_no_gateway_domain_is_a_setup_error(
    world: World, smtp_server: tuple[Recorder, int]
) -> None:
    recorder, port = smtp_server
    with pytest.raises(ChannelSetupError, match="EMAIL_DOMAIN"):
        asyncio.run(_send(email_fax(port, email_domain=""), make_parcel(world, 3)))
    assert recorder.offered == []
