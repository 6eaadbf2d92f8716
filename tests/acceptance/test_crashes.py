"""Workers killed with SIGKILL at the worst moments, then restarted: nothing lost, nothing twice.

Real worker processes (`solidarity worker`), a real SMTP server in another process that
writes down every Message-ID it accepts, and the failpoints of :mod:`delivery.faults`.
After each crash and restart the promises are checked from the outside: every approved
message is in exactly one bundle per recipient (the manifests against the approvals), no
Message-ID reached the server twice, no claim is left to the dead worker, every delivery
is settled, and `solidarity audit verify` passes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from delivery.demo import DEMO_CAMPAIGN_TOML, write_messages_csv
from delivery.store import Store
from tests.acceptance.conftest import Operator
from tests.postgres import Databases, PostgresServer, sql

SINK = Path(__file__).resolve().parent.parent / "crash_sink.py"
LEASE = 1.0
MESSAGES = 60


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    log = tmp_path / "accepted.log"
    log.touch()
    server = subprocess.Popen(
        [sys.executable, str(SINK), str(log)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    ready = server.stdout.readline().split()
    assert ready[0] == "ready", ready
    yield int(ready[1]), log
    assert server.stdin is not None
    server.stdin.close()
    server.wait(timeout=10)
    server.stdout.close()


@pytest.fixture
def crew(
    request: pytest.FixtureRequest, tmp_path: Path, sink: tuple[int, Path]
) -> Iterator[Operator]:
    """An operator whose workers send e-mail to the witness server, with short leases.

    On SQLite by default; ``indirect`` parametrization with "postgresql" puts the state in
    a fresh PostgreSQL database instead.
    """
    engine = getattr(request, "param", "sqlite")
    databases: Databases | None = None
    folder = tmp_path / "desk"
    folder.mkdir()
    (folder / "campaign.toml").write_text(DEMO_CAMPAIGN_TOML, encoding="utf-8")
    write_messages_csv(folder / "messages.csv", MESSAGES)
    operator = Operator(folder)
    operator.env.update(
        {
            "SOLIDARITY_SMTP__HOST": "127.0.0.1",
            "SOLIDARITY_SMTP__PORT": str(sink[0]),
            "SOLIDARITY_SMTP__SECURITY": "none",
            "SOLIDARITY_WORKER__LEASE_SECONDS": str(LEASE),
            "SOLIDARITY_RENDER__PROCESSES": "1",
        }
    )
    if engine == "postgresql":
        databases = Databases(
            engine=engine, folder=tmp_path, server=request.getfixturevalue("postgres")
        )
        operator.env["SOLIDARITY_DATABASE_URL"] = databases.new(unmigrated=True)
    operator("campaign", "load", "campaign.toml")
    operator("messages", "import", "messages.csv", "--source", "web")
    operator("review", "approve", "--all-clean")
    try:
        yield operator
    finally:
        if databases is not None:
            databases.close()


def database(operator: Operator) -> str:
    return operator.env.get(
        "SOLIDARITY_DATABASE_URL", f"sqlite:///{operator.outbox / 'solidarity.db'}"
    )


def finish(operator: Operator) -> None:
    """Restart workers (after the dead one's leases ran out) until nothing is left to do."""
    for _ in range(4):
        time.sleep(LEASE + 0.3)
        operator("worker", "--once", "--now", check=None)
        status = operator("status", "--json").json()
        busy = {"queued", "sending", "deferred"}
        if not status["bundles_by_state"].get("planned") and not any(
            state in busy for states in status["deliveries"].values() for state in states
        ):
            return
    pytest.fail(f"work left after four restarts: {status}")


def check_promises(operator: Operator, accepted_log: Path) -> None:
    store = Store.connect(database(operator))
    try:
        _one_bundle_per_message_and_recipient(store, operator.outbox)
        seen = Counter(line for line in accepted_log.read_text().splitlines() if line)
        unknown = {d.message_id_header for d in store.deliveries_in(_states("unknown"))}
        twice = {mid for mid, n in seen.items() if n > 1 and mid not in unknown}
        assert twice == set(), f"Message-IDs the server got more than once: {twice}"
        for delivery in store.deliveries_in(_states("accepted")):
            if delivery.channel == "email":
                assert seen[delivery.message_id_header] >= 1, delivery.id
        assert store.live_leases() == {}
    finally:
        store.close()
    verified = operator("audit", "verify", "--json", check=None).json()
    assert verified["ok"], verified["problems"]


def _states(*names: str) -> tuple:  # type: ignore[type-arg]
    from delivery.models import DeliveryState

    return tuple(DeliveryState(n) for n in names)


def _one_bundle_per_message_and_recipient(store: Store, outbox: Path) -> None:
    with store.engine.connect() as conn:
        approved = conn.exec_driver_sql(
            "SELECT mr.recipient_id, mr.message_id FROM message_recipients mr"
            " JOIN messages m ON m.id = mr.message_id WHERE m.review_state = 'approved'"
        ).all()
        bundle_rows = conn.exec_driver_sql(
            "SELECT id, recipient_id, state, manifest_path FROM bundles WHERE state != 'dissolved'"
        ).all()
    wanted: dict[int, set[int]] = {}
    for recipient_id, message_id in approved:
        wanted.setdefault(int(recipient_id), set()).add(int(message_id))
    bundled: dict[int, list[int]] = {}
    for bundle_id, recipient_id, state, manifest_path in bundle_rows:
        assert state == "rendered", f"bundle {bundle_id} left {state}"
        manifest = json.loads((outbox / manifest_path).read_text(encoding="utf-8"))
        bundled.setdefault(int(recipient_id), []).extend(int(m["id"]) for m in manifest["messages"])
    for recipient_id, ids in bundled.items():
        assert len(ids) == len(set(ids)), f"recipient {recipient_id}: a message in two bundles"
    assert {r: set(ids) for r, ids in bundled.items()} == wanted


POINTS = [
    "bundle-claimed",
    "render-started",
    "render-published",
    "delivery-claimed",
    "delivery-sent:email",
    "ledger-appended@40",  # inside a transaction of the deliver step
]


@pytest.mark.parametrize(
    ("crew", "point"),
    [("sqlite", point) for point in POINTS]
    + [("postgresql", point) for point in ("render-started", "delivery-sent:email")],
    indirect=["crew"],
)
def test_a_worker_killed_anywhere_loses_nothing_and_sends_nothing_twice(
    crew: Operator, sink: tuple[int, Path], point: str
) -> None:
    crew.env["SOLIDARITY_FAULT"] = point
    killed = crew("worker", "--once", "--now", check=None)
    assert killed.code == -signal.SIGKILL, f"the worker did not reach {point}: {killed.err}"
    del crew.env["SOLIDARITY_FAULT"]
    finish(crew)
    check_promises(crew, sink[1])
    if point == "delivery-sent:email":  # the server has them; the worker never said so
        waiting = crew("review", "deliveries", "--json").json()
        unknown = [d for d in waiting if d["state"] == "unknown"]
        assert unknown  # every e-mail in flight: a person settles them, the worker never resends
        assert {d["channel"] for d in unknown} == {"email"}


def test_a_bundle_that_kills_its_worker_is_set_aside_and_the_rest_flow(
    crew: Operator, sink: tuple[int, Path]
) -> None:
    crew.env["SOLIDARITY_FAULT"] = "bundle-claimed"  # collect, then die before any render
    assert crew("worker", "--once", "--now", check=None).code == -signal.SIGKILL
    poison = crew("bundles", "list", "--json").json()[-1]["id"]
    crew.env["SOLIDARITY_FAULT"] = f"render-begun:{poison}"  # this bundle kills its worker
    for _ in range(3):
        time.sleep(LEASE + 0.3)
        assert crew("worker", "--once", "--now", check=None).code == -signal.SIGKILL
    del crew.env["SOLIDARITY_FAULT"]
    time.sleep(LEASE + 0.3)
    run = crew("worker", "--once", "--now", "--json", check=1).json()
    assert run["bundles_failed"] == 1
    assert "started 3 times and never finished" in run["errors"][0]
    failed = crew("bundles", "list", "--failed", "--json").json()
    assert [b["id"] for b in failed] == [poison]
    states = {b["state"] for b in crew("bundles", "list", "--json").json() if b["id"] != poison}
    assert states == {"rendered"}  # every other bundle, even those rendered beside it


def test_sigterm_gives_unfinished_work_back_and_exits_0(
    crew: Operator, sink: tuple[int, Path]
) -> None:
    crew.env["SOLIDARITY_WORKER__GRACE_SECONDS"] = "0.5"
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "solidarity"), "worker", "--poll", "1"],
        cwd=crew.folder,
        env=crew.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert worker.stderr is not None
    for line in worker.stderr:  # wait until it is rendering
        if "rendered" in line:
            break
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert time.monotonic() - started < 10
    assert "stopping" in err
    store = Store.connect(database(crew))
    assert store.live_leases() == {}  # given back, not left to expire
    store.close()
    del crew.env["SOLIDARITY_WORKER__GRACE_SECONDS"]
    finish(crew)
    check_promises(crew, sink[1])


