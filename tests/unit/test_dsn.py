"""Bounce reports: what each kind of report says, how it maps, and what is kept of it."""

from __future__ import annotations

import email
import re
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from delivery.models import DeliveryState, ProofLevel
from delivery.tracking import (
    MAX_REPORT_BYTES,
    BounceReport,
    NotABounce,
    RecipientStatus,
    Unparseable,
    classify,
    outcome,
    scrub,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "dsn"
DOMAIN = "bounces.example.org"
ANY_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)*")
ENVELOPE_HEADERS = ("To", "Delivered-To", "X-Original-To", "Envelope-To", "Received")


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def read(raw: bytes) -> BounceReport | NotABounce | Unparseable:
    return classify(raw, bounce_domain=DOMAIN)


def report(raw: bytes) -> BounceReport:
    result = read(raw)
    assert isinstance(result, BounceReport), result
    return result


def refused(raw: bytes) -> str:
    result = read(raw)
    assert isinstance(result, Unparseable), result
    return result.reason


def without(raw: bytes, *names: str) -> bytes:
    """The message with the named top-level headers removed."""
    msg = email.message_from_bytes(raw, policy=policy.compat32)
    for name in names:
        del msg[name]
    return msg.as_bytes()


def dsn(
    *,
    blocks: str,
    headers: str = f"To: bounces+dlv-00000000000000000001@{DOMAIN}\n",
    returned: str = "",
    status_type: str = "message/delivery-status",
    report_type: str = "delivery-status",
    per_message: str = "",
) -> bytes:
    """A minimal RFC 3464 report around the given delivery-status blocks."""
    tail = f"--b\nContent-Type: text/rfc822-headers\n\n{returned}\n" if returned else ""
    return (
        "From: MAILER-DAEMON@mail.example.org\n"
        f"{headers}"
        "Subject: Undelivered Mail Returned to Sender\n"
        "Message-ID: <report-1@mail.example.org>\n"
        "MIME-Version: 1.0\n"
        f'Content-Type: multipart/report; report-type={report_type}; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nThe mail system\n\n"
        f"--b\nContent-Type: {status_type}\n\n"
        f"Reporting-MTA: dns; mail.example.org\n{per_message}\n"
        f"{blocks}\n"
        f"{tail}--b--\n"
    ).encode("utf-8", "surrogateescape")


FAILED = "Final-Recipient: rfc822; desk@ministry.example.net\nAction: failed\nStatus: 5.1.1\n"


# -- every fixture -------------------------------------------------------------------------

EXPECTED = [
    # file, delivery id, action, status, final recipient, standard
    (
        "postfix_user_unknown.eml",
        "dlv-3f9a1c7e52b04d8e61a7",
        "failed",
        "5.1.1",
        "registry@court.example.net",
        True,
    ),
    (
        "exim_mailbox_full.eml",
        "dlv-8b2e4d6f10a3c5e7092b",
        "failed",
        "5.2.2",
        "petitions@ministry.example.net",
        True,
    ),
    (
        "o365_recipient_not_found.eml",
        "dlv-c41d9e07ab6f3258e1d0",
        "failed",
        "5.1.10",
        "cabinet@ministry.example.net",
        True,
    ),
    (
        "gmail_dsn_failure.eml",
        "dlv-6a0f2d4c8e1b3a5c7d9e",
        "failed",
        "5.1.1",
        "office@embassy.example.net",
        True,
    ),
    (
        "qmail_bounce.eml",
        "dlv-5e7f90a1b2c3d4e5f607",
        "failed",
        "5.1.1",
        "governor@prison-service.example.net",
        False,
    ),
    (
        "exim_delay_warning.eml",
        "dlv-7c6b5a4f3e2d1c0b9a88",
        "delayed",
        "4.7.1",
        "desk@consulate.example.net",
        False,
    ),
    (
        "postfix_delayed.eml",
        "dlv-0a1b2c3d4e5f60718293",
        "delayed",
        "4.4.1",
        "chancery@tribunal.example.net",
        True,
    ),
    (
        "postfix_delivered.eml",
        "dlv-9d8c7b6a5f4e3d2c1b0a",
        "delivered",
        "2.0.0",
        "minister@justice.example.net",
        True,
    ),
    (
        "postfix_relayed.eml",
        "dlv-1f2e3d4c5b6a79880716",
        "relayed",
        "2.0.0",
        "clerk@parliament.example.net",
        True,
    ),
]
REPORTS = [row[0] for row in EXPECTED]
ALL_FIXTURES = sorted(path.name for path in FIXTURES.glob("*.eml"))


