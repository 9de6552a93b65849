"""Plain SQL sent straight to the database driver, inside a SQLAlchemy transaction.

The dispatcher's hot path (getEventRanges, updateEventRanges) runs a few fixed statements
per request. Through SQLAlchemy Core each costs 100-450 us of CPU (building the
statement, cache-key lookup, parameter processing, result objects); through the DBAPI
cursor about a third of that. Errors are wrapped as SQLAlchemy wraps its own, so
:meth:`Database.transaction` maps them to the same answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, StatementError


class Driver:
    """The DBAPI cursor of a SQLAlchemy connection (same transaction, same connection)."""

    __slots__ = ("_conn", "_cursor", "_error", "is_postgresql")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.is_postgresql = conn.dialect.name == "postgresql"
        self._cursor = conn.connection.cursor()
        self._error = conn.dialect.loaded_dbapi.Error

    def rows(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        """Run one statement and return its rows (tuples)."""
        try:
            self._cursor.execute(sql, params)
            return list(self._cursor.fetchall()) if self._cursor.description else []
        except self._error as exc:
            raise self._wrap(exc, sql, params) from exc

    def run(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """Run one statement that returns no rows; the number of rows it changed."""
        try:
            self._cursor.execute(sql, params)
            return int(self._cursor.rowcount)
        except self._error as exc:
            raise self._wrap(exc, sql, params) from exc

    def many(self, sql: str, params: Sequence[Sequence[Any]]) -> int:
        """Run one statement for each parameter set; the total number of rows changed."""
        try:
            self._cursor.executemany(sql, params)
            return int(self._cursor.rowcount)
        except self._error as exc:
            raise self._wrap(exc, sql, None) from exc

    def _wrap(self, exc: Any, sql: str, params: Any) -> StatementError:
        dialect = self._conn.dialect
        lost = dialect.is_disconnect(exc, self._conn.connection.dbapi_connection, self._cursor)
        if lost:
            # As SQLAlchemy does for its own statements: never hand a dead connection
            # back to the pool.
            self._conn.invalidate(exc)
        return DBAPIError.instance(
            sql,
            params,
            exc,
            self._error,
            hide_parameters=True,
            connection_invalidated=lost,
            dialect=dialect,
        )
