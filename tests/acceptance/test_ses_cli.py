"""E-mail through Amazon SES and its events from SQS, as an operator runs them (moto server)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from tests.acceptance.conftest import FIXTURES, Operator
from tests.moto_server import moto_server

REGION = "eu-west-1"
DOC_MESSAGE_ID = "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"
DOC_DELIVERY = "dlv-00000000000000000000"


@pytest.fixture
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def ses_operator(operator: Operator, moto_url: str, tmp_path: Path) -> tuple[Operator, str, str]:
    """An operator whose settings send e-mail through SES, with events on an SQS queue."""
    credentials = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        operator.env.pop(key, None)
    operator.env.update(credentials)
    kwargs = {
        "region_name": REGION,
        "endpoint_url": moto_url,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    ses = boto3.client("sesv2", **kwargs)
    ses.create_email_identity(EmailIdentity="write4rights@example.org")
    sqs = boto3.client("sqs", **kwargs)
    queue_url = sqs.create_queue(QueueName="ses-events")["QueueUrl"]
    operator.env.update(
        SOLIDARITY_SES__REGION=REGION,
        SOLIDARITY_SES__ENDPOINT_URL=moto_url,
        SOLIDARITY_SES__CONFIGURATION_SET="solidarity",
        SOLIDARITY_SES__QUEUE_URL=queue_url,
        SOLIDARITY_RENDER__PROCESSES="1",
    )
    return operator, moto_url, queue_url


def _held_by_ses(moto_url: str) -> list[dict[str, object]]:
    with urllib.request.urlopen(f"{moto_url}/moto-api/data.json", timeout=10) as answer:  # noqa: S310
        return list(json.load(answer)["ses"]["RawMessage"])


def test_email_goes_through_ses_and_its_delivery_event_is_read_from_the_queue(
    ses_operator: tuple[Operator, str, str],
) -> None:
    operator, moto_url, queue_url = ses_operator
    operator("campaign", "load", "campaign.toml")
    operator("messages", "import", "messages.csv", "--source", "web")
    operator("review", "approve", "--all-clean")

    operator("worker", "--once", "--now")

    status = operator("status", "--json").json()
    assert status["deliveries"]["email"] == {"accepted": 2}
    held = _held_by_ses(moto_url)
    assert len(held) == 2
    assert {m["destinations"][0] for m in held} == {  # type: ignore[index]
        "office@prosecutor.example.gov",
        "family.arkhipov@example.net",
    }
    assert not list(operator.outbox.glob("email/**/*.eml"))  # sent, not spooled

    family = next(m for m in held if "family" in str(m["destinations"]))
    trace = operator("audit", "trace", "kr-0001", "--json").json()
    (delivery,) = [d for d in trace["deliveries"] if d["channel"] == "email"]
    record = (FIXTURES / "ses" / "delivery.json").read_text(encoding="utf-8")
    record = record.replace(DOC_MESSAGE_ID, str(family["id"])).replace(DOC_DELIVERY, delivery["id"])
    sqs = boto3.client(
        "sqs",
        region_name=REGION,
        endpoint_url=moto_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    sqs.send_message(QueueUrl=queue_url, MessageBody=record)

    tracked = operator("track", "ses", "--json").json()

    assert tracked["outcomes"] == {"delivered": 1}
    status = operator("status", "--recipient", "arkhipov-family", "--json").json()
    assert status["deliveries"]["email"] == {"delivered": 1}
    assert operator("audit", "verify", "--json").json()["ok"] is True
    assert operator("track", "ses", "--json").json()["read"] == 0  # the queue is empty
