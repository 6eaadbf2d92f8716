"""The store on a real database, SQLite and PostgreSQL: migrations, claims, holds and the ledger."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from delivery.campaign import load_campaign
from delivery.config import IntakeSettings, Settings
from delivery.errors import InputError, InvalidTransitionError
from delivery.importer import import_messages
from delivery.ledger import Entry, verify, verify_chain
from delivery.models import ChannelName, DeliveryState, Part, ReviewState
from delivery.outbox import LocalOutbox
from delivery.store import Store
from delivery.store import base as store_base
from delivery.store.engine import HEAD
from delivery.worker import Worker
from tests.postgres import Databases, PostgresServer, sql

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _import(store: Store, settings: Settings) -> None:
    import_messages(store, FIXTURES / "messages_sample.csv", source="web", settings=settings)


def _recipient_id(store: Store, case: str, slug: str) -> int:
    return store.recipient_ids()[(case, slug)]


def test_first_use_migrates_the_database(settings: Settings, store: Store) -> None:
    assert sql(store, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    if store.engine.dialect.name == "sqlite":
        assert sql(store, "PRAGMA journal_mode") == [("wal",)]
    again = Store.connect(settings.database_url)  # a second open finds the schema in place
    assert len(again.campaign().cases) == 2


def test_loading_a_campaign_again_updates_and_never_duplicates(store: Store) -> None:
    campaign = store.campaign()
    counts = store.save_campaign(campaign, actor="test", source="campaign.toml", sha256="-")
    assert counts == {
        "cases_added": 0,
        "cases_updated": 2,
        "recipients_added": 0,
        "recipients_updated": 4,
    }
    assert len(store.recipient_ids()) == 4


def test_importing_twice_counts_duplicates(store: Store, settings: Settings) -> None:
    _import(store, settings)
    report = import_messages(
        store, FIXTURES / "messages_sample.csv", source="web", settings=settings
    )
    assert (report.imported, report.duplicates) == (0, 5)
    other = import_messages(
        store, FIXTURES / "messages_sample.csv", source="events", settings=settings
    )
    assert other.imported == 5
    assert store.count_messages() == 10


def test_each_intake_event_names_its_own_message(store: Store, settings: Settings) -> None:
    """A chunk's ids come back in the order its rows went in (INSERT … RETURNING)."""
    _import(store, settings)
    rows = sql(store, "SELECT id, ref, line FROM messages ORDER BY id")
    firsts = {e.subject: e.data() for e in reversed(list(store.events()))}
    assert [(f"message:{mid}", ref, line) for mid, ref, line in rows] == [
        (f"message:{mid}", firsts[f"message:{mid}"]["ref"], firsts[f"message:{mid}"]["line"])
        for mid, _, _ in rows
    ]
    assert [line for _, _, line in rows] == sorted(line for _, _, line in rows)


def test_each_approved_message_goes_into_exactly_one_bundle(
    store: Store, settings: Settings
) -> None:
    _import(store, settings)
    store.decide(store.clean_pending(case=None), ReviewState.APPROVED, actor="test")
    rid = _recipient_id(store, "viktor-arkhipov", "ru-prosecutor-general")
    first = store.create_bundle(rid, "2026-12-14", actor="test")
    assert first is not None
    assert store.create_bundle(rid, "2026-12-15", actor="test") is None
    ids = {m.external_id for m in store.bundle_messages(first)}
    assert ids == {"pl-0001", "de-0001"}


def test_a_bundled_message_can_no_longer_be_rejected(store: Store, settings: Settings) -> None:
    _import(store, settings)
    store.decide(store.clean_pending(case=None), ReviewState.APPROVED, actor="test")
    rid = _recipient_id(store, "viktor-arkhipov", "ru-prosecutor-general")
    store.create_bundle(rid, "once", actor="test")
    (mid,) = store.resolve(["pl-0001"])
    with pytest.raises(InputError, match="already in a bundle"):
        store.decide([mid], ReviewState.REJECTED, actor="test")


def test_decisions_and_bundles_span_many_statements_all_or_nothing(
    store: Store, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_base, "IN_LIST", 2)  # a campaign's 600,000 ids, in miniature
    _import(store, settings)
    clean = store.clean_pending(case=None)
    assert len(clean) > store_base.IN_LIST
    assert store.decide(clean + clean[:1], ReviewState.APPROVED, actor="test") == len(clean)
    approved = [
        e.subject for e in store.events() if (e.kind, e.actor) == ("review.approved", "test")
    ]
    assert approved == [f"message:{m}" for m in sorted(clean)]

    rid = _recipient_id(store, "viktor-arkhipov", "ru-prosecutor-general")
    bundle = store.create_bundle(rid, "once", actor="test")
    assert bundle is not None
    assert {m.external_id for m in store.bundle_messages(bundle)} == {"pl-0001", "de-0001"}

    (bundled,) = store.resolve(["pl-0001"])
    others = [m for m in clean if m != bundled]
    before = store.ledger_size()
    with pytest.raises(InputError, match="already in a bundle"):  # in the last statement
        store.decide([*others, bundled], ReviewState.REJECTED, actor="test", note="spam")
    assert store.ledger_size() == before
    assert store.status(case=None, recipient=None)["messages"]["rejected"] == 0


