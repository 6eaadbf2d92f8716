"""The only place that speaks SQL. SQLite (default) and PostgreSQL behind one interface."""

from delivery.store.reports import Store

__all__ = ["Store"]
