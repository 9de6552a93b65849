"""Where a jobset's ready ranges begin: a hint that keeps PostgreSQL's scans short.

Ranges are claimed in ``start_event`` order through the index (jobset_id, state,
start_event). On PostgreSQL a claimed range leaves its ``ready`` index entry behind,
dead, until VACUUM removes it, and every later scan for ready ranges steps over all of
them: on a jobset of 65,536 ranges the scan for the next 16 read 50 index pages early in
a run and 150 later on, and the check "any ready range left?" paid the same.

So each dispatcher process remembers, per jobset, the lowest ``start_event`` its latest
claim got, and scans from there. Ranges below it can only be ready again after a
failure or a lease expiry; the hint is dropped every :data:`FLOOR_SECONDS` so those are
handed out within about a second. A scan from the floor that finds too few ranges is
followed by one from the jobset's start, so no answer is ever short because of the hint.
SQLite updates its indexes in place and needs none of this.
"""

from __future__ import annotations

import time
from weakref import WeakKeyDictionary

from sqlalchemy.engine import Engine

#: How long a floor is trusted before the next scan starts at the jobset's first range.
FLOOR_SECONDS = 1.0

# Per engine (a test may open several databases in one process): jobset -> (floor, since).
_floors: WeakKeyDictionary[Engine, dict[int, tuple[int, float]]] = WeakKeyDictionary()


def floor(engine: Engine, jobset_id: int | None) -> int:
    """The ``start_event`` to scan for ready ranges from (0: from the jobset's start)."""
    if jobset_id is None:
        return 0
    entry = _floors.get(engine, {}).get(jobset_id)
    if entry is None or time.monotonic() - entry[1] > FLOOR_SECONDS:
        return 0
    return entry[0]


def remember(engine: Engine, jobset_id: int, lowest_claimed: int, scanned_from: int) -> None:
    """Record a claim's lowest range; a scan from the start (``scanned_from`` 0) renews
    the hint's age."""
    floors = _floors.setdefault(engine, {})
    since = floors.get(jobset_id, (0, 0.0))[1]
    if scanned_from == 0:
        since = time.monotonic()
    floors[jobset_id] = (lowest_claimed, since)


def forget(engine: Engine, jobset_id: int) -> None:
    """Drop a jobset's hint (it ran out of ready ranges, or they came back)."""
    _floors.get(engine, {}).pop(jobset_id, None)
