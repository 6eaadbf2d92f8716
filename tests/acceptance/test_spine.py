"""The spine end to end: load, import, review, worker, status, audit — as an operator runs it."""

from __future__ import annotations

import csv
import email
import email.policy
import io
import sqlite3
import subprocess
from pathlib import Path

import pytest
from pypdf import PdfReader

from tests.acceptance.conftest import Operator

HEADER = (
    "external_id,case,to,supporter_name,supporter_email,supporter_city,"
    "supporter_country,language,kind,body,submitted_at,event"
)
V = "viktor-arkhipov"
WHEN = "2026-12-10T10:00:00Z"


def _row(
    ext: str,
    to: str,
    name: str,
    country: str,
    lang: str,
    kind: str,
    body: str,
    *,
    case: str = V,
    mail: str = "",
    city: str = "",
    when: str = WHEN,
) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(
        [ext, case, to, name, mail, city, country, lang, kind, body, when, ""]
    )
    return out.getvalue()


GOOD = [
    _row("t-ar", "authority", "سلمى حداد", "EG", "ar", "letter", "نطالب بالإفراج الفوري عن فيكتور"),
    _row("t-he", "authority", "נועה לוי", "IL", "he", "letter", "אנו קוראים לשחרר את ויקטור מיד"),
    _row("t-zh", "authority", "王芳", "CN", "zh", "letter", "我们呼吁立即释放维克多"),
    _row(
        "t-hi",
        "authority",
        "अनीता शर्मा",
        "IN",
        "hi",
        "letter",
        "हम विक्टर की तत्काल रिहाई की मांग करते हैं",
    ),
    _row(
        "t-emoji",
        "family",
        "Ana Souza",
        "BR",
        "pt",
        "letter",
        "Força, família! 💪🌻",
        city="Recife",
    ),
    _row(
        "t-tmpl", "authority", "Jan Novak", "CZ", "cs", "letter", "Result: {{ 7*7 }} and {% raw %}"
    ),
    _row(
        "t-html",
        "authority",
        "Eve Martin",
        "FR",
        "fr",
        "letter",
        '<img src="file:///etc/passwd"><script>x()</script>',
    ),
    _row("t-bidi", "authority", "Mallory\u202eevil", "GB", "en", "letter", "Please release him."),
    _row("t-sig", "authority", "Jonas Weber", "DE", "de", "signature", ""),
]
BAD = [
    (_row("b-case", "authority", "A B", "PL", "pl", "letter", "x", case="no-such-case"), "case"),
    (_row("b-to", "nobody", "A B", "PL", "pl", "letter", "x"), "to"),
    (_row("b-kind", "authority", "A B", "PL", "pl", "carrier-pigeon", "x"), "kind"),
    (_row("b-body", "authority", "A B", "PL", "pl", "letter", ""), "body"),
    (_row("b-long", "authority", "A B", "PL", "pl", "letter", "x" * 20_001), "body"),
    (_row("b-country", "authority", "A B", "XX", "pl", "letter", "x"), "supporter_country"),
    (
        _row("b-mail", "authority", "A B", "PL", "pl", "letter", "x", mail="not-an-address"),
        "supporter_email",
    ),
    (
        _row("b-date", "authority", "A B", "PL", "pl", "letter", "x", when="yesterday"),
        "submitted_at",
    ),
    (_row("b-nul", "authority", "A\x00B", "PL", "pl", "letter", "x"), "supporter_name"),
]


def _tricky_file(path: Path) -> dict[str, int]:
    """Good and bad rows, and one row of bytes that are not UTF-8; returns bad lines by id."""
    lines = [HEADER + "\n"]
    bad_lines: dict[str, int] = {}
    for row in GOOD:
        lines.append(row)
    for row, _field in BAD:
        bad_lines[row.split(",", 1)[0]] = len(lines) + 1
        lines.append(row)
    data = "".join(lines).encode("utf-8")
    bad_lines["b-utf8"] = len(lines) + 1
    data += (
        b"b-utf8,viktor-arkhipov,authority,Bad \xff\xfe Bytes,,,PL,pl,letter,x,"
        + WHEN.encode()
        + b",\n"
    )
    data += _row("t-after", "prison", "Zofia Nowak", "PL", "pl", "letter", "Trzymaj się!").encode()
    path.write_bytes(data)
    return bad_lines


def _pdf_text(path: Path) -> str:
    done = subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], capture_output=True, check=True, text=True
    )
    return done.stdout