@pytest.mark.parametrize(
    ("name", "delivery_id", "action", "status", "recipient", "standard"), EXPECTED
)
def test_each_report_names_its_delivery_action_and_status(
    name: str, delivery_id: str, action: str, status: str, recipient: str, standard: bool
) -> None:
    found = report(fixture(name))
    assert found.delivery_id == delivery_id
    assert found.action == action
    assert found.status == status
    assert found.final_recipient == recipient
    assert found.standard is standard
    assert found.recipients[0].final_recipient == recipient
    assert found.source_id


def test_the_fields_of_a_postfix_report_are_as_reported() -> None:
    found = report(fixture("postfix_user_unknown.eml"))
    assert found.diagnostic.startswith("smtp; 550 5.1.1 <registry@court.example.net>")
    assert found.diagnostic.endswith("User unknown in virtual mailbox table")
    assert found.remote_mta == "mx1.court.example.net"
    assert found.reporting_mta == "mail.example.org"
    assert found.arrival == "Tue, 3 Dec 2024 10:15:40 +0000 (UTC)"
    assert found.source_id == "<20241203101542.4QZx7K1m2Bz9sQ@mail.example.org>"


def test_a_gmail_report_arrives_with_its_last_attempt_and_remote_server() -> None:
    found = report(fixture("gmail_dsn_failure.eml"))
    assert found.arrival == "Thu, 05 Dec 2024 02:14:17 -0800 (PST)"
    assert found.recipients[0].last_attempt == "Thu, 05 Dec 2024 02:14:19 -0800 (PST)"
    assert found.remote_mta.startswith("mx.embassy.example.net.")


def test_a_qmail_bounce_is_read_from_its_wording() -> None:
    found = report(fixture("qmail_bounce.eml"))
    assert found.remote_mta == "203.0.113.25"
    assert "Recipient address rejected" in found.diagnostic
    assert found.source_id.startswith("sha256:")  # qmail gave it no Message-ID
    assert found.arrival == ""  # and no arrival date


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("out_of_office.eml", "auto-reply (Auto-Submitted: auto-replied)"),
        ("abwesenheitsnotiz.eml", "out-of-office (by its subject)"),
    ],
)
def test_auto_replies_are_not_bounces(name: str, reason: str) -> None:
    assert read(fixture(name)) == NotABounce(reason=reason)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("truncated.eml", "no per-recipient block"),
        ("garbage.eml", "neither a delivery report nor an auto-reply"),
    ],
)
def test_broken_input_is_unparseable(name: str, reason: str) -> None:
    assert reason in refused(fixture(name))


def test_every_fixture_has_an_expectation() -> None:
    covered = {
        *REPORTS,
        "out_of_office.eml",
        "abwesenheitsnotiz.eml",
        "truncated.eml",
        "garbage.eml",
    }
    assert set(ALL_FIXTURES) == covered


# -- where the delivery id comes from ------------------------------------------------------


def test_without_the_envelope_the_returned_message_id_names_the_delivery() -> None:
    raw = without(fixture("postfix_user_unknown.eml"), *ENVELOPE_HEADERS)
    assert report(raw).delivery_id == "dlv-3f9a1c7e52b04d8e61a7"


def test_the_part_number_of_a_split_delivery_is_dropped() -> None:
    raw = without(fixture("o365_recipient_not_found.eml"), *ENVELOPE_HEADERS)
    assert report(raw).delivery_id == "dlv-c41d9e07ab6f3258e1d0"


def test_an_attached_original_names_the_delivery() -> None:
    raw = without(fixture("exim_mailbox_full.eml"), *ENVELOPE_HEADERS)
    assert report(raw).delivery_id == "dlv-8b2e4d6f10a3c5e7092b"


def test_x_original_message_id_is_the_next_source() -> None:
    raw = dsn(
        headers="",
        per_message=f"X-Original-Message-ID: <dlv-0123456789abcdef0123@{DOMAIN}>\n",
        blocks=FAILED,
    )
    assert report(raw).delivery_id == "dlv-0123456789abcdef0123"


@pytest.mark.parametrize("header", ["In-Reply-To", "References"])
def test_in_reply_to_and_references_are_the_last_sources(header: str) -> None:
    raw = dsn(
        headers=f"{header}: <other@example.net> <dlv-0123456789abcdef0123.3@{DOMAIN}>\n",
        blocks=FAILED,
    )
    assert report(raw).delivery_id == "dlv-0123456789abcdef0123"


