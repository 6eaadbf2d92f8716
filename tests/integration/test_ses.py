"""Amazon SES: the channel against moto and a local stand-in for error answers; events via SQS.

Moto runs as a real server on a local port (SES v2, SNS and SQS over HTTP). Error answers
SES gives but moto does not (throttling, 5xx, a request that is never answered) come from
a small local server that speaks the documented SES v2 wire format: an HTTP status, the
``x-amzn-ErrorType`` header and a JSON body with ``message``.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import socket
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest

from delivery.campaign import load_campaign
from delivery.channels.base import Parcel, Receipt
from delivery.channels.ses import SesChannel, client_config
from delivery.config import SesSettings, Settings
from delivery.errors import (
    AmbiguousDeliveryError,
    ChannelError,
    ChannelSetupError,
    PermanentChannelError,
    TransientChannelError,
)
from delivery.importer import import_messages
from delivery.ledger import verify
from delivery.models import (
    Campaign,
    ChannelName,
    DeliveryState,
    ProofLevel,
    Recipient,
    ReviewState,
)
from delivery.outbox import LocalOutbox
from delivery.store import Store
from delivery.tracking.ses_events import SesEvent, Unreadable, read_event, track_ses
from tests.moto_server import moto_server, offline_aws

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SES_FIXTURES = FIXTURES / "ses"
REGION = "us-east-1"
SUPPORTER = "supporter.one@example.com"  # appears in message bodies, never in evidence
DOC_MESSAGE_ID = "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"
DOC_DELIVERY = "dlv-00000000000000000000"


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials, and no other source of credentials to find."""
    offline_aws(monkeypatch, tmp_path, REGION)


@pytest.fixture(scope="module")
def campaign() -> Campaign:
    return load_campaign(FIXTURES / "campaign_reference.toml")


@pytest.fixture
def ses_settings(moto_url: str, campaign: Campaign) -> SesSettings:
    client = boto3.client("sesv2", region_name=REGION, endpoint_url=moto_url)
    client.create_email_identity(EmailIdentity=campaign.organisation.email)
    client.create_email_identity(EmailIdentity=campaign.organisation.bounce_domain)
    client.close()
    return SesSettings(region=REGION, endpoint_url=moto_url, configuration_set="solidarity")


def _recipient(campaign: Campaign, slug: str) -> Recipient:
    (case,) = [c for c in campaign.cases if any(r.slug == slug for r in c.recipients)]
    return next(r for r in case.recipients if r.slug == slug)


def _email(campaign: Campaign, recipient: Recipient, delivery_id: str, number: int) -> bytes:
    """A composed e-mail as the renderer makes them: headers set, CRLF line ends."""
    org = campaign.organisation
    msg = EmailMessage()
    msg["From"] = f"{org.name} <{org.email}>"
    msg["To"] = f"{recipient.name} <{recipient.email}>"
    msg["Reply-To"] = f"{org.name} <{org.reply_to}>"
    msg["Subject"] = f"Viktor Arkhipov: messages from supporters (e-mail {number} of 2)"
    msg["Message-ID"] = f"<{delivery_id}.{number}@{org.bounce_domain}>"
    msg.set_content(
        f"Dear {recipient.name},\n\nRelease Viktor Arkhipov.\n"
        f"A supporter who asks for a reply at {SUPPORTER}.\n"
    )
    return msg.as_bytes(policy=SMTP)


def _parcel(
    campaign: Campaign,
    *,
    slug: str = "ru-prosecutor-general",
    delivery_id: str = "dlv-3f9a1c7e52b04d8e61a7",
    emails: int = 2,
    sent_parts: frozenset[int] = frozenset(),
) -> Parcel:
    recipient = _recipient(campaign, slug)
    org = campaign.organisation
    return Parcel(
        delivery_id=delivery_id,
        bundle_id="bnd-0000000000",
        channel=ChannelName.EMAIL,
        organisation=org,
        recipient=recipient,
        pdf=b"",
        pages=1,
        message_count=3,
        emails=tuple(_email(campaign, recipient, delivery_id, k) for k in range(1, emails + 1)),
        envelope_from=f"bounces+{delivery_id}@{org.bounce_domain}",
        sent_parts=sent_parts,
    )


