"""Print and post, as the mailroom and a caseworker live it: print job, status file, returns."""

from __future__ import annotations

import csv
import io

from tests.acceptance.conftest import Operator

SECOND_LETTER = (
    "external_id,case,to,supporter_name,supporter_email,supporter_city,supporter_country,"
    "language,kind,body,submitted_at,event\n"
    "fr-0101,viktor-arkhipov,prison,Camille Laurent,,Lyon,FR,fr,letter,"
    '"Cher Viktor, nous pensons à vous chaque jour.",2026-12-15T09:00:00Z,\n'
)


def _fill_in(status_csv: str, rows: dict[str, tuple[str, ...]]) -> str:
    """The mailroom's copy of status.csv: the given envelopes filled in, the rest left blank."""
    table = list(csv.reader(io.StringIO(status_csv.lstrip("\ufeff"))))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(table[0])
    for row in table[1:]:
        writer.writerow([row[0], *rows.get(row[0], ())])
    return out.getvalue()


def test_a_returned_letter_holds_the_next_one_until_a_person_checks_the_address(
    operator: Operator,
) -> None:
    operator("campaign", "load", "campaign.toml")
    operator("messages", "import", "messages.csv", "--source", "web")
    operator("review", "approve", "--all-clean")
    operator("worker", "--once", "--now")

    (job,) = (operator.outbox / "post").iterdir()
    manifest = list(csv.DictReader(io.StringIO((job / "manifest.csv").read_text("utf-8-sig"))))
    prison = [r["envelope"] for r in manifest if r["recipient"] == "arkhipov-detention-centre"]
    assert prison
    status = (job / "status.csv").read_text(encoding="utf-8-sig")
    assert status.splitlines()[0] == "envelope,status,date,tracking_number,reason,signed_by"
    filled = _fill_in(
        status,
        {
            envelope: ("returned", "2026-12-20", "", "addressee unknown at this facility", "")
            for envelope in prison
        },
    )
    (operator.folder / "status.csv").write_text(filled, encoding="utf-8")

    marked = operator("post", "mark", "status.csv", "--json").json()

    assert marked["suspect"] == ["viktor-arkhipov/arkhipov-detention-centre"]
    assert marked["outcomes"]["returned"] == 1
    waiting = operator("review", "deliveries", "--json").json()
    assert [(w["recipient"], w["state"], w["fallback"]) for w in waiting] == [
        ("arkhipov-detention-centre", "returned", "")  # post is its only channel
    ]

    (operator.folder / "more.csv").write_text(SECOND_LETTER, encoding="utf-8")
    operator("messages", "import", "more.csv", "--source", "web")
    operator("review", "approve", "--all-clean")
    run = operator("worker", "--once", "--now")
    assert "the postal address is suspect (addressee unknown at this facility)" in run.err
    status_now = operator("status", "--recipient", "arkhipov-detention-centre", "--json").json()
    assert status_now["deliveries"]["post"] == {"returned": 1, "held": 1}

    released = operator(
        "release",
        "--case",
        "viktor-arkhipov",
        "--recipient",
        "arkhipov-detention-centre",
        "--reason",
        "address confirmed with the facility",
        "--json",
    ).json()
    assert released["deliveries"] == 1
    operator("worker", "--once")
    status_now = operator("status", "--recipient", "arkhipov-detention-centre", "--json").json()
    assert status_now["deliveries"]["post"] == {"returned": 1, "spooled": 1}
    assert operator("audit", "verify", "--json").json()["ok"] is True
