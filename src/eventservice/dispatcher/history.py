"""The audit trail: one ``history`` row per state change."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Connection

from eventservice.store.driver import Driver
from eventservice.store.schema import history

#: The columns a history row is written with (``history_id`` is generated).
COLUMNS = (
    "entity",
    "entity_id",
    "from_state",
    "to_state",
    "attempt_nr",
    "panda_id",
    "at",
    "reason",
)
#: One state change: ``(entity_id, from, to, attempt_nr, panda_id, reason)``.
Change = tuple[int, str | None, str, int | None, int | None, str | None]


def record(
    conn: Connection,
    entity: str,
    changes: Iterable[tuple[int, str | None, str, int | None, int | None, str | None]],
    now: float | None = None,
) -> None:
    """Write state changes ``(entity_id, from, to, attempt_nr, panda_id, reason)``."""
    at = time.time() if now is None else now
    rows: list[dict[str, Any]] = [
        {
            "entity": entity,
            "entity_id": entity_id,
            "from_state": from_state,
            "to_state": to_state,
            "attempt_nr": attempt_nr,
            "panda_id": panda_id,
            "at": at,
            "reason": reason,
        }
        for entity_id, from_state, to_state, attempt_nr, panda_id, reason in changes
    ]
    if rows:
        conn.execute(insert(history), rows)


def record_ranges(db: Driver, changes: list[Change], now: float) -> None:
    """Write range changes in one ``executemany`` through the DBAPI cursor: for the
    paths that write thousands (a jobset's bulk moves) or write per request (reports),
    where :func:`record`'s statement building would cost more than the inserts."""
    mark = "%s" if db.is_postgresql else "?"
    db.many(
        f"INSERT INTO history ({', '.join(COLUMNS)}) VALUES ('range', {', '.join([mark] * 7)})",
        [(c[0], c[1], c[2], c[3], c[4], now, c[5]) for c in changes],
    )


def record_one(
    conn: Connection,
    entity: str,
    entity_id: int,
    from_state: str | None,
    to_state: str,
    *,
    attempt_nr: int | None = None,
    panda_id: int | None = None,
    reason: str | None = None,
    now: float | None = None,
) -> None:
    """Write a single state change (at ``now``: the dispatcher's clock)."""
    record(conn, entity, [(entity_id, from_state, to_state, attempt_nr, panda_id, reason)], now)
