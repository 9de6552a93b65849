"""The audit trail: one ``history`` row per state change."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Connection

from eventservice.store.schema import history


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