def test_the_envelope_wins_over_referring_headers() -> None:
    raw = dsn(
        headers=(
            f"To: bounces+dlv-aaaaaaaaaaaaaaaaaaaa@{DOMAIN}\n"
            f"In-Reply-To: <dlv-bbbbbbbbbbbbbbbbbbbb@{DOMAIN}>\n"
        ),
        blocks=FAILED,
    )
    assert report(raw).delivery_id == "dlv-aaaaaaaaaaaaaaaaaaaa"


def test_an_envelope_and_returned_message_that_disagree_are_not_guessed() -> None:
    raw = dsn(
        headers=f"To: bounces+dlv-aaaaaaaaaaaaaaaaaaaa@{DOMAIN}\n",
        blocks=FAILED,
        returned=f"Message-ID: <dlv-bbbbbbbbbbbbbbbbbbbb@{DOMAIN}>\n",
    )
    assert "dlv-bbbbbbbbbbbbbbbbbbbb" in refused(raw)


@pytest.mark.parametrize(
    "header",
    [
        "To: bounces+dlv-aaaaaaaaaaaaaaaaaaaa@bounces.example.net\n",
        f"To: bounces+dlv-aaaaaaaaaaaaaaaaaaaa@{DOMAIN}.example.net\n",
        f"To: bounces+dlv-aaaa@{DOMAIN}\n",
        f"In-Reply-To: <dlv-aaaaaaaaaaaaaaaaaaaa@mail.{DOMAIN}>\n",
    ],
)
def test_ids_outside_our_bounce_domain_or_shape_do_not_count(header: str) -> None:
    assert report(dsn(headers=header, blocks=FAILED)).delivery_id is None


def test_a_plain_bounce_without_envelope_finds_the_id_in_the_copy() -> None:
    raw = without(fixture("qmail_bounce.eml"), *ENVELOPE_HEADERS)
    assert report(raw).delivery_id == "dlv-5e7f90a1b2c3d4e5f607"


def test_a_plain_bounce_naming_no_delivery_is_unparseable() -> None:
    raw = without(fixture("qmail_bounce.eml"), *ENVELOPE_HEADERS)
    raw = raw.replace(b"dlv-5e7f90a1b2c3d4e5f607", b"someone-else")
    assert "names none of our deliveries" in refused(raw)


def test_a_plain_bounce_without_a_clear_status_is_unparseable() -> None:
    raw = fixture("qmail_bounce.eml")
    raw = raw.replace(b"Remote host said: 550 5.1.1", b"Remote host said: no")
    assert "clear 4xx or 5xx status" in refused(raw)


def test_a_plain_bounce_with_only_a_reply_code_gets_its_class() -> None:
    raw = fixture("qmail_bounce.eml").replace(b"550 5.1.1", b"550 no such user")
    found = report(raw)
    assert (found.action, found.status) == ("failed", "5.0.0")


# -- what the delivery-status part must hold -----------------------------------------------


@pytest.mark.parametrize(
    ("blocks", "reason"),
    [
        (FAILED.replace("failed", "exploded"), "'exploded' is not one RFC 3464 defines"),
        (FAILED.replace("5.1.1", "5.1"), "'5.1' is not a status code"),
        (FAILED.replace("5.1.1", "2.0.0"), "Action failed cannot have Status 2.0.0"),
        (FAILED.replace("failed", "delivered"), "Action delivered cannot have Status 5.1.1"),
        (FAILED.replace("failed", "delayed"), "Action delayed cannot have Status 5.1.1"),
        ("Action: failed\nStatus: 5.1.1\n", "no Final-Recipient"),
        ("X-Something: else\n", "no per-recipient block"),
    ],
)
def test_a_report_that_breaks_rfc_3464_is_not_guessed(blocks: str, reason: str) -> None:
    assert reason in refused(dsn(blocks=blocks))


def test_a_report_without_its_status_part_is_unparseable() -> None:
    raw = dsn(blocks=FAILED, status_type="text/plain")
    assert "without its message/delivery-status part" in refused(raw)


def test_a_read_receipt_is_left_to_a_person() -> None:
    raw = dsn(
        blocks=FAILED,
        status_type="message/disposition-notification",
        report_type="disposition-notification",
    )
    assert "disposition-notification" in refused(raw)