def _moto_raw_messages(moto_url: str) -> dict[str, dict[str, Any]]:
    """What moto's SES holds, by message id (moto's own HTTP API, as a person would look)."""
    with urllib.request.urlopen(f"{moto_url}/moto-api/data.json", timeout=10) as answer:  # noqa: S310
        data = json.load(answer)
    return {m["id"]: m for m in data["ses"]["RawMessage"]}


def _send(channel: SesChannel, parcel: Parcel) -> Receipt:
    """Send one parcel, then close the channel, as the worker does at the end of a run."""

    async def run() -> Receipt:
        try:
            return await channel.send(parcel)
        finally:
            await channel.close()

    return asyncio.run(run())


# -- the channel against moto --------------------------------------------------------------


def test_each_email_is_handed_to_ses_unchanged_and_recorded_as_a_part(
    ses_settings: SesSettings, campaign: Campaign, moto_url: str
) -> None:
    parcel = _parcel(campaign)
    channel = SesChannel(ses_settings)  # builds its client from the settings and environment

    receipt = _send(channel, parcel)

    assert receipt.state == DeliveryState.ACCEPTED
    assert receipt.proof == ProofLevel.MTA_ACCEPTED
    assert [(p.number, p.count, p.state, p.proof) for p in receipt.parts] == [
        (1, 2, DeliveryState.ACCEPTED, ProofLevel.MTA_ACCEPTED),
        (2, 2, DeliveryState.ACCEPTED, ProofLevel.MTA_ACCEPTED),
    ]
    refs = [p.ref for p in receipt.parts]
    assert receipt.provider_ref == ",".join(refs)
    held = _moto_raw_messages(moto_url)
    for part, payload in zip(receipt.parts, parcel.emails, strict=True):
        message = held[part.ref]
        assert message["raw_data"].encode("utf-8") == payload  # every byte as composed
        assert message["source"] == "write4rights@example.org"
        assert "office@prosecutor.example.gov" in message["destinations"]


def test_parts_accepted_by_an_earlier_attempt_are_not_sent_again(
    ses_settings: SesSettings, campaign: Campaign, moto_url: str
) -> None:
    parcel = _parcel(campaign, delivery_id="dlv-0a1b2c3d4e5f60718293", sent_parts=frozenset({1}))
    before = set(_moto_raw_messages(moto_url))

    receipt = _send(SesChannel(ses_settings), parcel)

    new = {k: v for k, v in _moto_raw_messages(moto_url).items() if k not in before}
    assert [(p.number, p.count) for p in receipt.parts] == [(2, 2)]
    assert [m["raw_data"].encode("utf-8") for m in new.values()] == [parcel.emails[1]]
    assert receipt.provider_ref == receipt.parts[0].ref == next(iter(new))


def test_a_sender_ses_has_not_verified_is_refused_for_good(
    moto_url: str, campaign: Campaign
) -> None:
    unverified = SesSettings(region=REGION, endpoint_url=moto_url)
    parcel = _parcel(campaign, emails=1)
    other = dataclasses.replace(parcel.organisation, email="desk@unverified.example.org")
    parcel = dataclasses.replace(parcel, organisation=other)

    with pytest.raises(PermanentChannelError) as refused:
        _send(SesChannel(unverified), parcel)

    assert type(refused.value) is PermanentChannelError
    assert "MessageRejected" in str(refused.value)
    assert "e-mail to office@prosecutor.example.gov" in str(refused.value)
    assert refused.value.parts == ()


# -- the channel against the documented error answers --------------------------------------


@dataclass
class Answer:
    """One scripted answer: an HTTP status with SES's error JSON, or a way of not answering."""

    status: int = 200
    error_type: str = ""
    message: str = ""
    body: dict[str, Any] | None = None
    hang: bool = False  # read the request, then never answer
    close: bool = False  # read the request, then close the connection


@dataclass
class FakeSes:
    url: str
    answers: list[Answer] = field(default_factory=list)
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    clients: list[Any] = field(default_factory=list)  # closed when the test ends
    sent: int = 0

    def close_clients(self) -> None:
        for client in self.clients:
            client.close()

    def answer(self, path: str, payload: dict[str, Any]) -> Answer:
        self.requests.append((path, payload))
        if self.answers:
            return self.answers.pop(0)
        self.sent += 1
        return Answer(body={"MessageId": f"0100018f-fake-{self.sent:04d}-000000"})