def test_same_bundle_id_for_same_messages_and_period_in_one_installation(
    tmp_path: Path, databases: Databases
) -> None:
    urls = {}

    def prepared(name: str) -> tuple[Store, int]:
        urls[name] = databases.new(name)
        settings = Settings(outbox=str(tmp_path / name), database_url=urls[name])
        store = Store.connect(settings.database_url)
        store.save_campaign(
            load_campaign(FIXTURES / "campaign_reference.toml"), actor="t", source="c", sha256="-"
        )
        _import(store, settings)
        store.decide(store.clean_pending(case=None), ReviewState.APPROVED, actor="test")
        return store, _recipient_id(store, "viktor-arkhipov", "ru-prosecutor-general")

    first, rid = prepared("a")
    first.close()
    urls["a-copy"] = databases.copy(urls["a"], "a-copy")  # the same installation, twice
    ids = []
    for name in ("a", "a-copy"):
        store = Store.connect(urls[name])
        ids.append(store.create_bundle(rid, "2026-W50", actor="test"))
        store.close()
    other, other_rid = prepared("b")  # another installation, with its own secret

    assert ids[0] is not None
    assert ids[0] == ids[1]
    assert other.create_bundle(other_rid, "2026-W50", actor="test") != ids[0]


def test_hold_moves_queued_deliveries_and_release_brings_them_back(
    store: Store, settings: Settings
) -> None:
    _import(store, settings)
    store.decide(store.clean_pending(case=None), ReviewState.APPROVED, actor="test")
    rid = _recipient_id(store, "viktor-arkhipov", "arkhipov-family")
    bundle = store.bundle(store.create_bundle(rid, "once", actor="test") or "")
    delivery = store.ensure_delivery(
        bundle, ChannelName.EMAIL, bounce_domain="b.example.org", actor="t"
    )
    assert store.delivery(delivery).state == DeliveryState.QUEUED

    moved = store.set_held("viktor-arkhipov", None, True, actor="caseworker", reason="family asked")
    assert moved == {"recipients": 3, "deliveries": 1}
    assert store.delivery(delivery).state == DeliveryState.HELD

    store.set_held("viktor-arkhipov", None, False, actor="caseworker", reason="resume")
    assert store.delivery(delivery).state == DeliveryState.QUEUED
    assert list(store.table_mismatches()) == []


def test_a_held_recipient_gets_new_deliveries_held(store: Store, settings: Settings) -> None:
    _import(store, settings)
    store.decide(store.clean_pending(case=None), ReviewState.APPROVED, actor="test")
    rid = _recipient_id(store, "viktor-arkhipov", "arkhipov-family")
    bundle = store.bundle(store.create_bundle(rid, "once", actor="test") or "")
    store.set_held("viktor-arkhipov", "arkhipov-family", True, actor="caseworker", reason="pause")
    delivery = store.ensure_delivery(
        bundle, ChannelName.EMAIL, bounce_domain="b.example.org", actor="t"
    )
    assert store.delivery(delivery).state == DeliveryState.HELD
    with pytest.raises(InvalidTransitionError):
        store.transition(delivery, DeliveryState.SENDING, actor="t")


def test_a_run_that_stopped_mid_send_is_finished_by_the_next(
    store: Store, settings: Settings
) -> None:
    _import(store, settings)
    store.decide(store.clean_pending(case=None), ReviewState.APPROVED, actor="test")
    worker = Worker(settings, store)
    asyncio.run(worker.run_once(on_demand=True))
    (fax,) = [
        d for d in store.deliveries_in([DeliveryState.SPOOLED]) if d.channel == ChannelName.FAX
    ]
    # Simulate a crash after the intent was committed but before the outcome was.
    sql(store, "UPDATE deliveries SET state = 'sending' WHERE id = :id", id=fax.id)
    summary = asyncio.run(worker.run_once(on_demand=True))
    assert summary.deliveries == {"fax:spooled": 1}
    assert store.delivery(fax.id).state == DeliveryState.SPOOLED
    outbox = LocalOutbox(settings.outbox_path)
    assert verify(store.events(), outbox.sha256) == []


def test_the_worker_does_not_deliver_twice(store: Store, settings: Settings) -> None:
    _import(store, settings)
    store.decide(store.clean_pending(case=None), ReviewState.APPROVED, actor="test")
    worker = Worker(settings, store)
    first = asyncio.run(worker.run_once(on_demand=True))
    assert sum(first.deliveries.values()) == 4
    events = store.ledger_size()
    second = asyncio.run(worker.run_once(on_demand=True))
    assert (second.bundles_planned, sum(second.deliveries.values())) == (0, 0)
    assert store.ledger_size() == events


