"""The store core: transactions, ledger appends and the campaign tables."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Self, TypeVar

from sqlalchemy import Connection, Engine, func, insert, select, text, update

from delivery import faults
from delivery import ledger as chain
from delivery.errors import NotFoundError
from delivery.models import Campaign, Recipient
from delivery.store import codec
from delivery.store.engine import make_engine, migrate, take_turns
from delivery.store.schema import cases, ledger, meta, recipients

STATISTICS_FIRST = 2_000  # messages added before PostgreSQL's statistics are first refreshed
T = TypeVar("T")
IN_LIST = 5_000  # ids in one IN (...): SQLite takes 32,766 parameters, PostgreSQL 65,535


def in_chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    """``items`` in slices short enough for one statement's parameters."""
    size = IN_LIST
    for start in range(0, len(items), size):
        yield items[start : start + size]


def now() -> datetime:
    return datetime.now(UTC)


class StoreBase:
    """Connections, the ledger and the campaign; the other parts build on this."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._campaign: Campaign | None = None
        self._id_key: bytes | None = None
        self._rows_added = 0  # messages this store added, for refresh_statistics
        self._statistics_at = STATISTICS_FIRST

    @property
    def id_key(self) -> bytes:
        """This installation's secret for ids: made at random on first use, kept in the store."""
        if self._id_key is None:
            with self.transaction() as conn:
                take_turns(conn, "id_key")  # processes opening a new database at once
                found = conn.execute(select(meta.c.value).where(meta.c.key == "id_key")).scalar()
                if found is None:
                    found = secrets.token_hex(32)
                    conn.execute(insert(meta).values(key="id_key", value=found))
            self._id_key = bytes.fromhex(str(found))
        return self._id_key

    @classmethod
    def connect(cls, url: str) -> Self:
        """Open the database at ``url``, migrating it to the current schema on first use."""
        engine = make_engine(url)
        migrate(engine)
        store = cls(engine)
        _ = store.id_key  # read (or made) now, never inside another transaction
        return store

    def close(self) -> None:
        self.engine.dispose()

    def refresh_statistics(self, *tables: str) -> None:
        """Have PostgreSQL count the rows of ``tables`` again; SQLite plans without this.

        A bulk import grows a table faster than autovacuum's analyser follows: planned on
        the counts of an empty table, the duplicate check scans every message of the
        source for each chunk, and the import slows down as the square of its size.
        """
        if self.engine.dialect.name != "postgresql":
            return
        with self.engine.connect() as conn:
            conn.execute(text(f"ANALYZE {', '.join(tables)}"))
            conn.commit()

    def _grown(self, rows: int, *tables: str) -> None:
        """Refresh the statistics each time the rows added here have doubled."""
        self._rows_added += rows
        if self._rows_added >= self._statistics_at:
            self.refresh_statistics(*tables)
            self._statistics_at = 2 * self._rows_added

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # -- ledger ---------------------------------------------------------------------------

    def record(
        self, conn: Connection, kind: str, subject: str, payload: dict[str, Any], actor: str
    ) -> None:
        """Seal one event after the last, inside the caller's transaction."""
        self.append(conn, [chain.Entry(kind=kind, subject=subject, payload=payload, actor=actor)])

    def append(self, conn: Connection, entries: Sequence[chain.Entry]) -> list[chain.Event]:
        """Seal `entries` after the last event, inside the caller's transaction."""
        if not entries:
            return []
        # Writers take turns reading the last event and sealing after it: on PostgreSQL an
        # advisory lock (pg_advisory_xact_lock), held until the transaction ends.
        take_turns(conn, "ledger")
        last = conn.execute(
            select(ledger.c.seq, ledger.c.hash).order_by(ledger.c.seq.desc()).limit(1)
        ).first()
        last_seq, last_hash = (int(last[0]), str(last[1])) if last else (0, chain.GENESIS)
        events = chain.seal(entries, last_seq=last_seq, last_hash=last_hash, at=chain.utc_stamp())
        conn.execute(insert(ledger), [_event_row(e) for e in events])
        faults.point("ledger-appended")  # crash tests: written, not yet committed
        return events

    def evidence_recorded(self, subject: str, path: str) -> bool:
        """Whether an event about ``subject`` already cites the evidence file at ``path``.

        Evidence is written before its event, so a file on disk alone proves nothing: a
        run that stopped in between left the file and no event, and must record it again.
        """
        needle = json.dumps(path)
        with self.engine.connect() as conn:
            payloads = conn.execute(
                select(ledger.c.payload).where(ledger.c.subject == subject)
            ).scalars()
            return any(needle in payload for payload in payloads)

    def events(
        self, *, subjects: Sequence[str] | None = None, batch: int = 5000
    ) -> Iterator[chain.Event]:
        """Every ledger event in order (or those about `subjects`), streamed."""
        after = 0
        while True:
            query = select(ledger).where(ledger.c.seq > after).order_by(ledger.c.seq).limit(batch)
            if subjects is not None:
                query = query.where(ledger.c.subject.in_(list(subjects)))
            with self.engine.connect() as conn:
                rows = conn.execute(query).mappings().all()
            if not rows:
                return
            for row in rows:
                yield chain.Event(
                    **{
                        k: row[k]
                        for k in (
                            "seq",
                            "at",
                            "actor",
                            "kind",
                            "subject",
                            "payload",
                            "prev_hash",
                            "hash",
                        )
                    }
                )
            after = int(rows[-1]["seq"])

    def ledger_size(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(ledger)).scalar_one())

    # -- campaign -------------------------------------------------------------------------

    def save_campaign(
        self, campaign: Campaign, *, actor: str, source: str, sha256: str
    ) -> dict[str, int]:
        """Create or update the organisation, cases and recipients; never duplicates."""
        counts = {
            "cases_added": 0,
            "cases_updated": 0,
            "recipients_added": 0,
            "recipients_updated": 0,
        }
        stamp = now()
        with self.transaction() as conn:
            self._put_meta(conn, "organisation", codec.to_json(campaign.organisation))
            for case in campaign.cases:
                added = self._upsert_case(conn, codec.to_json(case), case.slug, stamp)
                counts["cases_added" if added else "cases_updated"] += 1
                for recipient in case.recipients:
                    added = self._upsert_recipient(conn, recipient, stamp)
                    counts["recipients_added" if added else "recipients_updated"] += 1
            payload = {"file": source, "sha256": sha256, **counts}
            self.append(
                conn,
                [
                    chain.Entry(
                        kind="campaign.loaded", subject="campaign", payload=payload, actor=actor
                    )
                ],
            )
        self._campaign = None
        return counts

    def meta_value(self, key: str) -> Any:
        """A value the store keeps for itself (None when never set)."""
        with self.engine.connect() as conn:
            return conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar()

    def set_meta(self, key: str, value: Any) -> None:
        with self.transaction() as conn:
            self._put_meta(conn, key, value)

    def _put_meta(self, conn: Connection, key: str, value: Any) -> None:
        if conn.execute(select(meta.c.key).where(meta.c.key == key)).first():
            conn.execute(update(meta).where(meta.c.key == key).values(value=value))
        else:
            conn.execute(insert(meta).values(key=key, value=value))

    def _upsert_case(
        self, conn: Connection, data: dict[str, Any], slug: str, stamp: datetime
    ) -> bool:
        if conn.execute(select(cases.c.slug).where(cases.c.slug == slug)).first():
            conn.execute(
                update(cases).where(cases.c.slug == slug).values(data=data, updated_at=stamp)
            )
            return False
        conn.execute(insert(cases).values(slug=slug, data=data, held=False, updated_at=stamp))
        return True

    def _upsert_recipient(self, conn: Connection, recipient: Recipient, stamp: datetime) -> bool:
        data = codec.to_json(recipient)
        where = (recipients.c.case_slug == recipient.case) & (recipients.c.slug == recipient.slug)
        if conn.execute(select(recipients.c.id).where(where)).first():
            conn.execute(
                update(recipients)
                .where(where)
                .values(kind=str(recipient.kind), data=data, updated_at=stamp)
            )
            return False
        conn.execute(
            insert(recipients).values(
                case_slug=recipient.case,
                slug=recipient.slug,
                kind=str(recipient.kind),
                data=data,
                held=False,
                updated_at=stamp,
            )
        )
        return True

    def campaign(self) -> Campaign:
        """The loaded campaign; NotFoundError when none was loaded yet."""
        if self._campaign is None:
            self._campaign = self._read_campaign()
        return self._campaign

    def _read_campaign(self) -> Campaign:
        with self.engine.connect() as conn:
            org = conn.execute(select(meta.c.value).where(meta.c.key == "organisation")).scalar()
            if org is None:
                raise NotFoundError(
                    "no campaign loaded yet: run `solidarity campaign load FILE.toml`"
                )
            # sorted here, by code point as SQLite does: a PostgreSQL collation may differ
            case_rows = sorted(
                conn.execute(select(cases.c.slug, cases.c.data)).all(), key=lambda r: str(r[0])
            )
            rec_rows = (
                conn.execute(select(recipients.c.data).order_by(recipients.c.id)).scalars().all()
            )
        by_case: dict[str, list[Recipient]] = {}
        for data in rec_rows:
            recipient = codec.recipient_from_json(data)
            by_case.setdefault(recipient.case, []).append(recipient)
        built = tuple(
            codec.case_from_json(d, tuple(by_case.get(d["slug"], ()))) for _, d in case_rows
        )
        return Campaign(organisation=codec.organisation_from_json(org), cases=built)

    def recipient_ids(self) -> dict[tuple[str, str], int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(recipients.c.case_slug, recipients.c.slug, recipients.c.id)
            ).all()
        return {(str(r[0]), str(r[1])): int(r[2]) for r in rows}


def _event_row(event: chain.Event) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "at": event.at,
        "actor": event.actor,
        "kind": event.kind,
        "subject": event.subject,
        "payload": event.payload,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }
