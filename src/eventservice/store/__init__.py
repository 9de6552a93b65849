"""Persistence: SQL schema, engine set-up, migrations and named queries (SQLite, PostgreSQL)."""

from eventservice.store.database import Database

__all__ = ["Database"]