def test_several_recipients_use_the_first_and_keep_all() -> None:
    second = (
        FAILED.replace("desk@", "deputy@").replace("failed", "delayed").replace("5.1.1", "4.2.2")
    )
    found = report(dsn(blocks=f"{FAILED}\n{second}"))
    assert (found.final_recipient, found.action) == ("desk@ministry.example.net", "failed")
    assert [r.final_recipient for r in found.recipients] == [
        "desk@ministry.example.net",
        "deputy@ministry.example.net",
    ]
    assert found.recipients[1].status == "4.2.2"


def test_a_bad_second_block_makes_the_report_unparseable() -> None:
    assert "recipient block 2" in refused(dsn(blocks=f"{FAILED}\nAction: failed\n"))


def test_an_rfc_6533_global_report_is_read() -> None:
    raw = dsn(blocks=FAILED.replace("desk@", "büro@"), status_type="message/global-delivery-status")
    found = report(raw)
    assert found.final_recipient == "büro@ministry.example.net"
    assert found.status == "5.1.1"


def test_field_names_are_read_in_any_case() -> None:
    blocks = "final-recipient: RFC822; desk@ministry.example.net\nACTION: Failed\nstatus: 5.1.1\n"
    found = report(dsn(blocks=blocks))
    assert (found.action, found.status) == ("failed", "5.1.1")


# -- auto-replies --------------------------------------------------------------------------

HUMAN = (
    "From: Desk <desk@ministry.example.net>\n"
    f"To: bounces+dlv-aaaaaaaaaaaaaaaaaaaa@{DOMAIN}\n"
    "Subject: {subject}\n"
    "{extra}"
    "\nThank you for your letters.\n"
)


@pytest.mark.parametrize(
    ("subject", "extra", "reason"),
    [
        ("Re: letters", "Auto-Submitted: auto-generated\n", "Auto-Submitted: auto-generated"),
        ("Re: letters", "X-Autoreply: yes\n", "X-Autoreply"),
        ("Re: letters", "Precedence: auto_reply\n", "Precedence: auto_reply"),
        ("Out of Office: letters", "", "out-of-office"),
        ("Automatic reply: letters", "", "out-of-office"),
        ("Réponse automatique : lettres", "", "out-of-office"),
    ],
)
def test_auto_replies_are_recognised(subject: str, extra: str, reason: str) -> None:
    result = read(HUMAN.format(subject=subject, extra=extra).encode())
    assert isinstance(result, NotABounce)
    assert reason in result.reason


def test_a_person_writing_back_is_left_to_a_person() -> None:
    raw = HUMAN.format(subject="Re: letters", extra="Auto-Submitted: no\n").encode()
    assert "neither a delivery report nor an auto-reply" in refused(raw)


def test_a_bounce_marked_auto_replied_is_still_a_bounce() -> None:
    # Postfix and Exim mark their bounces Auto-Submitted: auto-replied.
    assert isinstance(read(fixture("postfix_user_unknown.eml")), BounceReport)
    assert isinstance(read(fixture("exim_delay_warning.eml")), BounceReport)


# -- hostile input -------------------------------------------------------------------------


def test_a_report_too_large_to_read_is_unparseable() -> None:
    assert "more than the" in refused(b"x" * (MAX_REPORT_BYTES + 1))


def test_empty_input_is_unparseable() -> None:
    refused(b"")


def test_huge_headers_do_not_stop_the_reader() -> None:
    raw = fixture("postfix_user_unknown.eml")
    raw = b"X-Junk: " + b"a" * 2_000_000 + b"\n" + b"X-Many: b\n" * 50_000 + raw
    assert report(raw).delivery_id == "dlv-3f9a1c7e52b04d8e61a7"


def test_deep_nesting_does_not_stop_the_reader() -> None:
    depth = 3000
    opening = "".join(
        f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n' for i in range(depth)
    )
    assert isinstance(read(opening.encode()), Unparseable)


@pytest.mark.parametrize("charset", ["x-unknown", "rot13", "base64", "utf-16", "unknown-8bit"])
def test_odd_charsets_do_not_stop_the_reader(charset: str) -> None:
    raw = fixture("qmail_bounce.eml").replace(
        b"Subject: failure notice",
        f"Subject: failure notice\nContent-Type: text/plain; charset={charset}".encode(),
    )
    assert isinstance(read(raw), BounceReport | Unparseable)


