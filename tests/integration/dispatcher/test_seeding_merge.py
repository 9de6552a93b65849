"""Job seeding per queue, merge creation/success/failure, normal jobs, history."""

from __future__ import annotations

import json
from typing import Any

import pytest

from eventservice.dispatcher import Dispatcher
from eventservice.errors import IllegalTransition, InvalidInput, NotFound

from .conftest import (
    INPUT_GUID,
    INPUT_URL,
    drain,
    finished,
    ranges_of,
    report,
    start_consumer,
    submit,
)


def _kinds(d: Dispatcher, queue: str) -> list[int]:
    """Kinds of every job this queue gets, claiming until none is left for it."""
    kinds = []
    while (job := d.get_job(queue, "n")) is not None:
        kinds.append(1 if job["eventService"] == "True" else 2 if "eventServiceMerge" in job else 0)
    return kinds


@pytest.mark.parametrize(
    ("jobseed", "expected"),
    [("es", [1, 1]), ("eshigh", [1, 1]), ("std", [0, 0]), ("all", [0, 1, 0, 1])],
)
def test_jobseed(dispatcher: Dispatcher, jobseed: str, expected: list[int]) -> None:
    dispatcher.add_queue("S", {"jobseed": jobseed})
    task_id = submit(dispatcher, 8, nEventsPerJob=2, esFraction=0.5)
    summary = dispatcher.task(task_id)
    assert [o["eventService"] for o in summary["outputs"]] == [False, True, False, True]
    assert _kinds(dispatcher, "S") == expected


def test_unknown_queue(dispatcher: Dispatcher) -> None:
    submit(dispatcher, 2)
    with pytest.raises(NotFound):
        dispatcher.get_job("NOPE", "n")
    assert {j["state"] for j in dispatcher.jobs()} == {"activated"}


def _finish_all(d: Dispatcher, task_id: int) -> dict[str, Any]:
    job = start_consumer(d)
    got = drain(d, job)
    assert got
    assert d.get_event_ranges(job["PandaID"], None, None, 10) == []
    assert d.update_job(job["PandaID"], "finished", {}) == "NULL"  # the pilot ends
    return job


@pytest.mark.parametrize("pledged", [-1, 0])
def test_merge_jobs_never_go_to_opportunistic_queues(dispatcher: Dispatcher, pledged: int) -> None:
    dispatcher.add_queue("OPP", {"pledgedcpu": -1, "jobseed": "all"})
    dispatcher.add_queue("PLEDGED", {"pledgedcpu": pledged, "jobseed": "std"})
    task_id = submit(dispatcher, 2)
    job = dispatcher.get_job("OPP", "n")
    assert job is not None and job["eventService"] == "True"
    dispatcher.update_job(job["PandaID"], "running", {})
    drain(dispatcher, job)
    merges = [j for j in dispatcher.jobs(task_id=task_id) if j["eventService"] == 2]
    assert [m["state"] for m in merges] == ["activated"]
    assert dispatcher.get_job("OPP", "n") is None
    merge = dispatcher.get_job("PLEDGED", "n")
    if pledged == -1:
        assert merge is None
    else:
        assert merge is not None and merge["eventServiceMerge"] == "True"


