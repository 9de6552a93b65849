"""Database.transaction and Database.statements: what commits when, and how failures
surface (store/database.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

from eventservice.errors import InvalidInput
from eventservice.store import Database


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    db = Database(db_url)
    db.upgrade()
    yield db
    db.dispose()


def _queues(db: Database) -> list[str]:
    with db.engine.connect() as conn:
        return list(conn.execute(text("SELECT name FROM queues ORDER BY name")).scalars())


def _add(conn, name: str, created_at: float | int = 0) -> None:  # type: ignore[no-untyped-def]
    conn.execute(
        text("INSERT INTO queues (name, params, created_at) VALUES (:n, '{}', :t)"),
        {"n": name, "t": created_at},
    )


def _add_misfit(conn) -> None:  # type: ignore[no-untyped-def]
    """A row whose values the database refuses: a name longer than its column
    (PostgreSQL), a number beyond 64 bits (SQLite, which does not check lengths)."""
    _add(conn, "x" * 10_000, 2**70)


def test_statements_commit_one_by_one_on_postgresql(database: Database) -> None:
    with database.statements() as conn:
        _add(conn, "A")
        seen_inside = _queues(database) if not database.is_sqlite else None
        _add(conn, "B")
    if database.is_sqlite:
        # One writer at a time: the block is one transaction, as transaction() is.
        assert seen_inside is None
    else:
        assert seen_inside == ["A"]  # committed before the block ended
    assert _queues(database) == ["A", "B"]


def test_a_failing_statement_keeps_what_came_before_it(database: Database) -> None:
    with (
        pytest.raises(InvalidInput, match=r"does not fit|out of range"),
        database.statements() as conn,
    ):
        _add(conn, "A")
        _add_misfit(conn)
    assert _queues(database) == ([] if database.is_sqlite else ["A"])


def test_a_failing_transaction_keeps_nothing(database: Database) -> None:
    with (
        pytest.raises(InvalidInput, match=r"does not fit|out of range"),
        database.transaction() as conn,
    ):
        _add(conn, "A")
        _add_misfit(conn)
    assert _queues(database) == []
