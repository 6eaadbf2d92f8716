"""Deliveries that did not arrive: a person decides, or the case's policy falls back at once."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.acceptance.conftest import Operator


class RefusingServer:
    """Accepts mail for every domain but one, which it refuses for good (550)."""

    def __init__(self, refused_domain: str) -> None:
        self.refused_domain = refused_domain
        self.accepted: list[str] = []

    async def handle_RCPT(  # noqa: N802 -- aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address.endswith("@" + self.refused_domain):
            return "550 5.1.1 <" + address + ">: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.accepted.extend(envelope.rcpt_tos)
        return "250 2.0.0 Ok: queued"


@pytest.fixture
def refusing(operator: Operator) -> Iterator[RefusingServer]:
    handler = RefusingServer("prosecutor.example.gov")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    operator.env.update(
        SOLIDARITY_SMTP__HOST="127.0.0.1",
        SOLIDARITY_SMTP__PORT=str(port),
        SOLIDARITY_SMTP__SECURITY="none",
        SOLIDARITY_RENDER__PROCESSES="1",
    )
    try:
        yield handler
    finally:
        controller.stop()


def _prepare(operator: Operator) -> None:
    operator("campaign", "load", "campaign.toml")
    operator("messages", "import", "messages.csv", "--source", "web")
    operator("review", "approve", "--all-clean")


def _by_channel(operator: Operator) -> dict[str, dict[str, int]]:
    status = operator("status", "--recipient", "ru-prosecutor-general", "--json").json()
    return {c: dict(states) for c, states in status["deliveries"].items() if states}


def test_a_refused_email_waits_for_a_person_who_sends_it_by_fax(
    operator: Operator, refusing: RefusingServer
) -> None:
    _prepare(operator)
    operator("worker", "--once", "--now", check=1)  # one delivery failed: exit 1

    waiting = operator("review", "deliveries", "--json").json()
    assert [(w["recipient"], w["channel"], w["state"], w["fallback"]) for w in waiting] == [
        ("ru-prosecutor-general", "email", "failed", "fax")
    ]
    assert "550 5.1.1" in waiting[0]["reason"]
    assert "family.arkhipov@example.net" in refusing.accepted  # the others went through

    listed = operator("review", "deliveries").out
    assert waiting[0]["delivery"] in listed
    assert "fallback: fax" in listed

    done = operator(
        "review", "deliveries", "fallback", waiting[0]["delivery"], "--reason", "mailbox closed"
    )
    assert "queued again as dlv-" in done.out
    new_id = done.out.split("queued again as ")[1].split(";")[0]
    assert operator("review", "deliveries", "--json").json() == []

    operator("worker", "--once")
    assert _by_channel(operator) == {"email": {"failed": 1}, "fax": {"spooled": 1}}
    assert (operator.outbox / "fax" / f"{new_id}.pdf").read_bytes().startswith(b"%PDF-")
    assert operator("audit", "verify", "--json").json()["ok"] is True


def test_a_case_that_allows_it_falls_back_in_the_same_run(
    operator: Operator, refusing: RefusingServer
) -> None:
    campaign = operator.folder / "campaign.toml"
    text = campaign.read_text(encoding="utf-8")
    campaign.write_text(
        text.replace('danger_words = ["escape"', 'fallback = "auto"\ndanger_words = ["escape"', 1),
        encoding="utf-8",
    )
    _prepare(operator)

    operator("worker", "--once", "--now", check=1)  # one delivery failed: exit 1

    assert _by_channel(operator) == {"email": {"failed": 1}, "fax": {"spooled": 1}}
    assert operator("review", "deliveries", "--json").json() == []
    trace_events = operator("audit", "verify", "--json").json()
    assert trace_events["ok"] is True


def test_decisions_only_apply_where_they_make_sense(
    operator: Operator, refusing: RefusingServer
) -> None:
    _prepare(operator)
    operator("worker", "--once", "--now", check=1)  # one delivery failed: exit 1
    failed = operator("review", "deliveries", "--json").json()[0]["delivery"]

    resend = operator("review", "deliveries", "resend", failed, "--reason", "x", check=2)
    assert "not unknown" in resend.err or "cannot move" in resend.err
    settle = operator(
        "review", "deliveries", "settle", failed, "--as", "delivered", "--reason", "x", check=2
    )
    assert "only unknown ones" in settle.err

    operator("review", "deliveries", "close", failed, "--reason", "office closed down")
    assert operator("review", "deliveries", "--json").json() == []
    again = operator("review", "deliveries", "close", failed, "--reason", "twice", check=2)
    assert "nothing to decide" in again.err or "already decided" in again.err