@pytest.mark.parametrize("crew", ["sqlite", "postgresql"], indirect=True)
def test_several_workers_share_the_work_with_no_double_claims(
    crew: Operator, sink: tuple[int, Path]
) -> None:
    crew.env["SOLIDARITY_WORKER__LEASE_SECONDS"] = "30"  # nobody dies here: no takeovers
    run = crew("worker", "--once", "--now", "--concurrency", "3", "--json").json()
    assert run["workers"] == 3
    assert run["bundles_failed"] == 0
    rendered = crew("bundles", "list", "--json").json()
    assert run["bundles_rendered"] == len(rendered)
    store = Store.connect(database(crew))
    per_bundle = sql(
        store,
        "SELECT subject, count(*) FROM ledger WHERE kind = 'bundle.rendered' GROUP BY subject",
    )
    sending = sql(
        store,
        "SELECT subject, count(*) FROM ledger WHERE kind = 'delivery.sending' GROUP BY subject",
    )
    actors = {a for (a,) in sql(store, "SELECT DISTINCT actor FROM ledger")}
    store.close()
    assert all(n == 1 for _, n in per_bundle)
    assert all(n == 1 for _, n in sending)
    assert len([a for a in actors if a.startswith("worker@")]) >= 2  # the work was shared
    check_promises(crew, sink[1])


@pytest.mark.parametrize("crew", ["postgresql"], indirect=True)
def test_workers_wait_out_a_database_that_went_away_and_resume(
    crew: Operator, sink: tuple[int, Path], postgres: PostgresServer
) -> None:
    name = make_url(database(crew)).database
    assert name
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "solidarity"), "worker", "--poll", "2"],
        cwd=crew.folder,
        env=crew.env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert worker.stderr is not None
    said: list[str] = []
    for line in worker.stderr:  # working: now take the database away
        said.append(line)
        if "rendered" in line:
            break
    postgres.admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    postgres.admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
    )
    for line in worker.stderr:
        said.append(line)
        if "database unavailable" in line:
            break
    time.sleep(3)  # the worker keeps trying, and keeps waiting
    postgres.admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    for line in worker.stderr:
        said.append(line)
        if line.startswith("run done") and '"errors": []' in line:
            break
    worker.send_signal(signal.SIGTERM)
    worker.communicate(timeout=60)
    assert worker.returncode == 0, "".join(said[-20:])
    assert any("trying again in" in line for line in said)
    finish(crew)
    check_promises(crew, sink[1])
