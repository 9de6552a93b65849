"""Jobsets concluded in the background: a report is answered once it has committed, the
merge follows, and nothing that asks for ranges in between makes the move itself."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from eventservice.dispatcher import Dispatcher, lifecycle
from eventservice.dispatcher.concluder import Concluder
from eventservice.server.app import create_app

from .conftest import finished, report, start_consumer, submit


def _one_range_held(d: Dispatcher) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """A one-range task whose range a consumer holds: its report ends the jobset."""
    task_id = submit(d, 1)
    job = start_consumer(d)
    (held,) = d.get_event_ranges(job["PandaID"], None, None, 1)
    return task_id, job, held


def _merges(d: Dispatcher, task_id: int) -> list[dict[str, Any]]:
    return [j for j in d.jobs(task_id=task_id) if j["eventService"] == 2]


def _concluded(d: Dispatcher, task_id: int) -> bool:
    jobsets = d.task(task_id)["jobsets"]
    if jobsets == {"running": 1}:
        assert _merges(d, task_id) == []
        assert {r["state"] for r in d.event_ranges(task_id=task_id)} <= {"sent", "finished"}
        return False
    assert jobsets == {"merging": 1}
    assert len(_merges(d, task_id)) == 1
    assert {r["state"] for r in d.event_ranges(task_id=task_id)} == {"done"}
    return True


def test_a_report_is_answered_before_its_jobset_is_concluded(dispatcher: Dispatcher) -> None:
    # Not started yet: what the report hands over waits, so the answer came without it.
    dispatcher.concluder = Concluder(dispatcher.database, dispatcher.clock)
    task_id, _job, held = _one_range_held(dispatcher)
    assert report(dispatcher, finished(held["eventRangeID"]))["Returns"] == [True]
    assert not _concluded(dispatcher, task_id)
    dispatcher.concluder.start()
    assert dispatcher.concluder.wait_idle(30)
    assert _concluded(dispatcher, task_id)
    dispatcher.stop_concluder(30)


def test_an_empty_answer_leaves_the_jobsets_end_to_the_concluder(dispatcher: Dispatcher) -> None:
    """getEventRanges ends no range: its refresh must not make a large jobset's move in
    the request that the concluder is about to make anyway."""
    dispatcher.concluder = Concluder(dispatcher.database, dispatcher.clock)
    task_id, job, held = _one_range_held(dispatcher)
    report(dispatcher, finished(held["eventRangeID"]))
    assert dispatcher.get_event_ranges(job["PandaID"], None, None, 4) == []
    assert not _concluded(dispatcher, task_id)
    dispatcher.concluder.start()
    dispatcher.stop_concluder(30)  # concludes what was handed over first
    assert _concluded(dispatcher, task_id)


def test_the_consumers_end_concludes_a_jobset_the_concluder_never_got_to(
    dispatcher: Dispatcher,
) -> None:
    """A dispatcher stopped before its concluder ran: the consumer's updateJob does it."""
    dispatcher.concluder = Concluder(dispatcher.database, dispatcher.clock)
    task_id, job, held = _one_range_held(dispatcher)
    report(dispatcher, finished(held["eventRangeID"]))
    dispatcher.concluder = None  # lost with its process
    assert dispatcher.update_job(job["PandaID"], "finished", {}) == "NULL"
    assert _concluded(dispatcher, task_id)


def test_after_stop_reports_conclude_before_their_answer(dispatcher: Dispatcher) -> None:
    thread = dispatcher.start_concluder()
    dispatcher.stop_concluder(30)
    assert not thread.is_alive()
    assert dispatcher.concluder is None
    task_id, _job, held = _one_range_held(dispatcher)
    report(dispatcher, finished(held["eventRangeID"]))
    assert _concluded(dispatcher, task_id)


def test_what_is_handed_over_while_stopping_is_concluded_at_once(dispatcher: Dispatcher) -> None:
    """A request that took the concluder before the dispatcher dropped it still gets its
    jobset concluded: by itself, since the thread is ending."""
    thread = Concluder(dispatcher.database, dispatcher.clock)
    thread.start()
    thread.stop(30)
    dispatcher.concluder = thread
    task_id, _job, held = _one_range_held(dispatcher)
    report(dispatcher, finished(held["eventRangeID"]))
    assert _concluded(dispatcher, task_id)


def test_a_failed_conclusion_does_not_end_the_thread(
    dispatcher: Dispatcher, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    conclude = lifecycle.conclude_jobset
    calls: list[int] = []

    def broken_once(conn: Any, jobset_id: int, now: float) -> None:
        calls.append(jobset_id)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        conclude(conn, jobset_id, now)

    monkeypatch.setattr(lifecycle, "conclude_jobset", broken_once)
    thread = dispatcher.start_concluder()
    task_id, job, held = _one_range_held(dispatcher)
    with caplog.at_level(logging.ERROR, logger="eventservice.dispatcher.concluder"):
        report(dispatcher, finished(held["eventRangeID"]))
        assert thread.wait_idle(30)
    assert "conclusion failed" in caplog.text
    assert not _concluded(dispatcher, task_id)
    assert thread.is_alive()
    thread.submit([int(job["jobsetID"])])
    assert thread.wait_idle(30)
    assert _concluded(dispatcher, task_id)
    dispatcher.stop_concluder(30)


def test_the_server_concludes_in_the_background_on_postgresql_only(
    dispatcher: Dispatcher, db_url: str
) -> None:
    """SQLite runs one transaction at a time: there a report concludes as before."""
    with TestClient(create_app(dispatcher, reaper=False)):
        running = dispatcher.concluder
        if db_url.startswith("postgresql"):
            assert running is not None and running.is_alive()
        else:
            assert running is None
    assert dispatcher.concluder is None
    if running is not None:
        assert not running.is_alive()