def test_cadence_holds_back_a_second_bundle_in_the_same_period(
    store: Store, settings: Settings
) -> None:
    _import(store, settings)
    store.decide(store.clean_pending(case=None), ReviewState.APPROVED, actor="test")
    worker = Worker(settings, store)
    asyncio.run(worker.run_once())
    more = FIXTURES / "messages_sample.csv"
    import_messages(store, more, source="late", settings=settings)
    store.decide(store.clean_pending(case=None), ReviewState.APPROVED, actor="test")
    again = asyncio.run(worker.run_once())
    assert again.bundles_planned == 0  # every recipient already has its bundle for this period
    on_demand = asyncio.run(worker.run_once(on_demand=True))
    # On demand, every recipient but the daily digest: it has had its one digest today.
    assert on_demand.bundles_planned == 3


def test_the_migrations_build_exactly_the_tables_the_code_declares(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from delivery.store.schema import metadata

    with store.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []


def test_writers_appending_at_once_leave_one_chain_without_gaps(store: Store) -> None:
    """Each writer reads the last event and seals after it: they must take turns.

    SQLite serialises writers with BEGIN IMMEDIATE; PostgreSQL with an advisory lock that
    the append takes before it reads the last event.
    """
    writers, rounds = 4, 10
    start = threading.Barrier(writers)
    failures: list[BaseException] = []
    before = store.ledger_size()

    def write(n: int) -> None:
        try:
            start.wait()
            for r in range(rounds):
                entries = [Entry(kind="test.append", subject=f"writer:{n}", actor=f"w{n}")] * 2
                with store.transaction() as conn:
                    store.append(conn, entries)
                    store.record(conn, "test.append", f"writer:{n}", {"round": r}, f"w{n}")
        except BaseException as exc:  # reported below, on the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    events = list(store.events())
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len(events) == before + writers * rounds * 3
    assert verify_chain(events) is None


def test_processes_opening_a_new_postgresql_database_at_once_migrate_it_once(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """Workers started together on an empty database: one migrates, one makes the id key."""
    databases = Databases(engine="postgresql", folder=tmp_path, server=postgres)
    url = databases.new(unmigrated=True)
    openers = 4
    start = threading.Barrier(openers)
    opened: list[Store] = []
    failures: list[BaseException] = []

    def open_it() -> None:
        try:
            start.wait()
            opened.append(Store.connect(url))
        except BaseException as exc:  # reported below, on the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(openers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert failures == []
        assert len({store.id_key for store in opened}) == 1
        assert sql(opened[0], "SELECT version_num FROM alembic_version") == [(HEAD,)]
    finally:
        for store in opened:
            store.close()
        databases.close()


def test_a_nul_in_a_servers_reply_is_kept_not_fatal(store: Store, settings: Settings) -> None:
    """PostgreSQL refuses NUL in text: there it is kept as U+FFFD, and the move still happens."""
    _import(store, settings)
    store.decide(store.clean_pending(case=None), ReviewState.APPROVED, actor="test")
    rid = _recipient_id(store, "viktor-arkhipov", "arkhipov-family")
    bundle = store.bundle(store.create_bundle(rid, "once", actor="test") or "")
    delivery = store.ensure_delivery(
        bundle, ChannelName.EMAIL, bounce_domain="b.example.org", actor="t"
    )
    reply = "421 4.3.2 busy\x00try later"
    part = Part(number=1, count=1, ref="<p1@b>", state=DeliveryState.DEFERRED, detail=reply)
    assert store.transition(delivery, DeliveryState.SENDING, actor="t")
    assert store.transition(
        delivery, DeliveryState.DEFERRED, actor="t", detail=reply, provider_ref=reply, parts=[part]
    )
    kept = reply if store.engine.dialect.name == "sqlite" else reply.replace("\x00", "\ufffd")
    row = store.delivery(delivery)
    assert (row.state, row.last_error, row.provider_ref) == (DeliveryState.DEFERRED, kept, kept)
    assert [p.detail for p in store.parts(delivery)] == [kept]
    assert verify_chain(store.events()) is None  # the ledger's JSON keeps the reply as given


def test_values_longer_than_their_columns_are_refused_at_intake_on_both_engines(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    roomy = settings.model_copy(update={"intake": IntakeSettings(max_field_chars=1_000)})
    header, first = (FIXTURES / "messages_sample.csv").read_text().splitlines()[:2]
    long_id = "x" * 201
    long_language = "en-" + "-".join(["abcdefgh"] * 4)  # a well-formed tag of 38 characters
    rows = [
        first,
        first.replace("pl-0001", long_id, 1),
        first.replace("pl-0001", "pl-0009", 1).replace(",PL,pl,", f",PL,{long_language},", 1),
    ]
    path = tmp_path / "long.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")

    report = import_messages(store, path, source="web", settings=roomy)

    assert report.imported == 1
    reasons = {(r["line"], r["field"]): r["reason"] for r in report.as_dict()["rejected"]}
    assert reasons == {
        (3, "external_id"): "has 201 characters, the limit is 200",
        (4, "language"): "has 38 characters, the limit is 35",
    }
    with pytest.raises(InputError, match="--source has 201 characters, the limit is 200"):
        import_messages(store, path, source="s" * 201, settings=roomy)
