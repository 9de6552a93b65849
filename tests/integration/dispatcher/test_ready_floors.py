"""The per-process floor under which claims do not look for ready ranges (PostgreSQL).

The floor is a hint only: it may delay a range that came back to ready by about a
second, never shorten an answer or lose a range. On SQLite it is never used, and the
same tests check that the answers are the same there.
"""

from __future__ import annotations

from typing import Any

import pytest

from eventservice.dispatcher import Dispatcher, floors

from .conftest import report, start_consumer, submit


def _take(d: Dispatcher, job: dict[str, Any], n: int) -> list[int]:
    got = d.get_event_ranges(job["PandaID"], int(job["jobsetID"]), job["taskID"], n)
    return [r["startEvent"] for r in got]


def _stale_floor(d: Dispatcher, job: dict[str, Any], start_event: int) -> None:
    """As if this process's latest claim, a moment ago, began at ``start_event``."""
    floors.remember(d.database.engine, int(job["jobsetID"]), start_event, 0)


def test_a_floor_above_ready_ranges_never_shortens_an_answer(dispatcher: Dispatcher) -> None:
    submit(dispatcher, 6)
    job = start_consumer(dispatcher)
    assert _take(dispatcher, job, 2) == [0, 1]
    _stale_floor(dispatcher, job, 4)
    # from the floor: 4 and 5; then from the start for the rest, in event order
    assert _take(dispatcher, job, 4) == [2, 3, 4, 5]
    assert _take(dispatcher, job, 4) == []


def test_a_range_back_below_the_floor_is_handed_out_once_the_floor_expires(
    dispatcher: Dispatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    submit(dispatcher, 6, esMaxAttempt=3)
    job = start_consumer(dispatcher)
    got = dispatcher.get_event_ranges(job["PandaID"], None, None, 1)
    answer = report(dispatcher, {"eventRangeID": got[0]["eventRangeID"], "eventStatus": "failed"})
    assert answer["Returns"] == [True]
    # another dispatcher process claimed from event 3 on and has not seen the failure
    _stale_floor(dispatcher, job, 3)
    first = _take(dispatcher, job, 1)
    if dispatcher.database.is_sqlite:
        assert first == [0]  # no floors on SQLite
        return
    assert first == [3]  # the hint holds for up to FLOOR_SECONDS
    monkeypatch.setattr(floors, "FLOOR_SECONDS", -1.0)
    assert _take(dispatcher, job, 1) == [0]  # expired: the scan starts at the jobset's start


def test_a_refresh_drops_the_floor(dispatcher: Dispatcher) -> None:
    submit(dispatcher, 4, esMaxAttempt=3)
    job = start_consumer(dispatcher)
    got = dispatcher.get_event_ranges(job["PandaID"], None, None, 2)
    _stale_floor(dispatcher, job, 3)
    # a failure in this process returns the range and refreshes the jobset
    report(dispatcher, {"eventRangeID": got[0]["eventRangeID"], "eventStatus": "failed"})
    assert floors.floor(dispatcher.database.engine, int(job["jobsetID"])) == 0
    assert _take(dispatcher, job, 1) == [0]
