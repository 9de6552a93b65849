"""updateEventRanges through the service object: refusals, repeats, retries (DESIGN §3, §5)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import select

from eventservice.dispatcher import Dispatcher, floors, lifecycle, ranges
from eventservice.errors import InvalidInput
from eventservice.store.schema import event_ranges

from .conftest import finished, ranges_of, report, snapshot, start_consumer, submit


def _one(d: Dispatcher, task_id: int, n: int = 1) -> tuple[dict, list[dict]]:
    job = start_consumer(d)
    got = d.get_event_ranges(job["PandaID"], job["jobsetID"], task_id, n)
    assert len(got) == n
    return job, got


def test_get_event_ranges_answer(dispatcher: Dispatcher) -> None:
    task_id = submit(dispatcher, 4)
    job, got = _one(dispatcher, task_id, 3)
    pid = job["PandaID"]
    file_id = ranges_of(dispatcher, task_id)[0]["fileID"]
    assert got == [
        {
            "eventRangeID": f"{task_id}-{pid}-{file_id}-{i}-1",
            "startEvent": i,
            "lastEvent": i,
            "LFN": "in.root",
            "GUID": "11111111-2222-3333-4444-555555555555",
            "scope": "user",
        }
        for i in range(3)
    ]
    states = {s: r["state"] for s, r in ranges_of(dispatcher, task_id).items()}
    assert states == {0: "sent", 1: "sent", 2: "sent", 3: "ready"}
    assert dispatcher.events_available(pid, None, None) == 1


def test_ranges_of_several_workers(dispatcher: Dispatcher) -> None:
    task_id = submit(dispatcher, 10, nEventsPerWorker=4)
    job, got = _one(dispatcher, task_id, 3)
    assert [(r["startEvent"], r["lastEvent"]) for r in got] == [(0, 3), (4, 7), (8, 9)]
    assert dispatcher.get_event_ranges(job["PandaID"], None, None, 5) == []


@pytest.mark.parametrize("n", [0, -1, 1001])
def test_n_ranges_out_of_bounds(dispatcher: Dispatcher, n: int) -> None:
    task_id = submit(dispatcher, 4)
    job = start_consumer(dispatcher)
    before = snapshot(dispatcher)
    with pytest.raises(InvalidInput):
        dispatcher.get_event_ranges(job["PandaID"], None, task_id, n)
    assert snapshot(dispatcher) == before


def test_refusals_answered_per_item_and_change_nothing(dispatcher: Dispatcher) -> None:
    task_id = submit(dispatcher, 4, nEsConsumers=2)
    a = start_consumer(dispatcher)
    b = start_consumer(dispatcher)
    a_ranges = dispatcher.get_event_ranges(a["PandaID"], None, None, 2)
    b_ranges = dispatcher.get_event_ranges(b["PandaID"], None, None, 1)
    # a's first range is finished, so finished -> running is illegal afterwards.
    assert report(dispatcher, finished(a_ranges[0]["eventRangeID"]))["Returns"] == [True]
    pid_a, pid_b = a["PandaID"], b["PandaID"]
    file_id = ranges_of(dispatcher, task_id)[0]["fileID"]
    b_id = b_ranges[0]["eventRangeID"]  # "<task>-<b>-<file>-2-1"
    stale = a_ranges[1]["eventRangeID"][:-1] + "7"  # attempt 7 of a range at attempt 1
    stolen = b_id.replace(f"-{pid_b}-", f"-{pid_a}-", 1)  # a reports b's range
    unknown = f"{task_id}-{pid_a}-{file_id}-999-1"
    before = snapshot(dispatcher)
    answer = report(
        dispatcher,
        {"eventRangeID": stale, "eventStatus": "finished", "path": "file:///x"},
        finished(stolen),
        {"eventRangeID": a_ranges[0]["eventRangeID"], "eventStatus": "running"},
        finished(unknown),
        {"eventRangeID": b_id, "eventStatus": "fatal", "errorCode": 65},
    )
    # the last entry (fatal for b's own range) is legal, the four before it are not
    assert answer["Returns"] == [False, False, False, False, True]
    errors = answer["Errors"]
    assert "stale attempt 7" in errors[0] and "attempt 1" in errors[0]
    assert f"held by PandaID {pid_b}" in errors[1]
    assert "illegal transition finished -> running" in errors[2]
    assert f"unknown event range {unknown}" == errors[3]
    assert errors[4] is None
    assert answer["Command"] == {str(pid_a): None, str(pid_b): None}
    after = snapshot(dispatcher)
    # only b's range moved
    changed = [
        (x["startEvent"], x["state"], y["state"])
        for x, y in zip(before[0], after[0], strict=True)
        if x != y
    ]
    assert changed == [(2, "sent", "fatal")]
    assert after[3] == before[3] + 1  # one history row: b's range


def test_all_refused_batch_changes_nothing(dispatcher: Dispatcher) -> None:
    task_id = submit(dispatcher, 4)
    _, got = _one(dispatcher, task_id, 2)
    rid = got[0]["eventRangeID"]
    before = snapshot(dispatcher)
    answer = report(
        dispatcher,
        {"eventRangeID": rid[:-1] + "2", "eventStatus": "failed"},
        {
            "eventRangeID": got[1]["eventRangeID"].replace("-1-", "-1-", 1)[:-1] + "3",
            "eventStatus": "fatal",
        },
    )
    assert answer["Returns"] == [False, False]
    assert all("stale attempt" in e for e in answer["Errors"])
    assert snapshot(dispatcher) == before


def test_finished_without_output_location_is_refused(dispatcher: Dispatcher) -> None:
    task_id = submit(dispatcher, 2)
    _, got = _one(dispatcher, task_id)
    before = snapshot(dispatcher)
    answer = report(dispatcher, {"eventRangeID": got[0]["eventRangeID"], "eventStatus": "finished"})
    assert answer["Returns"] == [False]
    assert "output location" in answer["Errors"][0]
    assert snapshot(dispatcher) == before


def test_ready_range_cannot_be_reported(dispatcher: Dispatcher) -> None:
    # A range that was never sent (still ready, attempt 1, no holder) refuses reports.
    task_id = submit(dispatcher, 2)
    job, _ = _one(dispatcher, task_id)
    pid = job["PandaID"]
    file_id = ranges_of(dispatcher, task_id)[1]["fileID"]
    before = snapshot(dispatcher)
    answer = report(dispatcher, finished(f"{task_id}-{pid}-{file_id}-1-1"))
    assert answer["Returns"] == [False]
    assert answer["Errors"][0]
    assert snapshot(dispatcher) == before


@pytest.mark.parametrize("status", ["running", "transferring", "finished", "fatal"])
def test_repeated_identical_report_is_true_and_changes_nothing(
    dispatcher: Dispatcher, status: str
) -> None:
    task_id = submit(dispatcher, 2)
    _, got = _one(dispatcher, task_id)
    entry = (
        finished(got[0]["eventRangeID"])
        if status == "finished"
        else {"eventRangeID": got[0]["eventRangeID"], "eventStatus": status}
    )
    assert report(dispatcher, entry) == {
        "Returns": [True],
        "Errors": [None],
        "Command": {got[0]["eventRangeID"].split("-")[1]: None},
    }
    before = snapshot(dispatcher)
    again = report(dispatcher, entry)
    assert again["Returns"] == [True]
    assert again["Errors"] == [None]
    assert snapshot(dispatcher) == before


def test_repeated_failed_report_of_exhausted_range_is_true(dispatcher: Dispatcher) -> None:
    """docs/protocol.md: a repeated report of the state a range already has is ``true``."""
    task_id = submit(dispatcher, 2, esMaxAttempt=1)
    _, got = _one(dispatcher, task_id)
    entry = {"eventRangeID": got[0]["eventRangeID"], "eventStatus": "failed", "errorCode": 65}
    assert report(dispatcher, entry)["Returns"] == [True]
    assert ranges_of(dispatcher, task_id)[0]["state"] == "failed"
    before = snapshot(dispatcher)
    again = report(dispatcher, entry)
    assert again["Returns"] == [True], again["Errors"]
    assert snapshot(dispatcher) == before


def test_repeated_report_after_done_is_true(dispatcher: Dispatcher) -> None:
    task_id = submit(dispatcher, 1)
    _, got = _one(dispatcher, task_id)
    entry = finished(got[0]["eventRangeID"])
    assert report(dispatcher, entry)["Returns"] == [True]
    assert ranges_of(dispatcher, task_id)[0]["state"] == "done"
    before = snapshot(dispatcher)
    assert report(dispatcher, entry)["Returns"] == [True]
    assert snapshot(dispatcher) == before


def test_failed_is_retried_until_es_max_attempt(dispatcher: Dispatcher) -> None:
    task_id = submit(dispatcher, 2, esMaxAttempt=3)
    job = start_consumer(dispatcher)
    pid = job["PandaID"]
    for attempt in (1, 2, 3):
        got = dispatcher.get_event_ranges(pid, None, None, 1)
        assert [r["startEvent"] for r in got] == [0]
        assert got[0]["eventRangeID"].endswith(f"-0-{attempt}")
        answer = report(
            dispatcher,
            {"eventRangeID": got[0]["eventRangeID"], "eventStatus": "failed", "errorCode": 65},
        )
        assert answer["Returns"] == [True]
        r0 = ranges_of(dispatcher, task_id)[0]
        assert r0["failures"] == attempt
        if attempt < 3:
            assert (r0["state"], r0["attemptNr"]) == ("ready", attempt + 1)
        else:
            assert (r0["state"], r0["attemptNr"]) == ("failed", 3)
    # range 0 stays failed: the consumer now gets range 1 only, then nothing
    got = dispatcher.get_event_ranges(pid, None, None, 5)
    assert [r["startEvent"] for r in got] == [1]
    assert report(dispatcher, finished(got[0]["eventRangeID"]))["Returns"] == [True]
    assert dispatcher.get_event_ranges(pid, None, None, 5) == []
    assert ranges_of(dispatcher, task_id)[0]["state"] == "failed"
    assert ranges_of(dispatcher, task_id)[0]["attemptNr"] == 3


def test_fatal_is_never_retried(dispatcher: Dispatcher) -> None:
    task_id = submit(dispatcher, 1, esMaxAttempt=5)
    job, got = _one(dispatcher, task_id)
    answer = report(dispatcher, {"eventRangeID": got[0]["eventRangeID"], "eventStatus": "fatal"})
    assert answer["Returns"] == [True]
    r0 = ranges_of(dispatcher, task_id)[0]
    assert (r0["state"], r0["attemptNr"]) == ("fatal", 1)
    assert dispatcher.get_event_ranges(job["PandaID"], None, None, 5) == []
    # the only range ended fatal: nothing to merge, the jobset and task fail
    summary = dispatcher.task(task_id)
    assert summary["jobsets"] == {"failed": 1}
    assert summary["state"] == "failed"
    assert [j for j in dispatcher.jobs() if j["eventService"] == 2] == []
    # a later failed/finished report for it is refused
    late = report(dispatcher, finished(got[0]["eventRangeID"]))
    assert late["Returns"] == [False]
    assert "illegal transition fatal -> finished" in late["Errors"][0]


def test_preempted_release_does_not_use_up_attempts(dispatcher: Dispatcher) -> None:
    task_id = submit(dispatcher, 1, esMaxAttempt=1)
    job = start_consumer(dispatcher)
    for attempt in (1, 2, 3, 4):
        got = dispatcher.get_event_ranges(job["PandaID"], None, None, 1)
        assert got[0]["eventRangeID"].endswith(f"-{attempt}")
        answer = report(
            dispatcher,
            {"eventRangeID": got[0]["eventRangeID"], "eventStatus": "failed", "errorCode": 1700},
        )
        assert answer["Returns"] == [True]
        r0 = ranges_of(dispatcher, task_id)[0]
        assert (r0["state"], r0["attemptNr"], r0["failures"]) == ("ready", attempt + 1, 0)
    # a real failure now uses the single allowed attempt
    got = dispatcher.get_event_ranges(job["PandaID"], None, None, 1)
    report(dispatcher, {"eventRangeID": got[0]["eventRangeID"], "eventStatus": "failed"})
    r0 = ranges_of(dispatcher, task_id)[0]
    assert (r0["state"], r0["failures"]) == ("failed", 1)


def test_error_code_and_diag_are_recorded(dispatcher: Dispatcher) -> None:
    task_id = submit(dispatcher, 1, esMaxAttempt=1)
    _, got = _one(dispatcher, task_id)
    report(
        dispatcher,
        {
            "eventRangeID": got[0]["eventRangeID"],
            "eventStatus": "failed",
            "errorCode": "1234",
            "errorDiag": "segfault",
        },
    )
    r0 = ranges_of(dispatcher, task_id)[0]
    assert (r0["errorCode"], r0["errorDiag"]) == (1234, "segfault")


def test_version_1_zip_records_bundle(dispatcher: Dispatcher) -> None:
    task_id = submit(dispatcher, 3)
    _, got = _one(dispatcher, task_id, 2)
    answer = report(
        dispatcher,
        {
            "zipFile": {
                "lfn": "b.tar",
                "path": "file:///os/b.tar",
                "objstoreID": 1,
                "fsize": 10,
                "adler32": "ABC",
                "numEvents": 2,
                "pathConvention": 1000,
            },
            "eventRanges": [
                {"eventRangeID": r["eventRangeID"], "eventStatus": "finished"} for r in got
            ],
        },
        version=1,
    )
    assert answer["Returns"] == [True, True]
    states = {s: r["state"] for s, r in ranges_of(dispatcher, task_id).items()}
    assert states == {0: "finished", 1: "finished", 2: "ready"}


def test_mixed_batch_applies_each_transition_with_its_history(dispatcher: Dispatcher) -> None:
    """One batch with every kind of report: each range gets its own columns and history."""
    task_id = submit(dispatcher, 6, esMaxAttempt=3)
    job = start_consumer(dispatcher)
    pid = job["PandaID"]
    got = dispatcher.get_event_ranges(pid, None, None, 6)
    ids = [r["eventRangeID"] for r in got]
    stale = ids[5][: ids[5].rindex("-")] + "-7"
    answer = report(
        dispatcher,
        finished(ids[0], cpuConsumptionTime=1.5, wallTime=2),
        {"eventRangeID": ids[1], "eventStatus": "failed", "errorCode": 65, "errorDiag": "boom"},
        {"eventRangeID": ids[2], "eventStatus": "running"},
        {"eventRangeID": ids[3], "eventStatus": "fatal", "errorCode": 66},
        {"eventRangeID": ids[4], "eventStatus": "failed", "errorCode": 1700},
        finished(stale),
    )
    assert answer["Returns"] == [True, True, True, True, True, False]
    assert "stale attempt 7" in answer["Errors"][5]
    rows = ranges_of(dispatcher, task_id)
    picked = {
        n: (r["state"], r["attemptNr"], r["failures"], r["errorCode"]) for n, r in rows.items()
    }
    assert picked == {
        0: ("finished", 1, 0, None),
        1: ("ready", 2, 1, 65),
        2: ("running", 1, 0, None),
        3: ("fatal", 1, 0, 66),
        4: ("ready", 2, 0, 1700),
        5: ("sent", 1, 0, None),
    }
    assert (rows[0]["path"], rows[0]["fsize"]) == (f"file:///os/{ids[0]}.out", 100)
    assert rows[1]["errorDiag"] == "boom"
    with dispatcher.database.transaction() as conn:
        cpu = conn.execute(select(event_ranges.c.cpu_seconds, event_ranges.c.wall_seconds))
        assert sorted(cpu.all(), key=str) == [(1.5, 2.0)] + [(None, None)] * 5
    everything = dispatcher.history(entity="range", limit=100)
    by_start = {e: n for n, e in enumerate(sorted({h["entityID"] for h in everything}))}
    history = [
        (h["entityID"], h["from"], h["to"], h["attemptNr"], h["reason"])
        for h in everything
        if h["from"] != "ready" or h["to"] != "sent"
    ]
    assert sorted((by_start[e], f, t, a, reason) for e, f, t, a, reason in history) == [
        (0, "sent", "finished", 1, None),
        (1, "failed", "ready", 2, "retry"),
        (1, "sent", "failed", 1, "boom"),
        (2, "sent", "running", 1, None),
        (3, "sent", "fatal", 1, None),
        (4, "failed", "ready", 2, "retry"),
        (4, "sent", "failed", 1, None),
    ]
    sent = [h for h in everything if h["to"] == "sent"]
    assert len(sent) == 6 and {h["PandaID"] for h in sent} == {pid}


# PostgreSQL only: SQLite has no row locks (one writer at a time).
@pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_a_short_answer_does_not_wait_for_a_locked_jobset(dispatcher: Dispatcher) -> None:
    """getEventRanges leaves the jobset refresh to whoever holds the jobset (e.g. the
    request moving a large jobset to merging)."""
    submit(dispatcher, 2)
    job = start_consumer(dispatcher)
    with dispatcher.database.engine.connect() as other, other.begin():
        other.exec_driver_sql(
            "SELECT 1 FROM jobsets WHERE jobset_id = %s FOR UPDATE", (int(job["jobsetID"]),)
        )
        done = threading.Event()
        answers: list[Any] = []

        def ask() -> None:
            answers.append(dispatcher.get_event_ranges(job["PandaID"], None, None, 5))
            done.set()

        threading.Thread(target=ask, daemon=True).start()
        assert done.wait(10), "getEventRanges waited for the jobset lock"
    assert [r["startEvent"] for r in answers[0]] == [0, 1]


def test_short_answers_refresh_their_jobset_at_most_once_a_second(
    dispatcher: Dispatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every consumer of a jobset that runs dry asks again at about the same moment: one
    refresh per process and second serves them all, and each still drops the floor."""
    submit(dispatcher, 2, nEsConsumers=2)
    job = start_consumer(dispatcher)
    pid, jobset = job["PandaID"], int(job["jobsetID"])
    refreshed: list[int] = []
    refresh = lifecycle.refresh_jobset

    def counted(conn: Any, jobset_id: int, now: float, **options: Any) -> None:
        refreshed.append(jobset_id)
        refresh(conn, jobset_id, now, **options)

    monkeypatch.setattr(lifecycle, "refresh_jobset", counted)
    assert len(dispatcher.get_event_ranges(pid, None, None, 2)) == 2  # whole: no refresh
    assert refreshed == []
    for _ in range(3):
        assert dispatcher.get_event_ranges(pid, None, None, 2) == []
        assert floors.floor(dispatcher.database.engine, jobset) == 0
    assert refreshed == [jobset]
    # That one refresh did what a refresh does: the queued second consumer is closed.
    states = {j["PandaID"]: j["state"] for j in dispatcher.jobs(task_id=job["taskID"])}
    assert sorted(states.values()) == ["closed", "running"]
    monkeypatch.setattr(ranges, "SHORT_REFRESH_SECONDS", 0.0)
    assert dispatcher.get_event_ranges(pid, None, None, 2) == []
    assert refreshed == [jobset, jobset]


def test_task_summary_counts_ranges_events_attempts_and_cpu(dispatcher: Dispatcher) -> None:
    task_id = submit(dispatcher, 6, nEventsPerWorker=2, esMaxAttempt=5)
    job = start_consumer(dispatcher)
    first, second, third = dispatcher.get_event_ranges(job["PandaID"], None, None, 3)
    report(
        dispatcher,
        finished(first["eventRangeID"], cpuConsumptionTime=1.5),
        {"eventRangeID": second["eventRangeID"], "eventStatus": "failed", "errorCode": 1220},
    )
    [again] = dispatcher.get_event_ranges(job["PandaID"], None, None, 1)
    assert again["eventRangeID"].endswith("-2")  # the failed range, its second attempt
    report(dispatcher, finished(again["eventRangeID"], cpuConsumptionTime=2.0))
    summary = dispatcher.task(task_id)
    assert summary["ranges"] == {"finished": 2, "sent": 1}
    assert summary["events"] == {"finished": 4, "sent": 2}
    assert summary["attempts"] == 4 and summary["rangesRedispatched"] == 1
    assert summary["cpuSecondsInOutput"] == pytest.approx(3.5)
    assert third["eventRangeID"].endswith("-1")