def test_merge_after_all_ranges_finished_v0(dispatcher: Dispatcher) -> None:
    task_id = submit(dispatcher, 3, nEsConsumers=2, outputName="OUT.{taskID}.{jobsetID}.root")
    consumer = start_consumer(dispatcher)
    got = drain(dispatcher, consumer)
    ids = [r["eventRangeID"] for r in got]
    ranges = ranges_of(dispatcher, task_id)
    assert {r["state"] for r in ranges.values()} == {"done"}
    summary = dispatcher.task(task_id)
    assert summary["state"] == "merging"
    assert summary["jobsets"] == {"merging": 1}
    # the other consumer was never picked up: closed
    assert sorted(j["state"] for j in dispatcher.jobs(task_id=task_id)) == [
        "activated",  # merge
        "closed",
        "running",
    ]
    merge = dispatcher.get_job("Q", "merger")
    assert merge is not None
    jobset_id = consumer["jobsetID"]
    lfns = [f"{rid}.out" for rid in ids]
    out = f"OUT.{task_id}.{jobset_id}.root"
    assert merge == {
        "PandaID": merge["PandaID"],
        "jobsetID": jobset_id,
        "taskID": task_id,
        "attemptNr": 1,
        "coreCount": 4,
        "maxWalltime": 0,
        "jobPars": "",
        "prodSourceLabel": "managed",
        "outFiles": out,
        "scopeOut": "user",
        "scopeLog": "user",
        "logFile": f"{task_id}.{merge['PandaID']}.log.tgz",
        "destinationSE": "Q",
        "eventService": "False",
        "cloneJob": "",
        "nEventsPerWorker": 1,
        "firstEvent": 0,
        "lastEvent": 2,
        "inFiles": ",".join(lfns),
        "inFilesURL": ",".join(f"file:///os/{lfn}" for lfn in lfns),
        "fsize": "100,100,100",
        "checksum": "ad:0a0b0c0d,ad:0a0b0c0d,ad:0a0b0c0d",
        "GUID": "",
        "scopeIn": "events,events,events",
        "writeToFile": f"inputFor_{out}:{','.join(lfns)}",
        "eventRangeIDs": ",".join(ids),
        "eventServiceMerge": "True",
        "transformation": "eventservice payload merge --out {output} {inputs}",
    }
    assert merge["PandaID"] not in (consumer["PandaID"],)


def test_merge_inputs_v1_zip_files(dispatcher: Dispatcher) -> None:
    task_id = submit(dispatcher, 3)
    consumer = start_consumer(dispatcher)
    got = dispatcher.get_event_ranges(consumer["PandaID"], None, None, 3)

    def bundle(name: str, rs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "zipFile": {
                "lfn": name,
                "path": f"s3://b/{name}",
                "objstoreID": 2,
                "fsize": 1000,
                "adler32": "deadbeef",
                "numEvents": len(rs),
                "pathConvention": 1000,
            },
            "eventRanges": [
                {"eventRangeID": r["eventRangeID"], "eventStatus": "finished"} for r in rs
            ],
        }

    answer = report(dispatcher, bundle("a.tar", got[:2]), bundle("b.tar", got[2:]), version=1)
    assert answer["Returns"] == [True, True, True]
    merge = dispatcher.get_job("Q", "m")
    assert merge is not None
    assert merge["inFiles"] == "a.tar,b.tar"
    assert merge["inFilesURL"] == "s3://b/a.tar,s3://b/b.tar"
    assert merge["fsize"] == "1000,1000"
    assert merge["checksum"] == "ad:deadbeef,ad:deadbeef"
    assert merge["writeToFile"] == f"inputFor_{merge['outFiles']}:a.tar,b.tar"
    assert merge["eventRangeIDs"] == ",".join(r["eventRangeID"] for r in got)
    assert dispatcher.task(task_id)["state"] == "merging"


def _holders(d: Dispatcher, task_id: int) -> list[int]:
    """The consumer that last held each range of the task."""
    return [int(r["eventRangeID"].split("-")[1]) for r in ranges_of(d, task_id).values()]


def _merge_job(d: Dispatcher) -> dict[str, Any]:
    merge = d.get_job("Q", "merger")
    assert merge is not None and merge["eventServiceMerge"] == "True"
    assert d.update_job(merge["PandaID"], "running", {}) == "NULL"
    return merge


def test_merge_finished(dispatcher: Dispatcher) -> None:
    task_id = submit(dispatcher, 2)
    _finish_all(dispatcher, task_id)
    merge = _merge_job(dispatcher)
    output = {
        "lfn": merge["outFiles"],
        "path": "file:///out/final.root",
        "fsize": 4242,
        "adler32": "01020304",
    }
    command = dispatcher.update_job(
        merge["PandaID"], "finished", {"outputFiles": json.dumps([output])}
    )
    assert command == "NULL"
    ranges = ranges_of(dispatcher, task_id)
    assert {r["state"] for r in ranges.values()} == {"merged"}
    summary = dispatcher.task(task_id)
    assert summary["state"] == "done"
    assert summary["jobsets"] == {"merged": 1}
    assert summary["outputs"][0] | {} == summary["outputs"][0]
    assert (
        summary["outputs"][0]["path"],
        summary["outputs"][0]["fsize"],
        summary["outputs"][0]["adler32"],
        summary["outputs"][0]["lfn"],
    ) == ("file:///out/final.root", 4242, "01020304", merge["outFiles"])
    # one history row per range for each bulk move, recorded for the merge job
    moves = [
        (h["from"], h["to"], h["PandaID"], h["reason"])
        for h in dispatcher.history(entity="range")
        if h["from"] in ("finished", "done")
    ]
    assert sorted(moves) == sorted(
        [("finished", "done", h, "accepted for merge") for h in _holders(dispatcher, task_id)]
        + [("done", "merged", merge["PandaID"], "merged")] * 2
    )
    # the merge job cannot be reported again into another state
    with pytest.raises(IllegalTransition):
        dispatcher.update_job(merge["PandaID"], "failed", {})


