"""The migrations build exactly the schema the code declares, on SQLite and PostgreSQL,
and each step of 0004 (the holder index) goes both ways."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from eventservice.store import Database, migrate
from eventservice.store.schema import metadata

HOLDER_INDEX = "ix_event_ranges_panda_state"


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    db = Database(db_url)
    yield db
    db.dispose()


def _range_indexes(db: Database) -> set[str]:
    with db.engine.connect() as conn:
        return {index["name"] for index in inspect(conn).get_indexes("event_ranges")}


def test_the_migrations_build_the_declared_schema(database: Database) -> None:
    database.upgrade()
    with database.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []


def test_the_holder_index_is_dropped_and_comes_back_on_downgrade(database: Database) -> None:
    migrate.upgrade(database.engine, "0003")
    assert HOLDER_INDEX in _range_indexes(database)
    database.upgrade()
    assert HOLDER_INDEX not in _range_indexes(database)
    assert "ix_event_ranges_jobset_state_start" in _range_indexes(database)
    migrate.downgrade(database.engine, "0003")
    assert HOLDER_INDEX in _range_indexes(database)
