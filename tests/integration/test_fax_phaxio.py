"""The Phaxio fax channel against a local fake of the documented v2.1 API, over real HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest
from pydantic import SecretStr
from pypdf import PdfReader

from delivery.channels.base import Parcel, Receipt
from delivery.channels.fax_phaxio import (
    CallbackError,
    FaxStatus,
    PhaxioFax,
    parse_callback,
    verify_callback,
)
from delivery.config import PhaxioSettings
from delivery.errors import (
    AmbiguousDeliveryError,
    ChannelSetupError,
    PermanentChannelError,
    TransientChannelError,
)
from delivery.models import (
    Cadence,
    ChannelName,
    DeliveryState,
    Format,
    Organisation,
    ProofLevel,
    Recipient,
    RecipientKind,
)
from tests.builders import ORG, make_pdf
from tests.integration.phaxio_fake import API_KEY, API_SECRET, FakePhaxio, running_phaxio, sign

T = TypeVar("T")
TOKEN = "callback-token-1"
CALLBACK_URL = "https://campaigns.example.org/phaxio/callback/"
NUMBER = "+4420799900011"


def make_parcel(pages: int = 3, *, fax: str = NUMBER) -> Parcel:
    recipient = Recipient(
        case="free-the-poet",
        slug="prosecutor",
        kind=RecipientKind.AUTHORITY,
        name="Office of the Prosecutor",
        language="en",
        channels=(ChannelName.FAX,),
        format=Format.BUNDLE,
        cadence=Cadence.DAILY,
        fax=fax,
    )
    return Parcel(
        delivery_id="dlv-0001",
        bundle_id="bdl-0001",
        channel=ChannelName.FAX,
        organisation=ORG,
        recipient=recipient,
        pdf=make_pdf(pages),
        pages=pages,
        message_count=128,
    )


def settings(base_url: str, **changes: object) -> PhaxioSettings:
    values: dict[str, object] = {
        "api_key": API_KEY,
        "api_secret": SecretStr(API_SECRET),
        "callback_token": SecretStr(TOKEN),
        "callback_url": CALLBACK_URL,
        "base_url": base_url,
        "timeout": 5.0,
    }
    values.update(changes)
    return PhaxioSettings.model_validate(values)


def with_channel(config: PhaxioSettings, use: Callable[[PhaxioFax], Awaitable[T]]) -> T:
    async def run() -> T:
        channel = PhaxioFax(config)
        try:
            return await use(channel)
        finally:
            await channel.close()

    return asyncio.run(run())


def send(config: PhaxioSettings, parcel: Parcel) -> Receipt:
    return with_channel(config, lambda channel: channel.send(parcel))


@pytest.fixture
def phaxio() -> Iterator[FakePhaxio]:
    with running_phaxio() as fake:
        yield fake


# --- sending ---------------------------------------------------------------------------


def test_a_fax_is_queued_with_the_documented_fields_and_the_delivery_tag(
    phaxio: FakePhaxio,
) -> None:
    parcel = make_parcel(3)
    receipt = send(settings(phaxio.base_url), parcel)

    assert receipt.state is DeliveryState.ACCEPTED
    assert receipt.proof is ProofLevel.NONE
    assert receipt.provider_ref == "70001"
    [fax] = phaxio.sent
    assert fax.fields == {
        "to": NUMBER,
        "header_text": ORG.name,
        "tag[delivery]": "dlv-0001",
        "callback_url": CALLBACK_URL,
    }
    assert fax.file_name.endswith(".pdf")
    cover, *pages = PdfReader(io.BytesIO(fax.pdf)).pages
    assert "Pages: 4 including this cover" in cover.extract_text()
    assert len(pages) == parcel.pages


def test_a_sixty_page_bundle_becomes_two_faxes_marked_part_1_and_2(phaxio: FakePhaxio) -> None:
    receipt = send(settings(phaxio.base_url), make_parcel(60))

    assert receipt.provider_ref == "70001,70002"
    assert [f.fields["header_text"] for f in phaxio.sent] == [
        f"{ORG.name} - part 1 of 2",
        f"{ORG.name} - part 2 of 2",
    ]
    assert [f.fields["tag[part]"] for f in phaxio.sent] == ["1/2", "2/2"]
    assert {f.fields["tag[delivery]"] for f in phaxio.sent} == {"dlv-0001"}
    # 50 pages a fax, the cover included: 49 + 11 pages of the bundle
    assert [len(PdfReader(io.BytesIO(f.pdf)).pages) for f in phaxio.sent] == [50, 12]


def test_the_header_stays_within_fifty_characters(phaxio: FakePhaxio) -> None:
    config = settings(phaxio.base_url, max_pages=3)  # a cover and 2 pages a fax
    parcel = make_parcel(3)
    long_org = Organisation(
        name="The International Network of Free Voices for Prisoners of Conscience",
        email=ORG.email,
        reply_to=ORG.reply_to,
        bounce_domain=ORG.bounce_domain,
        address=ORG.address,
    )
    send(config, dataclasses.replace(parcel, organisation=long_org))

    headers = [f.fields["header_text"] for f in phaxio.sent]
    assert all(len(h) <= 50 for h in headers)
    assert headers[1].endswith(" - part 2 of 2")


@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_server_error_or_rate_limit_is_transient(phaxio: FakePhaxio, status: int) -> None:
    phaxio.force_status = status
    with pytest.raises(TransientChannelError, match=f"HTTP {status}"):
        send(settings(phaxio.base_url), make_parcel())


def test_an_invalid_number_refused_by_phaxio_is_permanent(phaxio: FakePhaxio) -> None:
    phaxio.force_status = 422
    with pytest.raises(PermanentChannelError, match="HTTP 422") as caught:
        send(settings(phaxio.base_url), make_parcel())
    assert not isinstance(caught.value, ChannelSetupError)


def test_a_number_not_in_e164_is_refused_before_any_request(phaxio: FakePhaxio) -> None:
    with pytest.raises(PermanentChannelError, match=r"E\.164"):
        send(settings(phaxio.base_url), make_parcel(fax="020 7999 0001"))
    assert phaxio.sent == []


def test_refused_credentials_are_a_setup_error(phaxio: FakePhaxio) -> None:
    config = settings(phaxio.base_url, api_secret=SecretStr("wrong"))
    with pytest.raises(ChannelSetupError, match="HTTP 401"):
        send(config, make_parcel())


def test_a_server_that_reads_the_request_and_never_answers_is_ambiguous(
    phaxio: FakePhaxio,
) -> None:
    phaxio.hang = True
    with pytest.raises(AmbiguousDeliveryError, match="may have queued"):
        send(settings(phaxio.base_url, timeout=0.5), make_parcel())


def test_no_server_listening_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TransientChannelError, match="not sent"):
        send(settings(f"http://127.0.0.1:{port}/v2.1"), make_parcel())


def test_a_failed_second_part_names_the_part_already_queued(phaxio: FakePhaxio) -> None:
    phaxio.force_status, phaxio.force_after = 500, 1
    with pytest.raises(TransientChannelError, match="fax 2 of 2") as caught:
        send(settings(phaxio.base_url), make_parcel(60))
    assert "already queued at Phaxio for this delivery: fax 70001" in str(caught.value)


# --- status ----------------------------------------------------------------------------


def status_of(phaxio: FakePhaxio, fax: dict[str, object]) -> FaxStatus:
    phaxio.faxes["70001"] = {"id": 70001, "direction": "sent", **fax}
    return with_channel(settings(phaxio.base_url), lambda channel: channel.status("70001"))


def test_success_is_delivered_with_fax_confirmation(phaxio: FakePhaxio) -> None:
    found = status_of(phaxio, {"status": "success", "num_pages": 3})
    assert (found.state, found.proof, found.pages) == (
        DeliveryState.DELIVERED,
        ProofLevel.FAX_CONFIRMED,
        3,
    )


def test_a_busy_line_is_deferred(phaxio: FakePhaxio) -> None:
    found = status_of(
        phaxio,
        {"status": "failure", "error_type": "lineError", "error_id": 17, "error_message": "Busy"},
    )
    assert (found.state, found.proof) == (DeliveryState.DEFERRED, ProofLevel.NONE)
    assert "Busy" in found.detail


def test_a_recipient_level_no_answer_is_deferred(phaxio: FakePhaxio) -> None:
    recipient = {
        "phone_number": NUMBER,
        "status": "failure",
        "error_type": "lineError",
        "error_message": "No answer from the fax machine",
    }
    found = status_of(phaxio, {"status": "failure", "recipients": [recipient]})
    assert found.state is DeliveryState.DEFERRED


@pytest.mark.parametrize(
    ("error_type", "error_id", "message"),
    [
        ("documentConversionError", 133, "Failed to normalize PDF document"),
        ("lineError", 34, "Phone number not operational"),
        ("faxError", 6, "There was an error communicating with the far side."),
    ],
)
def test_other_failures_are_failed(
    phaxio: FakePhaxio, error_type: str, error_id: int, message: str
) -> None:
    fax = {"status": "failure", "error_type": error_type, "error_id": error_id}
    found = status_of(phaxio, {**fax, "error_message": message})
    assert (found.state, found.proof) == (DeliveryState.FAILED, ProofLevel.NONE)
    assert error_type in found.detail


@pytest.mark.parametrize("status", ["queued", "pendingbatch", "inprogress"])
def test_a_fax_under_way_changes_nothing(phaxio: FakePhaxio, status: str) -> None:
    found = status_of(phaxio, {"status": status})
    assert found.state is None
    assert found.proof is ProofLevel.NONE


def test_an_unknown_fax_id_is_permanent(phaxio: FakePhaxio) -> None:
    with pytest.raises(PermanentChannelError, match="HTTP 404"):
        with_channel(settings(phaxio.base_url), lambda channel: channel.status("99999"))


# --- callbacks -------------------------------------------------------------------------


def callback_form(status: str = "success") -> list[tuple[str, str]]:
    fax = {"id": 70001, "direction": "sent", "status": status, "num_pages": 3}
    return [
        ("success", "true" if status == "success" else "false"),
        ("is_test", "false"),
        ("direction", "sent"),
        ("fax", json.dumps(fax)),
    ]


def test_a_correctly_signed_callback_verifies_and_parses() -> None:
    fields = callback_form()
    signature = sign(CALLBACK_URL, fields, [], TOKEN)

    assert verify_callback(CALLBACK_URL, dict(fields), {}, signature, TOKEN)
    fax_id, found = parse_callback(dict(fields))
    assert fax_id == "70001"
    assert (found.state, found.proof) == (DeliveryState.DELIVERED, ProofLevel.FAX_CONFIRMED)


def test_a_tampered_parameter_or_a_wrong_token_fails() -> None:
    fields = callback_form("failure")
    signature = sign(CALLBACK_URL, fields, [], TOKEN)
    tampered = {**dict(fields), "fax": json.dumps({"id": 70001, "status": "success"})}

    assert not verify_callback(CALLBACK_URL, tampered, {}, signature, TOKEN)
    assert not verify_callback(CALLBACK_URL, dict(fields), {}, signature, "other-token")
    assert not verify_callback(CALLBACK_URL.rstrip("/"), dict(fields), {}, signature, TOKEN)
    assert not verify_callback(CALLBACK_URL, dict(fields), {}, "", TOKEN)


def test_parameters_are_signed_in_name_order_whatever_order_they_came_in() -> None:
    fields = callback_form()
    signature = sign(CALLBACK_URL, fields, [], TOKEN)
    unsorted = "".join(name + value for name, value in fields)  # as received, not sorted
    assert sorted(fields) != fields

    assert verify_callback(CALLBACK_URL, dict(reversed(fields)), {}, signature, TOKEN)
    assert signature != sign(CALLBACK_URL + unsorted, [], [], TOKEN)


def test_file_parts_are_signed_by_name_and_sha1() -> None:
    fields = callback_form()
    files = [("filename", make_pdf(1))]
    signature = sign(CALLBACK_URL, fields, files, TOKEN)

    assert verify_callback(CALLBACK_URL, dict(fields), dict(files), signature, TOKEN)
    assert not verify_callback(CALLBACK_URL, dict(fields), {}, signature, TOKEN)
    assert not verify_callback(
        CALLBACK_URL, dict(fields), {"filename": make_pdf(2)}, signature, TOKEN
    )


def test_a_busy_failure_callback_is_deferred() -> None:
    fax = {"id": 70002, "status": "failure", "error_type": "lineError", "error_id": 17}
    fax_id, found = parse_callback({"direction": "sent", "fax": json.dumps(fax)})
    assert (fax_id, found.state) == ("70002", DeliveryState.DEFERRED)


@pytest.mark.parametrize(
    "form",
    [
        {},
        {"fax": "not json"},
        {"fax": json.dumps({"id": "x1", "status": "success"})},
        {"direction": "received", "fax": json.dumps({"id": 5, "status": "success"})},
    ],
)
def test_an_unreadable_callback_is_refused(form: dict[str, str]) -> None:
    with pytest.raises(CallbackError):
        parse_callback(form)