def _handler(fake: FakeSes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            answer = fake.answer(self.path, json.loads(self.rfile.read(length) or b"{}"))
            if answer.hang:
                fake.release.wait(10)
                self.close_connection = True
                return
            if answer.close:
                self.close_connection = True
                return
            body = answer.body if answer.body is not None else {"message": answer.message}
            data = json.dumps(body).encode()
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if answer.error_type:
                self.send_header("x-amzn-ErrorType", answer.error_type)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


@pytest.fixture
def fake_ses() -> Iterator[FakeSes]:
    fake = FakeSes(url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.close_clients()
        fake.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def _fake_channel(fake: FakeSes, *, read_timeout: float = 5.0) -> SesChannel:
    settings = SesSettings(region=REGION, endpoint_url=fake.url, configuration_set="solidarity")
    client = boto3.client(
        "sesv2",
        region_name=REGION,
        endpoint_url=fake.url,
        config=client_config(connect_timeout=2, read_timeout=read_timeout),
    )
    fake.clients.append(client)
    return SesChannel(settings, client=client)


def _fails(channel: SesChannel, parcel: Parcel) -> ChannelError:
    with pytest.raises(ChannelError) as failed:
        _send(channel, parcel)
    return failed.value


def test_the_request_is_sendemail_as_documented(fake_ses: FakeSes, campaign: Campaign) -> None:
    parcel = _parcel(campaign, emails=1)

    receipt = _send(_fake_channel(fake_ses), parcel)

    ((path, sent),) = fake_ses.requests
    assert path == "/v2/email/outbound-emails"
    assert base64.b64decode(sent.pop("Content")["Raw"]["Data"]) == parcel.emails[0]
    assert sent == {
        "FromEmailAddress": "write4rights@example.org",
        "Destination": {"ToAddresses": ["office@prosecutor.example.gov"]},
        "FeedbackForwardingEmailAddress": ("bounces+dlv-3f9a1c7e52b04d8e61a7@bounces.example.org"),
        "EmailTags": [{"Name": "delivery", "Value": "dlv-3f9a1c7e52b04d8e61a7"}],
        "ConfigurationSetName": "solidarity",
    }
    assert receipt.provider_ref == "0100018f-fake-0001-000000"
    assert receipt.detail == "accepted by SES as 0100018f-fake-0001-000000"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        pytest.param(Answer(429, "TooManyRequestsException"), TransientChannelError, id="429"),
        pytest.param(Answer(400, "Throttling", "Rate exceeded"), TransientChannelError, id="rate"),
        pytest.param(Answer(500, "InternalFailure"), TransientChannelError, id="500"),
        pytest.param(Answer(503, message="Service Unavailable"), TransientChannelError, id="503"),
        pytest.param(Answer(400, "MessageRejected"), PermanentChannelError, id="rejected"),
        pytest.param(Answer(400, "BadRequestException"), PermanentChannelError, id="bad"),
        pytest.param(Answer(400, "AccountSuspendedException"), ChannelSetupError, id="suspended"),
        pytest.param(Answer(400, "SendingPausedException"), ChannelSetupError, id="paused"),
        pytest.param(
            Answer(400, "MailFromDomainNotVerifiedException"), ChannelSetupError, id="mail-from"
        ),
        pytest.param(Answer(404, "NotFoundException"), ChannelSetupError, id="no-config-set"),
        pytest.param(Answer(403, "UnrecognizedClientException"), ChannelSetupError, id="key"),
        pytest.param(Answer(403, "SignatureDoesNotMatch"), ChannelSetupError, id="signature"),
        pytest.param(Answer(close=True), AmbiguousDeliveryError, id="closed-after-request"),
        pytest.param(Answer(body={}), AmbiguousDeliveryError, id="no-message-id"),
    ],
)
def test_each_answer_gives_its_error_class(
    fake_ses: FakeSes, campaign: Campaign, answer: Answer, expected: type[ChannelError]
) -> None:
    fake_ses.answers.append(answer)

    failed = _fails(_fake_channel(fake_ses), _parcel(campaign, emails=1))

    assert type(failed) is expected
    assert failed.parts == ()
    assert len(fake_ses.requests) == 1  # asked once: the worker decides what is retried
    if answer.error_type:
        assert answer.error_type in str(failed)