def test_merge_failed_is_retried_then_outputs_discarded(dispatcher: Dispatcher) -> None:
    # dispatcher fixture: merge_max_attempts=2
    task_id = submit(dispatcher, 3, nEsConsumers=2)
    _finish_all(dispatcher, task_id)
    first = _merge_job(dispatcher)
    assert first["attemptNr"] == 1
    dispatcher.update_job(first["PandaID"], "failed", {"pilotErrorCode": 1305})
    second = _merge_job(dispatcher)
    assert second["attemptNr"] == 2
    assert second["PandaID"] != first["PandaID"]
    assert second["eventRangeIDs"] == first["eventRangeIDs"]
    assert {r["state"] for r in ranges_of(dispatcher, task_id).values()} == {"done"}
    dispatcher.update_job(second["PandaID"], "failed", {})
    # merge attempts used up: outputs discarded, events processed again as attempt+1
    ranges = ranges_of(dispatcher, task_id)
    assert [(r["state"], r["attemptNr"], r["path"]) for r in ranges.values()] == [
        ("ready", 2, None)
    ] * 3
    trail = [
        (h["from"], h["to"], h["attemptNr"], h["PandaID"], h["reason"])
        for h in dispatcher.history(entity="range")
        if h["from"] in ("done", "discarded")
    ]
    assert sorted(trail) == sorted(
        [("done", "discarded", 1, second["PandaID"], "merge failed: output discarded")] * 3
        + [("discarded", "ready", 2, h, "re-processing") for h in _holders(dispatcher, task_id)]
    )
    summary = dispatcher.task(task_id)
    assert summary["jobsets"] == {"running": 1}
    assert summary["state"] == "running"
    consumers = [
        j
        for j in dispatcher.jobs(task_id=task_id)
        if j["eventService"] == 1 and j["state"] == "activated"
    ]
    assert len(consumers) == 2  # nEsConsumers recreated
    assert not [
        j for j in dispatcher.jobs(task_id=task_id, state="activated") if j["eventService"] == 2
    ]
    # the re-processing runs to a new merge
    consumer = start_consumer(dispatcher)
    got = drain(dispatcher, consumer)
    assert [r["eventRangeID"].rsplit("-", 1)[1] for r in got] == ["2", "2", "2"]
    third = _merge_job(dispatcher)
    assert third["attemptNr"] == 1
    assert third["eventRangeIDs"] == ",".join(r["eventRangeID"] for r in got)
    dispatcher.update_job(
        third["PandaID"], "finished", {"outputFiles": json.dumps([{"path": "file:///o.root"}])}
    )
    assert dispatcher.task(task_id)["state"] == "done"


def test_lease_expiry_of_merge_job_retries_it(dispatcher: Dispatcher, clock) -> None:
    task_id = submit(dispatcher, 1)
    _finish_all(dispatcher, task_id)
    merge = _merge_job(dispatcher)
    clock.advance(61)
    assert dispatcher.reap() >= 1
    again = dispatcher.get_job("Q", "m2")
    assert again is not None and again["attemptNr"] == 2 and again["PandaID"] != merge["PandaID"]