def test_an_operator_chains_the_commands(operator: Operator) -> None:
    loaded = operator("campaign", "load", "campaign.toml", "--json").json()
    assert (loaded["cases"], loaded["recipients"], loaded["cases_added"]) == (2, 4, 2)
    again = operator("campaign", "load", "campaign.toml", "--json").json()
    assert (again["cases_added"], again["cases_updated"], again["recipients_added"]) == (0, 2, 0)

    sample = operator("messages", "import", "messages.csv", "--source", "web", "--json").json()
    assert (sample["imported"], sample["duplicates"], sample["rejected"]) == (5, 0, [])
    repeat = operator("messages", "import", "messages.csv", "--source", "web", "--json").json()
    assert (repeat["imported"], repeat["duplicates"]) == (0, 5)

    bad_lines = _tricky_file(operator.folder / "tricky.csv")
    result = operator("messages", "import", "tricky.csv", "--source", "forms", "--json", check=2)
    report = result.json()
    assert report["imported"] == len(GOOD) + 1  # the row after the broken bytes still imports
    rejected = {(r["line"], r["field"]) for r in report["rejected"]}
    expected = {(bad_lines[row.split(",", 1)[0]], field) for row, field in BAD}
    assert expected <= rejected
    assert any(
        line == bad_lines["b-utf8"] and "UTF-8" in r["reason"]
        for r in report["rejected"]
        for line in [r["line"]]
    )
    assert len(report["rejected"]) == len(BAD) + 1
    rejects_file = Path(report["rejects_file"])
    assert rejects_file.is_file()
    assert rejects_file.is_relative_to(operator.outbox)
    with rejects_file.open(encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == len(BAD) + 1

    flagged = operator("review", "list", "--flagged", "--json").json()
    by_ext = {item["external_id"]: item for item in flagged}
    assert any("bidi-control" in f for f in by_ext["t-bidi"]["flags"])

    approved = operator("review", "approve", "--all-clean", "--json").json()
    assert approved["approved"] > 0
    assert any("link" in f for f in by_ext["t-html"]["flags"])
    held = operator(
        "review", "hold", "--rule", "link", "--reason", "check the link", "--json"
    ).json()
    assert held == {"held": 1}
    assert [h["external_id"] for h in operator("review", "list", "--held", "--json").json()] == [
        "t-html"
    ]
    unknown = operator("review", "reject", "--rule", "no-such-rule", "--reason", "x", check=2)
    assert "not a screening rule" in unknown.err
    operator("review", "approve", "t-bidi", "t-html")
    operator("review", "reject", "pl-0002", "--reason", "names the co-defendant")
    waiting = operator("review", "list", "--json").json()
    assert [w["external_id"] for w in waiting] == []

    run = operator("worker", "--once", "--now", "--json").json()
    assert run["bundles_rendered"] == 4
    assert run["bundles_failed"] == 0
    _check_outbox(operator)

    status = operator("status", "--json").json()
    assert status["messages"]["rejected"] == 1
    assert status["messages"]["pending"] == 0
    assert status["bundles"] == 4
    assert status["deliveries"] == {
        "email": {"spooled": 2},
        "fax": {"spooled": 1},
        "post": {"spooled": 1},
    }

    rerun = operator("worker", "--once", "--now", "--json").json()
    assert rerun["bundles_planned"] == 0
    assert rerun["deliveries"] == {}
    assert operator("status", "--json").json()["deliveries"] == status["deliveries"]

    verified = operator("audit", "verify", "--json").json()
    assert verified["ok"] is True
    assert verified["problems"] == []

    trace = operator("audit", "trace", "t-tmpl", "--json").json()
    kinds = [e["kind"] for e in trace["events"]]
    assert kinds[:2] == ["review.waiting", "review.approved"]
    assert {
        "bundle.planned",
        "bundle.rendered",
        "delivery.queued",
        "delivery.sending",
        "delivery.spooled",
    } <= set(kinds)
    assert trace["bundles"][0]["pdf_sha256"]
    assert trace["deliveries"][0]["state"] == "spooled"
    text = operator("audit", "trace", "t-tmpl").out
    assert "delivery.spooled" in text
    assert trace["bundles"][0]["id"] in text


def _check_outbox(operator: Operator) -> None:
    outbox = operator.outbox
    authority = next((outbox / "bundles" / V / "ru-prosecutor-general").glob("*.pdf"))
    text = _pdf_text(authority)
    flat = " ".join(text.split())
    assert "Result: {{ 7*7 }}" in flat
    assert "Result: 49" not in flat  # bundle ids are random hex, so look at the sentence
    assert '<img src="file:///etc/passwd">' in flat
    for snippet in ("我们呼吁立即释放维克多", "Szanowny Panie Prokuratorze", "Jonas Weber"):
        assert snippet in flat
    pages = len(PdfReader(authority).pages)
    assert f"Page 1 of {pages}" in flat
    assert f"Page {pages} of {pages}" in flat

    prison = next((outbox / "bundles" / V / "arkhipov-detention-centre").glob("*.pdf"))
    prison_text = " ".join(_pdf_text(prison).split())
    assert "Zofia" in prison_text
    assert "Nowak" not in prison_text
    assert "A-1047" in prison_text

    (eml_path,) = (outbox / "email" / V / "ru-prosecutor-general").glob("*.eml")
    message = email.message_from_bytes(eml_path.read_bytes(), policy=email.policy.default)
    assert sorted(message.keys()) == sorted(
        ["From", "To", "Reply-To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"]
    )
    assert message["To"] == "Prosecutor General <office@prosecutor.example.gov>"
    assert message["Message-ID"] == f"<{eml_path.stem}@bounces.example.org>"
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == authority.read_bytes()

    (job,) = (outbox / "fax").glob("*.job.json")
    assert '"to": "+50422201234"' in job.read_text()
    (manifest,) = (outbox / "post").glob("*/manifest.csv")
    rows = list(csv.DictReader(manifest.read_text(encoding="utf-8-sig").splitlines()))
    assert [r["recipient"] for r in rows] == ["arkhipov-detention-centre"]


def _approve_and_run(operator: Operator) -> None:
    operator("campaign", "load", "campaign.toml")
    operator("messages", "import", "messages.csv", "--source", "web")
    operator("review", "approve", "--all-clean")
    operator("worker", "--once", "--now")


def test_a_changed_ledger_row_fails_verification(operator: Operator) -> None:
    _approve_and_run(operator)
    with sqlite3.connect(operator.outbox / "solidarity.db") as db:
        db.execute("UPDATE ledger SET payload = replace(payload, 'web', 'forged') WHERE seq = 2")
    result = operator("audit", "verify", check=1)
    assert "event 2: content altered" in result.out


def test_a_changed_delivery_state_fails_verification(operator: Operator) -> None:
    _approve_and_run(operator)
    with sqlite3.connect(operator.outbox / "solidarity.db") as db:
        db.execute("UPDATE deliveries SET state = 'delivered' WHERE channel = 'fax'")
    result = operator("audit", "verify", check=1)
    assert "table says delivered, ledger says spooled" in result.out


@pytest.mark.parametrize("change", ["replace", "remove"])
def test_a_replaced_or_removed_pdf_fails_verification(operator: Operator, change: str) -> None:
    _approve_and_run(operator)
    pdf = next((operator.outbox / "bundles").rglob("*.pdf"))
    if change == "replace":
        pdf.write_bytes(b"%PDF-1.7 forged")
    else:
        pdf.unlink()
    result = operator("audit", "verify", check=1)
    word = "was changed" if change == "replace" else "is missing"
    assert f"file {pdf.relative_to(operator.outbox).as_posix()} {word}" in result.out


def test_hold_stops_a_recipient_and_release_resumes_it(operator: Operator) -> None:
    operator("campaign", "load", "campaign.toml")
    operator("messages", "import", "messages.csv", "--source", "web")
    operator("review", "approve", "--all-clean")
    held = operator(
        "hold", "--case", V, "--recipient", "arkhipov-detention-centre", "--reason", "freed"
    )
    assert "held" in held.out
    operator("worker", "--once", "--now")
    prison = operator(
        "status", "--case", V, "--recipient", "arkhipov-detention-centre", "--json"
    ).json()
    assert prison["bundles"] == 0
    assert prison["deliveries"]["post"] == {}
    others = operator("status", "--json").json()
    assert others["deliveries"]["email"] == {"spooled": 2}

    operator("release", "--case", V, "--recipient", "arkhipov-detention-centre")
    operator("worker", "--once", "--now")
    prison = operator(
        "status", "--case", V, "--recipient", "arkhipov-detention-centre", "--json"
    ).json()
    assert prison["deliveries"]["post"] == {"spooled": 1}
    assert operator("audit", "verify", "--json").json()["ok"] is True


def test_bad_input_exits_2_naming_the_file(operator: Operator) -> None:
    (operator.folder / "broken.toml").write_text(
        '[organisation]\nname = "x"\n[[case]]\nslug = "Bad Slug"\n'
    )
    result = operator("campaign", "load", "broken.toml", check=2)
    assert "broken.toml" in result.err
    result = operator("messages", "import", "messages.csv", check=2)
    assert "no campaign loaded yet" in result.err
    operator("campaign", "load", "campaign.toml")
    result = operator("messages", "import", "missing.csv", check=2)
    assert "missing.csv" in result.err
    result = operator("review", "approve", "no-such-message", check=2)
    assert "no-such-message" in result.err
    result = operator("hold", "--case", "no-such-case", check=2)
    assert "no-such-case" in result.err
