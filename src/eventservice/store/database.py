"""Engine set-up for SQLite (WAL, busy timeout, ``BEGIN IMMEDIATE``) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)

from eventservice.errors import InvalidInput, StoreError

DEFAULT_SQLITE_FILE = "eventservice.sqlite"
#: Key of the PostgreSQL advisory lock held while reaping expired leases.
REAPER_LOCK_KEY = 0x45565352  # "EVSR"


def normalise_url(url: str) -> str:
    """Accept ``postgresql://`` and plain paths; pick the psycopg 3 driver for PostgreSQL."""
    if "://" not in url:
        return f"sqlite:///{Path(url).resolve()}"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


@contextmanager
def _mapped_errors() -> Iterator[None]:
    """Database failures as :class:`StoreError`, values that do not fit as
    :class:`InvalidInput` (the request's fault: a 4xx / StatusCode 50 rather than 503)."""
    try:
        yield
    except DataError as exc:
        # A value the column cannot hold (too long, out of range, NUL byte): its
        # statement changed nothing.
        raise InvalidInput(f"a value does not fit the database: {exc.orig}") from exc
    except OverflowError as exc:  # SQLite: integer beyond 64 bits, raised unwrapped
        raise InvalidInput(f"a number is out of range: {exc}") from exc
    except OperationalError as exc:
        raise StoreError(f"database unavailable: {exc.orig}") from exc
    except SQLAlchemyError as exc:
        if isinstance(exc.__cause__, StoreError):
            raise
        raise StoreError(f"database error: {exc}") from exc


class Database:
    """A database the dispatcher keeps its bookkeeping in."""

    def __init__(self, url: str, pool_size: int = 40) -> None:
        self.url = normalise_url(url)
        try:
            parsed = make_url(self.url)
        except ArgumentError as exc:
            raise InvalidInput(f"cannot parse database URL {url!r}") from exc
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        try:
            if self.is_sqlite:
                self.engine = self._sqlite_engine()
            elif parsed.get_backend_name() == "postgresql":
                # Pool as large as Starlette's thread pool (40 requests at once). No pre-ping:
                # a connection lost to a database restart fails one request
                # (503, which pilots retry) and SQLAlchemy then renews the whole pool.
                self.engine = create_engine(self.url, pool_size=pool_size, max_overflow=10)
            else:
                raise InvalidInput(
                    f"unsupported database {parsed.get_backend_name()!r}: "
                    "use sqlite:///PATH or postgresql://USER:PASS@HOST/DB"
                )
        except NoSuchModuleError as exc:
            raise StoreError(
                f"no driver for {url!r}: pip install 'eventservice[postgres]'"
            ) from exc
        except ModuleNotFoundError as exc:
            raise StoreError(
                f"missing driver {exc.name!r} for {url!r}: pip install 'eventservice[postgres]'"
            ) from exc
        # One writer per process on SQLite; other processes wait on busy_timeout.
        self._write_lock = threading.Lock() if self.is_sqlite else None

    def _sqlite_engine(self) -> Engine:
        engine = create_engine(self.url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            # Let SQLAlchemy's begin() decide transactions, not the driver.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection):  # type: ignore[no-untyped-def]
            # Take the write lock up front: no deadlock between two upgrading readers.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One atomic unit of work; database failures surface as :class:`StoreError`."""
        lock = self._write_lock
        if lock is not None:
            lock.acquire()
        try:
            with _mapped_errors(), self.engine.begin() as connection:
                yield connection
        finally:
            if lock is not None:
                lock.release()

    @contextmanager
    def statements(self) -> Iterator[Connection]:
        """A connection on which each statement commits on its own (PostgreSQL's
        autocommit), for work whose every statement is a whole unit: no round trips for
        BEGIN and COMMIT. On SQLite the same as :meth:`transaction`."""
        if self.is_sqlite:
            with self.transaction() as connection:
                yield connection
            return
        with _mapped_errors(), self.engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            yield connection

    @contextmanager
    def reaper_lock(self, connection: Connection) -> Iterator[bool]:
        """Whether this process may reap now; on PostgreSQL one process at a time."""
        if self.is_sqlite:
            yield True
            return
        got = connection.execute(
            text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": REAPER_LOCK_KEY}
        ).scalar()
        yield bool(got)

    def upgrade(self) -> None:
        """Create or migrate the schema."""
        from eventservice.store import migrate

        try:
            migrate.upgrade(self.engine)
        except OperationalError as exc:
            raise StoreError(f"cannot migrate database: {exc.orig}") from exc

    def warm_up(self, connections: int) -> None:
        """Open ``connections`` pooled connections now rather than on the first requests.

        A dispatcher started under load (pilots waiting for it) would otherwise open them
        all at once inside its first requests. Failures are left to those requests.
        """
        if self.is_sqlite:
            return
        opened = []
        try:
            for _ in range(connections):
                opened.append(self.engine.connect())
        except SQLAlchemyError:
            pass
        finally:
            for connection in opened:
                connection.close()

    def dispose(self) -> None:
        self.engine.dispose()
