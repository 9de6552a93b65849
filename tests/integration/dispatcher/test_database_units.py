"""Database.transaction and Database.statements: what commits when, and how failures
surface (store/database.py); the commit mode of a whole claim."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

from eventservice.dispatcher import Dispatcher, ranges
from eventservice.errors import InvalidInput
from eventservice.store import Database

from .conftest import T0, start_consumer, submit


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


def _synchronous_commit(conn) -> str:  # type: ignore[no-untyped-def]
    return str(conn.execute(text("SHOW synchronous_commit")).scalar())


@pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_a_claim_alone_commits_without_waiting_for_the_wal(dispatcher: Dispatcher) -> None:
    """On PostgreSQL a whole claim turns ``synchronous_commit`` off for its own
    transaction only: the statements after it on the same pooled connection (reports,
    job changes) commit durably. (SQLite claims in a transaction, as before.)"""
    submit(dispatcher, 4)
    job = start_consumer(dispatcher)
    ids = (job["PandaID"], job["jobsetID"], job["taskID"])
    with dispatcher.database.transaction() as conn:
        assert _synchronous_commit(conn) == "on"
        claim = ranges.first_claim(conn, *ids, n_ranges=2, now=T0)
        assert claim is not None and len(claim.rows) == 2
        assert _synchronous_commit(conn) == "off"  # what this transaction commits with
    with dispatcher.database.statements() as conn:
        claim = ranges.first_claim(conn, *ids, n_ranges=2, now=T0)
        assert claim is not None and len(claim.rows) == 2
        assert _synchronous_commit(conn) == "on"  # the next statement: durable again