def test_no_answer_after_the_request_was_read_is_ambiguous(
    fake_ses: FakeSes, campaign: Campaign
) -> None:
    fake_ses.answers.append(Answer(hang=True))

    failed = _fails(_fake_channel(fake_ses, read_timeout=0.5), _parcel(campaign, emails=1))

    assert type(failed) is AmbiguousDeliveryError
    assert "SES may have taken it" in str(failed)
    assert len(fake_ses.requests) == 1  # never sent a second time


def test_nothing_listening_is_transient(campaign: Campaign) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fake = FakeSes(url=f"http://127.0.0.1:{port}")

    failed = _fails(_fake_channel(fake), _parcel(campaign, emails=1))
    fake.close_clients()

    assert type(failed) is TransientChannelError
    assert "not sent" in str(failed)


def test_missing_credentials_are_a_setup_problem(
    fake_ses: FakeSes, campaign: Campaign, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    channel = SesChannel(SesSettings(region=REGION, endpoint_url=fake_ses.url))

    failed = _fails(channel, _parcel(campaign, emails=1))

    assert type(failed) is ChannelSetupError
    assert fake_ses.requests == []  # nothing left the machine


def test_a_later_email_failing_keeps_the_earlier_one_as_accepted(
    fake_ses: FakeSes, campaign: Campaign
) -> None:
    fake_ses.answers.extend(
        [
            Answer(body={"MessageId": "0100018f-first-000000"}),
            Answer(status=429, error_type="TooManyRequestsException", message="slow down"),
        ]
    )

    failed = _fails(_fake_channel(fake_ses), _parcel(campaign))

    assert type(failed) is TransientChannelError
    assert [(p.number, p.count, p.ref, p.state) for p in failed.parts] == [
        (1, 2, "0100018f-first-000000", DeliveryState.ACCEPTED)
    ]
    text = str(failed)
    assert text.startswith("e-mail 2 of 2 to office@prosecutor.example.gov")
    assert "already accepted, not to be sent again: e-mail 1 of 2 (SES 0100018f-first" in text


def test_what_ses_says_is_kept_without_other_addresses_or_key_ids(
    fake_ses: FakeSes, campaign: Campaign
) -> None:
    said = (
        "Email address is not verified. The following identities failed the check: "
        f"office@prosecutor.example.gov, {SUPPORTER} (key AKIAIOSFODNN7EXAMPLE)"
    )
    fake_ses.answers.append(Answer(status=400, error_type="MessageRejected", message=said))

    failed = _fails(_fake_channel(fake_ses), _parcel(campaign, emails=1))

    text = str(failed)
    assert "office@prosecutor.example.gov" in text
    assert SUPPORTER not in text
    assert "AKIAIOSFODNN7EXAMPLE" not in text
    assert "<redacted>" in text


# -- reading SES records -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind", "state", "proof", "said"),
    [
        (
            "delivery.json",
            "Delivery",
            DeliveryState.DELIVERED,
            ProofLevel.MTA_ACCEPTED,
            "250 2.6.0",
        ),
        ("bounce_permanent.json", "Bounce", DeliveryState.BOUNCED, ProofLevel.NONE, "5.1.1"),
        ("bounce_transient.json", "Bounce", None, ProofLevel.NONE, "Transient/MailboxFull"),
        ("complaint.json", "Complaint", None, ProofLevel.NONE, "complaint: abuse"),
        ("reject.json", "Reject", DeliveryState.FAILED, ProofLevel.NONE, "Bad content"),
        ("rendering_failure.json", "Rendering Failure", DeliveryState.FAILED, ProofLevel.NONE, ""),
        ("delivery_delay.json", "DeliveryDelay", None, ProofLevel.NONE, "4.4.1"),
        ("send.json", "Send", None, ProofLevel.NONE, ""),
        ("open.json", "Open", None, ProofLevel.NONE, ""),
        ("click.json", "Click", None, ProofLevel.NONE, ""),
    ],
)
def test_each_documented_record_means_what_the_guide_says(
    name: str, kind: str, state: DeliveryState | None, proof: ProofLevel, said: str
) -> None:
    raw = (SES_FIXTURES / name).read_bytes()
    envelope = json.dumps({"Type": "Notification", "MessageId": "m-1", "Message": raw.decode()})

    for body in (raw, envelope.encode()):
        found = read_event(body)
        assert isinstance(found, SesEvent)
        assert (found.kind, found.state, found.proof) == (kind, state, proof)
        assert found.message_id == DOC_MESSAGE_ID
        assert said in found.detail


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not readable JSON"),
        (b'{"Type": "SubscriptionConfirmation", "Message": "{}"}', "not a notification"),
        (b'{"eventType": "Received", "mail": {"messageId": "x"}}', "does not know"),
        (b'{"eventType": "Delivery", "mail": {}}', "without mail.messageId"),
        (b'{"hello": "world"}', "not an SES record"),
        (b"[" * 5000 + b"]" * 5000, "not readable JSON"),
    ],
)
def test_anything_else_is_unreadable_with_a_reason(body: bytes, reason: str) -> None:
    found = read_event(body)
    assert isinstance(found, Unreadable)
    assert reason in found.reason


