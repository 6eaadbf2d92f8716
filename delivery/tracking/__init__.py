"""Delivery tracking: bounce reports read, mapped to delivery states and kept as evidence."""

from __future__ import annotations

from delivery.tracking.dsn import (
    MAX_REPORT_BYTES,
    REDACTED,
    Action,
    BounceReport,
    NotABounce,
    RecipientStatus,
    Unparseable,
    classify,
    outcome,
    scrub,
)
from delivery.tracking.mailboxes import (
    Fetched,
    quarantine,
    read_imap,
    read_maildir,
    read_mbox,
)

__all__ = [
    "MAX_REPORT_BYTES",
    "REDACTED",
    "Action",
    "BounceReport",
    "Fetched",
    "NotABounce",
    "RecipientStatus",
    "Unparseable",
    "classify",
    "outcome",
    "quarantine",
    "read_imap",
    "read_maildir",
    "read_mbox",
    "scrub",
]
