"""A jobset's last ranges: the report that ends the last held range moves it to merging,
whatever order concurrent reports commit in, and no report waits for the jobset's lock
while other ranges are still held (lifecycle.conclude_jobset)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from eventservice.dispatcher import Dispatcher, lifecycle, ranges, updates

from .conftest import finished, report, start_consumer, submit

# PostgreSQL only: SQLite runs one transaction at a time, so there is nothing to interleave.
pg_only = pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


def _two_consumers_one_range_each(d: Dispatcher) -> tuple[int, list[dict[str, Any]]]:
    """A two-range task whose ranges are held by two consumers, one each."""
    task_id = submit(d, 2, nEsConsumers=2)
    held = []
    for node in ("a", "b"):
        job = start_consumer(d, node=node)
        held += d.get_event_ranges(job["PandaID"], None, None, 1)
    assert len(held) == 2
    return task_id, held


def _merges(d: Dispatcher, task_id: int) -> list[dict[str, Any]]:
    return [j for j in d.jobs(task_id=task_id) if j["eventService"] == 2]


def test_the_report_that_ends_the_last_held_range_starts_the_merge(dispatcher: Dispatcher) -> None:
    task_id, (first, second) = _two_consumers_one_range_each(dispatcher)
    assert report(dispatcher, finished(first["eventRangeID"]))["Returns"] == [True]
    assert dispatcher.task(task_id)["jobsets"] == {"running": 1}
    assert _merges(dispatcher, task_id) == []
    assert report(dispatcher, finished(second["eventRangeID"]))["Returns"] == [True]
    assert dispatcher.task(task_id)["jobsets"] == {"merging": 1}
    assert len(_merges(dispatcher, task_id)) == 1


def _apply(d: Dispatcher, conn: Any, entry: dict[str, Any]) -> list[int]:
    outcome = updates.apply_reports(conn, ranges.parse_batch([entry], 0, 100), d.clock())
    assert outcome.applied == [True]
    return outcome.drained


@pg_only
def test_reports_committing_in_turn_start_one_merge(dispatcher: Dispatcher) -> None:
    """Both reports are applied before either commits; the first one's check runs while
    the second is still open, so it sees that range held and leaves the jobset; the
    second one's check, after its own commit, sees both and moves the jobset."""
    task_id, (first, second) = _two_consumers_one_range_each(dispatcher)
    engine = dispatcher.database.engine
    with engine.connect() as a, engine.connect() as b:
        a.begin()
        b.begin()
        drained_a = _apply(dispatcher, a, finished(first["eventRangeID"]))
        drained_b = _apply(dispatcher, b, finished(second["eventRangeID"]))
        assert drained_a == drained_b and len(drained_a) == 1
        a.commit()
        with dispatcher.database.transaction() as conn:
            lifecycle.conclude_jobset(conn, drained_a[0], dispatcher.clock())
        assert dispatcher.task(task_id)["jobsets"] == {"running": 1}
        b.commit()
    for _ in range(2):  # the second one's check, then a late repeat of the first's
        with dispatcher.database.transaction() as conn:
            lifecycle.conclude_jobset(conn, drained_b[0], dispatcher.clock())
    assert dispatcher.task(task_id)["jobsets"] == {"merging": 1}
    assert len(_merges(dispatcher, task_id)) == 1
    assert {r["state"] for r in dispatcher.event_ranges(task_id=task_id)} == {"done"}


@pg_only
def test_a_report_does_not_wait_for_the_jobset_while_ranges_are_held(
    dispatcher: Dispatcher,
) -> None:
    """Before, each report after the jobset's last ready range waited for its lock, so
    the last reports of a large jobset ran one after another."""
    task_id, (first, second) = _two_consumers_one_range_each(dispatcher)
    jobset_id = dispatcher.jobs(task_id=task_id)[0]["jobsetID"]
    answers: list[Any] = []
    with dispatcher.database.engine.connect() as other, other.begin():
        other.exec_driver_sql(
            "SELECT 1 FROM jobsets WHERE jobset_id = %s FOR UPDATE", (int(jobset_id),)
        )
        done = threading.Event()

        def send() -> None:
            answers.append(report(dispatcher, finished(first["eventRangeID"])))
            done.set()

        threading.Thread(target=send, daemon=True).start()
        assert done.wait(10), "updateEventRanges waited for the jobset lock"
    assert answers[0]["Returns"] == [True]
    assert report(dispatcher, finished(second["eventRangeID"]))["Returns"] == [True]
    assert dispatcher.task(task_id)["jobsets"] == {"merging": 1}
