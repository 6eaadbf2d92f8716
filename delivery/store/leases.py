"""Claims with leases, so that several workers on one database share the work.

A worker claims rows — planned bundles to render, deliveries to send — by writing its name
and an expiry into them, in one statement that passes over rows another live worker holds:
on PostgreSQL ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING``, on
SQLite the same compare-and-set inside the ``BEGIN IMMEDIATE`` transaction every write
takes there. The worker's heartbeat renews its leases; a worker that stops (killed,
frozen, cut off) loses them once they expire, and the others take its work over.

Expiry is measured by the database's clock, never the worker's: every worker compares
against the same time, and one whose own clock is wrong can neither keep a claim alive
nor steal a live one.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Float,
    and_,
    func,
    insert,
    literal_column,
    or_,
    select,
)
from sqlalchemy import update as sql_update

from delivery.models import DeliveryState
from delivery.store.engine import take_turns
from delivery.store.retention import RetentionStore
from delivery.store.schema import bundles, deliveries, domain_pace
from delivery.store.work import (
    BundleRow,
    DeliveryRow,
    _bundle_query,
    _bundle_row,
    _delivery_query,
    _delivery_row,
)


def db_clock(conn: Connection) -> ColumnElement[float]:
    """Now, in seconds since the epoch, as the database tells it."""
    if conn.dialect.name == "sqlite":
        return literal_column("((julianday('now') - 2440587.5) * 86400.0)", Float)
    return func.extract("epoch", func.clock_timestamp()).cast(Float)


def _free(table: Any, clock: ColumnElement[float]) -> ColumnElement[bool]:
    return or_(table.c.lease_owner == "", table.c.lease_expires < clock)


def _claim(
    conn: Connection,
    table: Any,
    wanted: ColumnElement[bool],
    owner: str,
    limit: int,
    ttl: float,
) -> list[str]:
    """Lease up to ``limit`` free rows of ``table`` matching ``wanted``, oldest first; their ids.

    The rows are picked and leased in one statement; on PostgreSQL the pick locks them and
    skips rows another transaction has locked, so concurrent claims never wait on each
    other and never get the same row.
    """
    clock = db_clock(conn)
    pick = (
        select(table.c.id)
        .where(wanted, _free(table, clock))
        .order_by(table.c.created_at, table.c.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    claimed = conn.execute(
        sql_update(table)
        .where(table.c.id.in_(pick.scalar_subquery()), _free(table, clock))
        .values(lease_owner=owner, lease_expires=clock + ttl)
        .returning(table.c.id)
    ).scalars()
    return [str(i) for i in claimed]


class LeaseStore(RetentionStore):
    def claim_bundles(
        self, owner: str, *, limit: int, ttl: float, skip: Collection[str] = ()
    ) -> list[BundleRow]:
        """Up to ``limit`` planned bundles no live worker holds, now held by ``owner``.

        ``skip`` names bundles this worker gave back in this run: not taken again.
        """
        wanted = bundles.c.state == "planned"
        if skip:
            wanted = and_(wanted, bundles.c.id.not_in(list(skip)))
        with self.transaction() as conn:
            ids = _claim(conn, bundles, wanted, owner, limit, ttl)
            if not ids:
                return []
            rows = conn.execute(
                _bundle_query().where(bundles.c.id.in_(ids)).order_by(bundles.c.created_at)
            ).all()
        return [_bundle_row(r) for r in rows]

    def unfinished_renders(self, bundle_id: str) -> int:
        """Renders of this bundle that started and never finished: their workers died."""
        with self.engine.connect() as conn:
            found = conn.execute(
                select(bundles.c.unfinished_renders).where(bundles.c.id == bundle_id)
            ).scalar()
        return int(found or 0)

    def render_started(self, bundle_id: str) -> None:
        """Count a render as begun; finishing (or failing) it sets the count back to 0."""
        with self.transaction() as conn:
            conn.execute(
                sql_update(bundles)
                .where(bundles.c.id == bundle_id)
                .values(unfinished_renders=bundles.c.unfinished_renders + 1)
            )

    def render_deferred(self, bundle_id: str, owner: str) -> None:
        """A render that ended without a crash but was not stored: planned, unclaimed again."""
        with self.transaction() as conn:
            conn.execute(
                sql_update(bundles)
                .where(bundles.c.id == bundle_id, bundles.c.lease_owner == owner)
                .values(unfinished_renders=0, lease_owner="", lease_expires=0)
            )

    def claim_deliveries(
        self, owner: str, states: Sequence[DeliveryState], *, limit: int, ttl: float
    ) -> list[DeliveryRow]:
        """Up to ``limit`` deliveries in ``states`` no live worker holds, now held by ``owner``.

        A delivery left ``sending`` by a worker that died comes back only once its lease
        has expired: while the worker lives, the send is its own, not an interrupted one.
        """
        wanted = deliveries.c.state.in_([str(s) for s in states])
        with self.transaction() as conn:
            ids = _claim(conn, deliveries, wanted, owner, limit, ttl)
            if not ids:
                return []
            rows = conn.execute(
                _delivery_query()
                .where(deliveries.c.id.in_(ids))
                .order_by(deliveries.c.created_at, deliveries.c.id)
            ).all()
        return [_delivery_row(r) for r in rows]

    def renew(self, owner: str, ttl: float) -> int:
        """The heartbeat: push back the expiry of every lease ``owner`` holds; how many."""
        with self.transaction() as conn:
            clock = db_clock(conn)
            renewed = 0
            for table in (bundles, deliveries):
                done = conn.execute(
                    sql_update(table)
                    .where(table.c.lease_owner == owner)
                    .values(lease_expires=clock + ttl)
                )
                renewed += int(done.rowcount or 0)
        return renewed

    def holds(self, owner: str, *, bundle_id: str) -> bool:
        """Whether ``owner``'s lease on the bundle is still live (checked before publishing)."""
        with self.engine.connect() as conn:
            clock = db_clock(conn)
            found = conn.execute(
                select(bundles.c.id).where(
                    bundles.c.id == bundle_id,
                    bundles.c.lease_owner == owner,
                    bundles.c.lease_expires >= clock,
                )
            ).first()
        return found is not None

    def release(
        self, owner: str, *, bundle_ids: Sequence[str] = (), delivery_ids: Sequence[str] = ()
    ) -> None:
        """Give claims back: the named ones, or every one ``owner`` holds when none is named."""
        with self.transaction() as conn:
            for table, ids in ((bundles, bundle_ids), (deliveries, delivery_ids)):
                if not ids and (bundle_ids or delivery_ids):
                    continue
                where = table.c.lease_owner == owner
                if ids:
                    where = and_(where, table.c.id.in_(list(ids)))
                conn.execute(sql_update(table).where(where).values(lease_owner="", lease_expires=0))

    def live_leases(self) -> dict[str, int]:
        """Owners holding live leases now, with how many rows each: for status and checks."""
        with self.engine.connect() as conn:
            clock = db_clock(conn)
            held: dict[str, int] = {}
            for table in (bundles, deliveries):
                rows = conn.execute(
                    select(table.c.lease_owner, func.count())
                    .where(table.c.lease_owner != "", table.c.lease_expires >= clock)
                    .group_by(table.c.lease_owner)
                ).all()
                for owner, count in rows:
                    held[str(owner)] = held.get(str(owner), 0) + int(count)
        return held

    def reserve_start(self, domain: str, interval: float) -> float:
        """Book the next start for an e-mail to ``domain``; the seconds to wait for it.

        Starts to one domain are ``interval`` seconds apart for every worker on this
        database together, by the database's clock: N workers do not press a ministry's
        mail server N times as hard. The booking is taken before the wait, so workers
        waiting at once get successive starts.
        """
        key = domain.lower()
        with self.transaction() as conn:
            take_turns(conn, f"pace:{key}")  # then read the clock: the wait is not counted
            now = float(conn.execute(select(db_clock(conn))).scalar_one())
            booked = conn.execute(
                select(domain_pace.c.next_start).where(domain_pace.c.domain == key)
            ).scalar()
            start = max(now, float(booked)) if booked is not None else now
            if booked is None:
                conn.execute(insert(domain_pace).values(domain=key, next_start=start + interval))
            else:
                conn.execute(
                    sql_update(domain_pace)
                    .where(domain_pace.c.domain == key)
                    .values(next_start=start + interval)
                )
        return start - now