def test_normal_job(dispatcher: Dispatcher) -> None:
    task_id = submit(
        dispatcher,
        25,
        esFraction=0,
        nEventsPerJob=10,
        normalTransformation=(
            "run --in {input} --out {output} --from {first_event} --to {last_event}"
        ),
        outputName="N.{taskID}._{jobsetID:06d}.root",
    )
    summary = dispatcher.task(task_id)
    assert [(o["firstEvent"], o["lastEvent"], o["eventService"]) for o in summary["outputs"]] == [
        (0, 9, False),
        (10, 19, False),
        (20, 24, False),
    ]
    assert summary["ranges"] == {}  # normal jobs have no event ranges
    jobs = [dispatcher.get_job("Q", "n") for _ in range(4)]
    assert jobs[3] is None
    second = jobs[1]
    assert second == {
        "PandaID": second["PandaID"],
        "jobsetID": second["jobsetID"],
        "taskID": task_id,
        "attemptNr": 1,
        "coreCount": 4,
        "maxWalltime": 0,
        "jobPars": "",
        "prodSourceLabel": "managed",
        "outFiles": f"N.{task_id}._{second['jobsetID']:06d}.root",
        "scopeOut": "user",
        "scopeLog": "user",
        "logFile": f"{task_id}.{second['PandaID']}.log.tgz",
        "destinationSE": "Q",
        "eventService": "False",
        "cloneJob": "",
        "nEventsPerWorker": 1,
        "firstEvent": 10,
        "lastEvent": 19,
        "inFiles": "in.root",
        "inFilesURL": INPUT_URL,
        "GUID": INPUT_GUID,
        "scopeIn": "user",
        "fsize": "0",
        "checksum": "",
        "realDatasetsIn": "",
        "transformation": "run --in {input} --out {output} --from 10 --to 19",
    }
    # a normal job gets no event ranges
    assert dispatcher.get_event_ranges(second["PandaID"], None, None, 5) == []
    for i, job in enumerate(jobs[:3]):
        dispatcher.update_job(job["PandaID"], "running", {})
        out = {
            "lfn": job["outFiles"],
            "path": f"file:///out/{i}.root",
            "fsize": i + 1,
            "adler32": "0000000a",
        }
        dispatcher.update_job(job["PandaID"], "finished", {"outputFiles": [out], "nEvents": "10"})
        expected = "done" if i == 2 else "running"
        assert dispatcher.task(task_id)["state"] == expected
    summary = dispatcher.task(task_id)
    assert summary["jobsets"] == {"done": 3}
    assert [o["path"] for o in summary["outputs"]] == [f"file:///out/{i}.root" for i in range(3)]
    assert dispatcher.job(jobs[0]["PandaID"])["nEvents"] == 10


def test_normal_job_failure_is_retried_up_to_max_attempt(dispatcher: Dispatcher) -> None:
    task_id = submit(dispatcher, 5, esFraction=0, maxAttempt=2)
    first = dispatcher.get_job("Q", "n")
    dispatcher.update_job(
        first["PandaID"], "failed", {"pilotErrorCode": "1111", "pilotErrorDiag": "boom"}
    )
    assert dispatcher.job(first["PandaID"])["errorCode"] == 1111
    second = dispatcher.get_job("Q", "n")
    assert second["attemptNr"] == 2 and second["jobsetID"] == first["jobsetID"]
    dispatcher.update_job(second["PandaID"], "failed", {})
    assert dispatcher.get_job("Q", "n") is None
    assert dispatcher.task(task_id)["state"] == "failed"


def test_update_job_refusals_change_nothing(dispatcher: Dispatcher) -> None:
    submit(dispatcher, 2)
    job = start_consumer(dispatcher)
    before = dispatcher.job(job["PandaID"])
    with pytest.raises(InvalidInput):
        dispatcher.update_job(job["PandaID"], "bogus", {})
    with pytest.raises(InvalidInput):
        dispatcher.update_job(job["PandaID"], "activated", {})  # not a pilot state
    with pytest.raises(InvalidInput):
        dispatcher.update_job(job["PandaID"], "finished", {"outputFiles": "{not json"})
    with pytest.raises(InvalidInput):
        dispatcher.update_job(job["PandaID"], "finished", {"nEvents": "many"})
    with pytest.raises(IllegalTransition):
        dispatcher.update_job(job["PandaID"], "starting", {})  # running -> starting
    with pytest.raises(NotFound):
        dispatcher.update_job(987654, "running", {})
    assert dispatcher.job(job["PandaID"]) == before