def test_a_subscription_record_is_noted() -> None:
    body = json.dumps({"eventType": "Subscription", "mail": {"messageId": "0100-s"}}).encode()
    found = read_event(body)
    assert isinstance(found, SesEvent)
    assert (found.kind, found.state, found.message_id) == ("Subscription", None, "0100-s")


# -- tracking end to end: worker-recorded parts, SNS and SQS in moto, the ledger -----------


@dataclass
class Sent:
    delivery_id: str
    ses_id: str


def _send_through_ses(
    store: Store, campaign: Campaign, ses_settings: SesSettings, slug: str
) -> Sent:
    """Create the delivery, send it with the SES channel and record it as the worker does."""
    rid = store.recipient_ids()[("viktor-arkhipov", slug)]
    bundle = store.bundle(store.create_bundle(rid, "once", actor="test") or "")
    org = campaign.organisation
    delivery_id = store.ensure_delivery(
        bundle, ChannelName.EMAIL, bounce_domain=org.bounce_domain, actor="test"
    )
    store.transition(delivery_id, DeliveryState.SENDING, actor="test")
    parcel = _parcel(campaign, slug=slug, delivery_id=delivery_id, emails=1)
    receipt = _send(SesChannel(ses_settings), parcel)
    store.transition(
        delivery_id,
        receipt.state,
        actor="test",
        proof=receipt.proof,
        provider_ref=receipt.provider_ref,
        detail=receipt.detail,
        parts=receipt.parts,
    )
    return Sent(delivery_id=delivery_id, ses_id=receipt.parts[0].ref)


def _about(name: str, sent: Sent) -> str:
    """A fixture record about one of our e-mails: its SES id and delivery id put in."""
    text = (SES_FIXTURES / name).read_text(encoding="utf-8")
    return text.replace(DOC_MESSAGE_ID, sent.ses_id).replace(DOC_DELIVERY, sent.delivery_id)


def _queue(moto_url: str) -> tuple[Any, str, Any, str, str]:
    """A queue subscribed to two topics: one wraps records in the SNS envelope, one not."""
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=moto_url)
    sns = boto3.client("sns", region_name=REGION, endpoint_url=moto_url)
    queue_url = sqs.create_queue(QueueName="ses-events-tracking")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    queue_arn = arn["Attributes"]["QueueArn"]
    wrapped = sns.create_topic(Name="ses-events")["TopicArn"]
    sns.subscribe(TopicArn=wrapped, Protocol="sqs", Endpoint=queue_arn)
    raw = sns.create_topic(Name="ses-events-raw")["TopicArn"]
    sns.subscribe(
        TopicArn=raw,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    return sqs, queue_url, sns, wrapped, raw


def _waiting(sqs: Any, queue_url: str) -> int:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)
    return sum(int(attributes["Attributes"][n]) for n in names)


