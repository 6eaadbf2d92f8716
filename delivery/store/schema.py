"""Tables, in SQLAlchemy Core, portable between SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect

metadata = MetaData()

Id = BigInteger().with_variant(Integer(), "sqlite")  # SQLite only auto-increments INTEGER keys


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


UtcTime = UtcDateTime()


class OutsideText(TypeDecorator[str]):
    """Text others wrote (a server's reply, a provider's report), which may hold a NUL.

    PostgreSQL refuses NUL in text, and the write would fail with the whole transaction:
    there it is kept as U+FFFD instead. SQLite keeps the text as given.
    """

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None or dialect.name != "postgresql":
            return value
        return value.replace("\x00", "\ufffd")


meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", JSON, nullable=False),
)

cases = Table(
    "cases",
    metadata,
    Column("slug", String(64), primary_key=True),
    Column("data", JSON, nullable=False),
    Column("held", Boolean, nullable=False, default=False),
    Column("updated_at", UtcTime, nullable=False),
)

recipients = Table(
    "recipients",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("case_slug", String(64), ForeignKey("cases.slug"), nullable=False),
    Column("slug", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("data", JSON, nullable=False),
    Column("held", Boolean, nullable=False, default=False),
    Column("address_suspect", Text, nullable=False, default=""),  # why post came back
    Column("updated_at", UtcTime, nullable=False),
    UniqueConstraint("case_slug", "slug", name="uq_recipient_case_slug"),
)

import_batches = Table(
    "import_batches",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("source", String(200), nullable=False),
    Column("filename", Text, nullable=False),
    Column("file_sha256", String(64), nullable=False),
    Column("started_at", UtcTime, nullable=False),
    Column("finished_at", UtcTime),
    Column("imported", Integer, nullable=False, default=0),
    Column("duplicates", Integer, nullable=False, default=0),
    Column("rejected", Integer, nullable=False, default=0),
)

messages = Table(
    "messages",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("batch_id", Id, ForeignKey("import_batches.id"), nullable=False),
    Column("source", String(200), nullable=False),
    Column("external_id", String(200), nullable=False),
    Column("line", Integer, nullable=False),
    Column("case_slug", String(64), ForeignKey("cases.slug"), nullable=False),
    Column("target", String(64), nullable=False),
    Column("supporter_name", Text, nullable=False),
    Column("supporter_email", Text, nullable=False),
    Column("supporter_city", Text, nullable=False),
    Column("supporter_country", String(2), nullable=False),
    Column("language", String(35), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("body", Text, nullable=False),
    Column("body_sha256", String(64), nullable=False),
    Column("submitted_at", UtcTime, nullable=False),
    Column("event", Text, nullable=False),
    Column("extra", JSON, nullable=False),
    Column("review_state", String(16), nullable=False),
    Column("flags", JSON, nullable=False),
    Column("review_note", Text, nullable=False, default=""),
    Column("reviewed_by", String(200), nullable=False, default=""),
    Column("reviewed_at", UtcTime),
    Column("imported_at", UtcTime, nullable=False),
    # The message's own secret: the ledger names the supporter's id and words only by
    # HMACs under it (`ref`, `body_mac`), so erasing it at retention erases the link.
    Column("link_key", String(64), nullable=False, default=""),
    Column("ref", String(64), nullable=False, default=""),
    Column("body_mac", String(64), nullable=False, default=""),
    Column("erased_at", UtcTime),  # when retention erased the supporter's data
    UniqueConstraint("source", "external_id", name="uq_message_source_external_id"),
    Index("ix_messages_case_state", "case_slug", "review_state"),
    Index("ix_messages_external_id", "external_id"),
)

message_recipients = Table(
    "message_recipients",
    metadata,
    Column("message_id", Id, ForeignKey("messages.id"), primary_key=True),
    Column("recipient_id", Id, ForeignKey("recipients.id"), primary_key=True),
    Column("bundle_id", String(64), ForeignKey("bundles.id")),
    Index("ix_message_recipients_due", "recipient_id", "bundle_id"),
    Index("ix_message_recipients_bundle", "bundle_id"),
)

bundles = Table(
    "bundles",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("recipient_id", Id, ForeignKey("recipients.id"), nullable=False),
    Column("period", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # planned | rendered | failed
    Column("message_count", Integer, nullable=False),
    Column("country_count", Integer, nullable=False, default=0),
    Column("pages", Integer, nullable=False, default=0),
    Column("pdf_path", Text, nullable=False, default=""),
    Column("pdf_sha256", String(64), nullable=False, default=""),
    Column("manifest_path", Text, nullable=False, default=""),
    Column("manifest_sha256", String(64), nullable=False, default=""),
    Column("template_version", String(64), nullable=False, default=""),
    Column("error", OutsideText, nullable=False, default=""),
    Column("created_at", UtcTime, nullable=False),
    Column("rendered_at", UtcTime),
    Column("erased_at", UtcTime),  # when retention erased the rendered files
    # A worker's claim, renewed by its heartbeat; seconds since the epoch by the database's
    # clock, so a worker whose own clock is wrong can neither keep nor steal a claim.
    Column("lease_owner", String(200), nullable=False, default=""),
    Column("lease_expires", Float, nullable=False, default=0.0),
    # renders started and never finished (a poison guard): reset when one finishes or fails
    Column("unfinished_renders", Integer, nullable=False, default=0),
    Index("ix_bundles_recipient_period", "recipient_id", "period"),
    Index("ix_bundles_state", "state"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("bundle_id", String(64), ForeignKey("bundles.id"), nullable=False),
    Column("recipient_id", Id, ForeignKey("recipients.id"), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("proof", Integer, nullable=False, default=0),
    Column("attempts", Integer, nullable=False, default=0),
    Column("message_id_header", Text, nullable=False, default=""),
    Column("provider_ref", OutsideText, nullable=False, default=""),
    Column("last_error", OutsideText, nullable=False, default=""),
    # what a person (or the fallback policy) decided about a delivery that did not arrive
    Column("resolution", Text, nullable=False, default=""),
    Column("lease_owner", String(200), nullable=False, default=""),
    Column("lease_expires", Float, nullable=False, default=0.0),
    Column("created_at", UtcTime, nullable=False),
    Column("updated_at", UtcTime, nullable=False),
    UniqueConstraint("bundle_id", "channel", name="uq_delivery_bundle_channel"),
    Index("ix_deliveries_state", "state"),
)

# When the next e-mail to a domain may start, by the database's clock (seconds since the
# epoch): one pace per domain shared by every worker, not one per worker process.
domain_pace = Table(
    "domain_pace",
    metadata,
    Column("domain", String(255), primary_key=True),
    Column("next_start", Float, nullable=False),
)

# The pieces of one delivery a provider tracks on its own: the e-mails of a split digest,
# the faxes of a long bundle, the envelopes of a prison bundle.
delivery_parts = Table(
    "delivery_parts",
    metadata,
    Column("delivery_id", String(64), ForeignKey("deliveries.id"), primary_key=True),
    Column("number", Integer, primary_key=True),  # 1-based
    Column("count", Integer, nullable=False),
    Column("ref", String(200), nullable=False),  # Message-ID, fax id, envelope id
    Column("state", String(16), nullable=False),
    Column("proof", Integer, nullable=False, default=0),
    Column("detail", OutsideText, nullable=False, default=""),
    Column("updated_at", UtcTime, nullable=False),
    Index("ix_delivery_parts_ref", "ref"),
)

ledger = Table(
    "ledger",
    metadata,
    Column("seq", Id, primary_key=True, autoincrement=False),
    Column("at", String(40), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("subject", String(200), nullable=False),  # "recipient:<case>/<slug>" is up to 138
    Column("payload", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
    Index("ix_ledger_subject", "subject"),
)