def test_raw_8bit_and_bad_encoded_words_do_not_stop_the_reader() -> None:
    raw = dsn(
        headers=(
            "To: =?utf-8?B?!!!?= =?x-none?Q?=FF?= \xff\xfe\n".encode("latin-1").decode("latin-1")
        ),
        blocks=FAILED.replace("desk@", "d\udcffsk@"),
    )
    assert isinstance(read(raw), BounceReport | Unparseable)


def test_an_unusable_bounce_domain_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="not a mail domain"):
        classify(b"", bounce_domain=" ")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4000))
def test_classify_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    assert isinstance(read(raw), BounceReport | NotABounce | Unparseable)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(ALL_FIXTURES),
    st.integers(min_value=0, max_value=20_000),
    st.lists(st.tuples(st.integers(min_value=0, max_value=20_000), st.binary(max_size=8))),
)
def test_classify_never_raises_on_damaged_reports(
    name: str, cut: int, patches: list[tuple[int, bytes]]
) -> None:
    raw = bytearray(fixture(name)[:cut] if cut else fixture(name))
    for at, data in patches:
        raw[at : at + len(data)] = data
    assert isinstance(read(bytes(raw)), BounceReport | NotABounce | Unparseable)


# -- outcome -------------------------------------------------------------------------------


def made(action: str, status: str) -> BounceReport:
    found = report(dsn(blocks=FAILED.replace("failed", action).replace("5.1.1", status)))
    assert (found.action, found.status) == (action, status)
    return found


@pytest.mark.parametrize(
    ("action", "status", "expected"),
    [
        ("failed", "5.1.1", (DeliveryState.BOUNCED, ProofLevel.NONE)),
        ("failed", "4.4.7", (None, ProofLevel.NONE)),
        ("delayed", "4.4.1", (None, ProofLevel.NONE)),
        ("delivered", "2.0.0", (DeliveryState.DELIVERED, ProofLevel.MTA_ACCEPTED)),
        ("expanded", "2.0.0", (DeliveryState.DELIVERED, ProofLevel.MTA_ACCEPTED)),
        ("relayed", "2.0.0", (DeliveryState.ACCEPTED, ProofLevel.MTA_ACCEPTED)),
    ],
)
def test_outcome_maps_each_action(
    action: str, status: str, expected: tuple[DeliveryState | None, ProofLevel]
) -> None:
    assert outcome(made(action, status)) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("postfix_user_unknown.eml", (DeliveryState.BOUNCED, ProofLevel.NONE)),
        ("qmail_bounce.eml", (DeliveryState.BOUNCED, ProofLevel.NONE)),
        ("postfix_delayed.eml", (None, ProofLevel.NONE)),
        ("exim_delay_warning.eml", (None, ProofLevel.NONE)),
        ("postfix_delivered.eml", (DeliveryState.DELIVERED, ProofLevel.MTA_ACCEPTED)),
        ("postfix_relayed.eml", (DeliveryState.ACCEPTED, ProofLevel.MTA_ACCEPTED)),
    ],
)
def test_outcome_of_the_fixtures(
    name: str, expected: tuple[DeliveryState | None, ProofLevel]
) -> None:
    assert outcome(report(fixture(name))) == expected


def test_a_recipient_status_is_kept_whole() -> None:
    found = report(fixture("postfix_user_unknown.eml"))
    assert found.recipients == (
        RecipientStatus(
            final_recipient="registry@court.example.net",
            original_recipient="registry@court.example.net",
            action="failed",
            status="5.1.1",
            diagnostic=found.diagnostic,
            remote_mta="mx1.court.example.net",
            last_attempt="",
        ),
    )


# -- scrub ---------------------------------------------------------------------------------


def everything_readable(raw: bytes) -> str:
    """Every header and decoded body of every part, as one text."""
    msg = email.message_from_bytes(raw, policy=policy.compat32)
    chunks: list[str] = []
    for part in msg.walk():
        for _, value in part.raw_items():
            chunks.append(str(value))
            chunks.append(str(make_header(decode_header(str(value)))))
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            chunks.append(payload.decode("utf-8", "replace"))
            chunks.append(payload.decode("latin-1"))
        chunks.extend(p for p in (part.preamble, part.epilogue) if p)
    return "\n".join(chunks)


def foreign(text: str) -> set[str]:
    return {a for a in ANY_ADDRESS.findall(text) if not a.lower().endswith("@" + DOMAIN)}


def parses(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            part.get_content()
    assert msg.as_bytes()
    return msg


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_scrub_removes_every_address_but_ours_and_still_parses(name: str) -> None:
    raw = fixture(name)
    clean = scrub(raw, [DOMAIN])
    if name != "garbage.eml":
        assert foreign(everything_readable(raw)), "the fixture should carry addresses"
    assert foreign(everything_readable(clean)) == set()
    assert foreign(clean.decode("latin-1")) == set()
    parses(clean)


@pytest.mark.parametrize("name", [row[0] for row in EXPECTED if row[5]])
def test_a_scrubbed_standard_report_still_reads_the_same(name: str) -> None:
    before = report(fixture(name))
    after = report(scrub(fixture(name), ["@" + DOMAIN]))
    assert (after.delivery_id, after.action, after.status) == (
        before.delivery_id,
        before.action,
        before.status,
    )
    assert after.final_recipient in ("<redacted>", "")


def test_scrub_keeps_the_bounce_addresses_and_named_addresses() -> None:
    clean = scrub(fixture("postfix_user_unknown.eml"), [DOMAIN, "Write4Rights@example.org"])
    text = clean.decode()
    assert f"bounces+dlv-3f9a1c7e52b04d8e61a7@{DOMAIN}" in text
    assert f"<dlv-3f9a1c7e52b04d8e61a7@{DOMAIN}>" in text
    assert "write4rights@example.org" in text
    assert "casework@example.org" not in text
    assert "Final-Recipient: rfc822; <redacted>" in text


def test_scrub_replaces_binary_parts_with_a_note() -> None:
    clean = scrub(fixture("exim_mailbox_full.eml"), [DOMAIN])
    msg = parses(clean)
    types = [part.get_content_type() for part in msg.walk()]
    assert "application/pdf" not in types
    assert b"[a application/pdf part of" in clean
    assert b"lena-marchetti-letters.pdf" not in clean


def test_scrub_reaches_into_base64_and_quoted_printable() -> None:
    raw = fixture("o365_recipient_not_found.eml")
    assert b"cabinet@ministry.example.net" not in scrub(raw, [DOMAIN]).replace(b"=\n", b"")
    html = [p for p in parses(scrub(raw, [DOMAIN])).walk() if p.get_content_type() == "text/html"]
    assert "<redacted>" in html[0].get_content()


def test_scrub_reaches_into_encoded_words() -> None:
    word = "=?utf-8?B?TWlyYSA8bWlyYUBleGFtcGxlLm5ldD4=?="  # "Mira <mira@example.net>"
    raw = f"From: {word} <x@example.org>\nSubject: hi\n\nbody\n".encode()
    clean = scrub(raw, [DOMAIN])
    assert foreign(everything_readable(clean)) == set()


def test_scrub_keeps_crlf_line_ends() -> None:
    raw = fixture("postfix_delayed.eml").replace(b"\n", b"\r\n")
    clean = scrub(raw, [DOMAIN])
    assert b"\r\n" in clean
    assert b"\n" not in clean.replace(b"\r\n", b"")
    assert report(clean).action == "delayed"


def test_scrub_catches_quoted_and_8bit_addresses() -> None:
    text = 'Subject: x\n\n"Mira Castellan"@example.net and b\xfcro@justiz.example.net\n'
    raw = text.encode("latin-1")
    clean = scrub(raw, [DOMAIN])
    assert b"example.net" not in clean
    assert clean.count(b"<redacted>") == 2


def test_scrub_leaves_other_bytes_of_an_8bit_part_alone() -> None:
    raw = (
        "Subject: x\nMIME-Version: 1.0\nContent-Type: text/plain; charset=iso-8859-1\n"
        "Content-Transfer-Encoding: 8bit\n\nGrüße an jane@example.net, Büro\n"
    ).encode("latin-1")
    assert scrub(raw, [DOMAIN]).endswith("Grüße an <redacted>, Büro\n".encode("latin-1"))


def test_scrub_of_a_structure_too_deep_to_walk_still_scrubs() -> None:
    opening = "".join(
        f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n' for i in range(3000)
    )
    clean = scrub(f"{opening}\njane@example.net\n".encode(), [DOMAIN])
    assert b"jane@example.net" not in clean
    assert b"<redacted>" in clean


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=3000))
def test_scrub_never_raises_and_its_output_parses(raw: bytes) -> None:
    clean = scrub(raw, [DOMAIN])
    email.message_from_bytes(clean, policy=policy.compat32)