def test_history_has_a_row_per_change(dispatcher: Dispatcher, clock) -> None:
    task_id = submit(dispatcher, 2, esMaxAttempt=3)
    consumer = start_consumer(dispatcher)
    pid = consumer["PandaID"]
    got = dispatcher.get_event_ranges(pid, None, None, 2)
    report(dispatcher, {"eventRangeID": got[0]["eventRangeID"], "eventStatus": "running"})
    report(dispatcher, {"eventRangeID": got[0]["eventRangeID"], "eventStatus": "running"})  # no-op
    report(dispatcher, {"eventRangeID": got[1]["eventRangeID"], "eventStatus": "failed"})
    report(dispatcher, finished(got[0]["eventRangeID"]))
    retry = dispatcher.get_event_ranges(pid, None, None, 2)
    report(dispatcher, finished(retry[0]["eventRangeID"]))
    ranges = ranges_of(dispatcher, task_id)
    r0, r1 = ranges[0]["eventRangeID"], ranges[1]["eventRangeID"]  # noqa: F841

    def rows(entity: str, entity_id: int) -> list[tuple]:
        return [
            (h["from"], h["to"], h["attemptNr"])
            for h in dispatcher.history(entity=entity, entity_id=entity_id)
        ]

    range_ids = sorted({h["entityID"] for h in dispatcher.history(entity="range")})
    assert len(range_ids) == 2
    assert rows("range", range_ids[0]) == [
        ("ready", "sent", 1),
        ("sent", "running", 1),
        ("running", "finished", 1),
        ("finished", "done", 1),
    ]
    assert rows("range", range_ids[1]) == [
        ("ready", "sent", 1),
        ("sent", "failed", 1),  # the failure itself is on record,
        ("failed", "ready", 2),  # then the retry as attempt 2
        ("ready", "sent", 2),
        ("sent", "finished", 2),
        ("finished", "done", 2),
    ]
    assert rows("job", pid) == [("activated", "sent", 1), ("sent", "running", 1)]
    assert [(h["from"], h["to"]) for h in dispatcher.history(entity="task")] == [
        (None, "running"),
        ("running", "merging"),
    ]
    assert [(h["from"], h["to"]) for h in dispatcher.history(entity="jobset")] == [
        ("running", "merging")
    ]
    assert all(h["PandaID"] == pid for h in dispatcher.history(entity="range"))


def test_history_uses_the_dispatcher_clock(dispatcher: Dispatcher, clock) -> None:
    submit(dispatcher, 2)
    start_consumer(dispatcher)
    stamps = {h["entity"]: h["at"] for h in dispatcher.history()}
    assert stamps and all(at == clock.now for at in stamps.values()), stamps


def test_first_consumers_of_every_jobset_go_before_second_ones(dispatcher: Dispatcher) -> None:
    submit(dispatcher, 6, nEventsPerJob=2, nEsConsumers=2)  # 3 jobsets, 2 consumers each
    order = []
    while (job := dispatcher.get_job("Q", "n")) is not None:
        order.append(int(job["jobsetID"]))
    first = sorted(set(order))
    assert order == first + first  # every jobset once, then every jobset again


def test_a_replacement_consumer_ranks_by_the_consumers_its_jobset_still_has(
    dispatcher: Dispatcher,
) -> None:
    # 3 jobsets A, B, C with 2 consumers each
    submit(dispatcher, 6, nEventsPerJob=2, nEsConsumers=2)
    a1 = start_consumer(dispatcher)
    b1 = start_consumer(dispatcher)
    dispatcher.get_event_ranges(a1["PandaID"], None, None, 1)
    dispatcher.get_event_ranges(b1["PandaID"], None, None, 1)
    dispatcher.update_job(a1["PandaID"], "failed", {})  # A: a third consumer is made
    dispatcher.update_job(b1["PandaID"], "failed", {})
    order = []
    while (job := dispatcher.get_job("Q", "n")) is not None:
        order.append((int(job["jobsetID"]), job["PandaID"]))
    jobset_a, jobset_b = int(a1["jobsetID"]), int(b1["jobsetID"])
    (jobset_c,) = {j for j, _ in order} - {jobset_a, jobset_b}
    # C is untouched: its first consumer goes first; then every second consumer, A's and
    # B's replacements among them (each had one live consumer left when it was made)
    assert order[0][0] == jobset_c
    assert sorted(j for j, _ in order[1:]) == sorted(
        [jobset_a, jobset_a, jobset_b, jobset_b, jobset_c]
    )
    assert [p for _, p in order[1:]] == sorted(p for _, p in order[1:])