def test_ses_records_on_the_queue_move_deliveries_and_keep_scrubbed_evidence(
    tmp_path: Path,
    moto_url: str,
    campaign: Campaign,
    ses_settings: SesSettings,
    database_url: str,
) -> None:
    settings = Settings(
        outbox=str(tmp_path / "outbox"), render={"processes": 1}, database_url=database_url
    )
    store = Store.connect(settings.database_url)
    store.save_campaign(campaign, actor="test", source="campaign.toml", sha256="-")
    import_messages(store, FIXTURES / "messages_sample.csv", source="web", settings=settings)
    store.decide(store.clean_pending(case=None), ReviewState.APPROVED, actor="test")
    prosecutor = _send_through_ses(store, campaign, ses_settings, "ru-prosecutor-general")
    family = _send_through_ses(store, campaign, ses_settings, "arkhipov-family")
    sqs, queue_url, sns, wrapped, raw = _queue(moto_url)
    sns.publish(TopicArn=raw, Message=_about("bounce_transient.json", prosecutor))
    sns.publish(TopicArn=wrapped, Message=_about("bounce_permanent.json", prosecutor))
    sns.publish(TopicArn=raw, Message=_about("bounce_permanent.json", prosecutor))  # again
    sns.publish(TopicArn=wrapped, Message=_about("delivery.json", family))
    sns.publish(TopicArn=raw, Message=_about("click.json", family))
    stranger = Sent(delivery_id=DOC_DELIVERY, ses_id="0100018f-not-ours-000000")
    sns.publish(TopicArn=wrapped, Message=_about("delivery.json", stranger))
    sqs.send_message(QueueUrl=queue_url, MessageBody="{this is not an SES record")
    settings = Settings(
        outbox=str(tmp_path / "outbox"), ses={"region": REGION, "queue_url": queue_url}
    )
    outbox = LocalOutbox(settings.outbox_path)
    org = campaign.organisation
    keep = (org.bounce_domain, org.email, org.reply_to)

    report = track_ses(settings, store, outbox, keep_addresses=keep, actor="test")

    assert report.read == 7
    assert report.outcomes == {
        "bounced": 1,
        "already recorded": 1,  # the same bounce through the other topic
        "noted": 2,  # the transient bounce, the click
        "delivered": 1,
        "quarantined": 2,  # garbage, and an SES message that is none of ours
    }
    assert store.delivery(prosecutor.delivery_id).state == DeliveryState.BOUNCED
    delivered = store.delivery(family.delivery_id)
    assert (delivered.state, delivered.proof) == (DeliveryState.DELIVERED, ProofLevel.MTA_ACCEPTED)
    assert _waiting(sqs, queue_url) == 0  # recorded or quarantined, then deleted

    events = [e for e in store.events() if e.subject == f"delivery:{prosecutor.delivery_id}"]
    kinds = [e.kind for e in events]
    assert kinds[-2:] == ["note.progress", "delivery.bounced"]
    noted, bounced = events[-2].data(), events[-1].data()
    assert "Transient/MailboxFull" in noted["detail"]
    assert "bounce Permanent/General: 5.1.1 smtp; 550 5.1.1 user unknown" in bounced["detail"]
    assert bounced["provider_ref"].startswith("01000157c44f053b")  # the bounce's feedbackId
    (artefact,) = bounced["artefacts"]
    assert artefact["path"].startswith("evidence/ses/")
    assert verify(store.events(), outbox.sha256) == []

    evidence = list(outbox.walk("evidence/ses"))
    assert len(evidence) == 4
    kept = {path: outbox.read(path).decode("utf-8") for path in evidence}
    assert all(SUPPORTER not in text for text in kept.values())
    (click,) = [text for text in kept.values() if '"Click"' in text]
    assert "<redacted>" in click
    assert "family.arkhipov@example.net" in click
    bounce = outbox.read(artefact["path"]).decode("utf-8")
    assert json.loads(bounce)["mail"]["destination"] == ["office@prosecutor.example.gov"]

    reasons = "".join(
        Path(path).with_suffix(".reason.txt").read_text(encoding="utf-8")
        for path in report.quarantined
    )
    assert "names no delivery of ours (SES message 0100018f-not-ours-000000)" in reasons
    assert "cannot read this message: not readable JSON" in reasons

    ledger = store.ledger_size()
    sns.publish(TopicArn=wrapped, Message=_about("delivery.json", family))
    sns.publish(TopicArn=wrapped, Message=_about("bounce_transient.json", prosecutor))
    again = track_ses(settings, store, outbox, keep_addresses=keep, actor="test")
    assert again.outcomes == {"already recorded": 2}  # a noted record is not noted twice
    assert store.ledger_size() == ledger
    assert _waiting(sqs, queue_url) == 0
