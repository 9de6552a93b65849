"""Leases (DESIGN §4) and consumer management, with a fake clock: no sleeping."""

from __future__ import annotations

from eventservice.dispatcher import Dispatcher

from .conftest import Clock, finished, ranges_of, report, snapshot, start_consumer, submit

LEASE = 60  # the ``dispatcher`` fixture's lease_seconds


def _consumers(d: Dispatcher, task_id: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job in d.jobs(task_id=task_id):
        if job["eventService"] == 1:
            counts[job["state"]] = counts.get(job["state"], 0) + 1
    return counts


def test_expired_lease_redispatches_and_refuses_late_result(
    dispatcher: Dispatcher, clock: Clock
) -> None:
    task_id = submit(dispatcher, 3, esMaxAttempt=5)
    a = start_consumer(dispatcher)
    got = dispatcher.get_event_ranges(a["PandaID"], None, None, 2)
    assert [r["startEvent"] for r in got] == [0, 1]
    clock.advance(LEASE - 1)
    assert dispatcher.reap() == 0  # not yet expired
    clock.advance(2)
    assert dispatcher.reap() == 1
    job_a = dispatcher.job(a["PandaID"])
    assert job_a["state"] == "failed"
    assert "lease" in job_a["errorDiag"]
    ranges = ranges_of(dispatcher, task_id)
    assert [
        (ranges[i]["state"], ranges[i]["attemptNr"], ranges[i]["failures"]) for i in (0, 1)
    ] == [
        ("ready", 2, 1),
        ("ready", 2, 1),
    ]
    assert (ranges[2]["state"], ranges[2]["attemptNr"]) == ("ready", 1)
    # a replacement consumer exists and gets the re-dispatched ranges as attempt 2
    assert _consumers(dispatcher, task_id) == {"failed": 1, "activated": 1}
    b = start_consumer(dispatcher)
    assert b["PandaID"] != a["PandaID"]
    got_b = dispatcher.get_event_ranges(b["PandaID"], None, None, 2)
    assert [r["eventRangeID"].rsplit("-", 2)[1:] for r in got_b] == [["0", "2"], ["1", "2"]]
    # the late result of the old attempt is refused and changes nothing
    before = snapshot(dispatcher)
    late = report(dispatcher, *(finished(r["eventRangeID"]) for r in got))
    assert late["Returns"] == [False, False]
    assert all("stale attempt 1" in e for e in late["Errors"])
    assert snapshot(dispatcher) == before
    # b's results are accepted
    assert report(dispatcher, *(finished(r["eventRangeID"]) for r in got_b))["Returns"] == [
        True,
        True,
    ]


def test_heartbeats_keep_the_lease(dispatcher: Dispatcher, clock: Clock) -> None:
    task_id = submit(dispatcher, 4)
    a = start_consumer(dispatcher)
    got = dispatcher.get_event_ranges(a["PandaID"], None, None, 1)
    for _ in range(3):
        clock.advance(LEASE * 0.8)
        assert dispatcher.update_job(a["PandaID"], "running", {}) == "NULL"
    clock.advance(LEASE * 0.8)
    report(dispatcher, {"eventRangeID": got[0]["eventRangeID"], "eventStatus": "running"})
    clock.advance(LEASE * 0.8)
    dispatcher.get_event_ranges(a["PandaID"], None, None, 1)
    clock.advance(LEASE * 0.8)
    assert dispatcher.reap() == 0
    assert dispatcher.job(a["PandaID"])["state"] == "running"
    assert ranges_of(dispatcher, task_id)[0]["state"] == "running"
    clock.advance(LEASE * 0.3)
    assert dispatcher.reap() == 1
    assert ranges_of(dispatcher, task_id)[0]["state"] == "ready"


def test_lease_expiry_uses_up_attempts(dispatcher: Dispatcher, clock: Clock) -> None:
    task_id = submit(dispatcher, 1, esMaxAttempt=1)
    a = start_consumer(dispatcher)
    dispatcher.get_event_ranges(a["PandaID"], None, None, 1)
    clock.advance(LEASE + 1)
    assert dispatcher.reap() == 1
    r0 = ranges_of(dispatcher, task_id)[0]
    assert (r0["state"], r0["attemptNr"], r0["failures"]) == ("failed", 1, 1)
    assert dispatcher.task(task_id)["state"] == "failed"


def test_activated_jobs_are_never_reaped(dispatcher: Dispatcher, clock: Clock) -> None:
    submit(dispatcher, 2, nEsConsumers=2)
    clock.advance(LEASE * 100)
    assert dispatcher.reap() == 0
    assert {j["state"] for j in dispatcher.jobs()} == {"activated"}


def test_ending_consumer_releases_held_ranges_at_once(dispatcher: Dispatcher) -> None:
    for state in ("finished", "failed"):
        task_id = submit(dispatcher, 4)
        a = start_consumer(dispatcher)
        got = dispatcher.get_event_ranges(a["PandaID"], None, None, 3)
        assert report(dispatcher, finished(got[0]["eventRangeID"]))["Returns"] == [True]
        report(dispatcher, {"eventRangeID": got[1]["eventRangeID"], "eventStatus": "running"})
        assert dispatcher.update_job(a["PandaID"], state, {}) == "NULL"
        ranges = ranges_of(dispatcher, task_id)
        assert [(ranges[i]["state"], ranges[i]["attemptNr"]) for i in range(4)] == [
            ("finished", 1),
            ("ready", 2),
            ("ready", 2),
            ("ready", 1),
        ], state
        # a replacement consumer picks them up
        b = start_consumer(dispatcher)
        assert b["taskID"] == task_id
        got_b = dispatcher.get_event_ranges(b["PandaID"], None, None, 10)
        assert [r["startEvent"] for r in got_b] == [1, 2, 3]


def test_ended_consumer_gets_no_more_ranges(dispatcher: Dispatcher) -> None:
    submit(dispatcher, 4, nEsConsumers=2)
    a = start_consumer(dispatcher)
    dispatcher.update_job(a["PandaID"], "finished", {})
    assert dispatcher.get_event_ranges(a["PandaID"], None, None, 5) == []
    assert dispatcher.events_available(a["PandaID"], None, None) == 0


def test_killed_consumer_gets_no_ranges_and_hears_the_command(dispatcher: Dispatcher) -> None:
    submit(dispatcher, 4)
    a = start_consumer(dispatcher)
    got = dispatcher.get_event_ranges(a["PandaID"], None, None, 1)
    dispatcher.set_command(a["PandaID"], dispatcher_command("tobekilled"))
    assert dispatcher.get_event_ranges(a["PandaID"], None, None, 5) == []
    assert dispatcher.update_job(a["PandaID"], "running", {}) == "tobekilled"
    answer = report(dispatcher, {"eventRangeID": got[0]["eventRangeID"], "eventStatus": "running"})
    assert answer["Command"] == {str(a["PandaID"]): "tobekilled"}


def dispatcher_command(value: str):
    from eventservice.domain.states import Command

    return Command(value)


def test_n_es_consumers_limit(dispatcher: Dispatcher) -> None:
    task_id = submit(dispatcher, 10, nEsConsumers=3)
    assert _consumers(dispatcher, task_id) == {"activated": 3}
    jobs = [dispatcher.get_job("Q", f"n{i}") for i in range(4)]
    assert [j is not None for j in jobs] == [True, True, True, False]
    assert len({j["PandaID"] for j in jobs[:3]}) == 3
    assert {j["jobsetID"] for j in jobs[:3]} == {jobs[0]["jobsetID"]}
    # two consumers share the jobset's ranges without overlap
    r1 = dispatcher.get_event_ranges(jobs[0]["PandaID"], None, None, 4)
    r2 = dispatcher.get_event_ranges(jobs[1]["PandaID"], None, None, 4)
    r3 = dispatcher.get_event_ranges(jobs[2]["PandaID"], None, None, 4)
    starts = [r["startEvent"] for r in r1 + r2 + r3]
    assert sorted(starts) == list(range(10))
    assert len(r3) == 2


def test_replacement_while_ready_ranges_remain(dispatcher: Dispatcher) -> None:
    task_id = submit(dispatcher, 6, nEsConsumers=2)
    a = start_consumer(dispatcher)
    b = start_consumer(dispatcher)
    assert dispatcher.get_job("Q", "x") is None
    dispatcher.get_event_ranges(a["PandaID"], None, None, 1)
    dispatcher.update_job(b["PandaID"], "failed", {})  # b ends with ranges left
    assert _consumers(dispatcher, task_id) == {"running": 1, "failed": 1, "activated": 1}
    c = start_consumer(dispatcher)
    assert c["PandaID"] not in (a["PandaID"], b["PandaID"])


def test_es_max_attempt_job_caps_consumers(dispatcher: Dispatcher) -> None:
    task_id = submit(dispatcher, 6, nEsConsumers=2, esMaxAttemptJob=3)
    assert _consumers(dispatcher, task_id) == {"activated": 2}
    a = start_consumer(dispatcher)
    b = start_consumer(dispatcher)
    dispatcher.update_job(a["PandaID"], "failed", {})
    assert _consumers(dispatcher, task_id) == {"failed": 1, "running": 1, "activated": 1}
    c = start_consumer(dispatcher)
    dispatcher.update_job(b["PandaID"], "failed", {})
    # three consumers made: no fourth
    assert _consumers(dispatcher, task_id) == {"failed": 2, "running": 1}
    assert dispatcher.get_job("Q", "x") is None
    got = dispatcher.get_event_ranges(c["PandaID"], None, None, 2)
    assert report(dispatcher, *(finished(r["eventRangeID"]) for r in got))["Returns"] == [True] * 2
    dispatcher.update_job(c["PandaID"], "failed", {})
    # the last consumer ended: the 4 remaining ranges can never run
    ranges = ranges_of(dispatcher, task_id)
    assert [ranges[i]["state"] for i in range(6)] == ["done", "done"] + ["failed"] * 4
    assert "esMaxAttemptJob" in ranges[5]["errorDiag"]
    assert _consumers(dispatcher, task_id) == {"failed": 3}
    # what finished goes to merge
    assert [j["state"] for j in dispatcher.jobs(task_id=task_id) if j["eventService"] == 2] == [
        "activated"
    ]


def test_es_max_attempt_job_below_n_es_consumers(dispatcher: Dispatcher) -> None:
    task_id = submit(dispatcher, 6, nEsConsumers=5, esMaxAttemptJob=2)
    assert _consumers(dispatcher, task_id) == {"activated": 2}


def test_queued_consumers_closed_when_ranges_run_out(dispatcher: Dispatcher) -> None:
    task_id = submit(dispatcher, 3, nEsConsumers=3)
    a = start_consumer(dispatcher)
    got = dispatcher.get_event_ranges(a["PandaID"], None, None, 10)
    assert len(got) == 3
    assert _consumers(dispatcher, task_id) == {"running": 1, "closed": 2}
    assert dispatcher.get_job("Q", "x") is None
    closed = [j for j in dispatcher.jobs(task_id=task_id) if j["state"] == "closed"]
    assert all(j["endedAt"] is not None for j in closed)
