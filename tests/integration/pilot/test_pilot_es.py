"""ES jobs end to end with a real dispatcher: ranges, stage-out, merge, errors, crash."""

from __future__ import annotations

import itertools
import tarfile
from pathlib import Path

import pytest

from tests.integration.pilot.conftest import (
    PilotProcess,
    es_task,
    run_pilot,
    storages,
)


def test_es_job_streams_ranges_and_merge_job_completes_the_task(
    dispatcher, stores, input_file, tmp_path
):
    dispatcher.add_queue("Q", corecount=2, zip_time_gap=1, heartbeat=2, storages=storages(stores))
    task_id = es_task(dispatcher, input_file)
    code, output = run_pilot(dispatcher, "Q", tmp_path / "pilot", "--cores", "2")
    assert code == 0, output
    task = dispatcher.task(task_id)
    assert task["state"] == "done", (task, output)
    assert set(task["ranges"]) == {"merged"} and task["ranges"]["merged"] == 10
    # Bundles (tars of per-range outputs) were shipped to es_events, named by protocol.
    bundles = list(stores["os"].rglob("*.tar"))
    assert bundles and all(b.parent.name == str(task["outputs"][0]["jobsetID"]) for b in bundles)
    members = []
    for bundle in bundles:
        with tarfile.open(bundle) as tar:
            members += tar.getnames()
    assert len(members) == 10 and all(m.endswith(".out") for m in members)
    # The merged output holds every range once, each with its input's PFN.
    final = task["outputs"][0]
    assert final["path"] and final["state"] == "merged"
    merged = Path(final["path"].removeprefix("file://")).read_text().splitlines()
    assert len(merged) == 10 and all(str(input_file) in line for line in merged)
    # Logs were shipped to the pl storage, one per job.
    logs = list(stores["logs"].rglob("*.log.tgz"))
    assert len(logs) == 2
    with tarfile.open(logs[0]) as tar:
        assert "pilot.log" in tar.getnames()
        text = tar.extractfile("pilot.log").read().decode()
    assert " job=" in text and " range=" in text
    # Nothing is left pending.
    assert not list((tmp_path / "pilot" / "pending-reports").glob("*.json"))


def test_not_es_to_zip_ships_each_output_and_merge_reads_them(
    dispatcher, stores, input_file, tmp_path
):
    dispatcher.add_queue(
        "Q", corecount=2, not_es_to_zip=True, heartbeat=2, storages=storages(stores)
    )
    task_id = es_task(dispatcher, input_file, n_events=8, per_worker=2)
    code, output = run_pilot(dispatcher, "Q", tmp_path / "pilot", "--cores", "2")
    assert code == 0, output
    task = dispatcher.task(task_id)
    assert task["state"] == "done", (task, output)
    assert not list(stores["os"].rglob("*.tar"))
    objects = sorted(p.name for p in stores["os"].rglob("*.out"))
    ranges = dispatcher.ranges(task_id)
    assert objects == sorted(f"{r['eventRangeID']}.out" for r in ranges)
    assert all(r["path"].startswith(f"file://{stores['os']}") and r["adler32"] for r in ranges)
    assert task["cpuSecondsInOutput"] >= 0 and len(ranges) == 4


def test_near_the_end_of_its_chunk_a_job_asks_only_for_waiting_workers(
    dispatcher, stores, input_file, tmp_path
):
    dispatcher.add_queue(
        "Q", corecount=1, not_es_to_zip=True, heartbeat=2, storages=storages(stores)
    )
    task_id = es_task(dispatcher, input_file, n_events=10, per_worker=1, mode="sleep")
    code, output = run_pilot(
        dispatcher, "Q", tmp_path / "pilot", "--cores", "1", env={"PAYLOAD_SLEEP": "0.3"}
    )
    assert code == 0, output
    assert dispatcher.task(task_id)["state"] == "done"
    claims: dict[float, list[int]] = {}  # one claim's ranges share its time
    for change in dispatcher.history():
        if change["to"] == "sent":
            claims.setdefault(change["at"], []).append(change["entityID"])
    # One range for the one worker; then two ahead whenever none is buffered; once the
    # newest range has at most 4 after it (2 x nRanges), one per waiting worker.
    assert [len(ids) for _, ids in sorted(claims.items())] == [1, 2, 2, 2, 1, 1, 1], claims
    # Each of the last three came only after the worker had spent 0.3 s on the one before.
    times = sorted(claims)[-4:]
    assert all(later - earlier >= 0.25 for earlier, later in itertools.pairwise(times)), times
    assert "asking only for waiting workers" in output


def test_tobekilled_stops_the_payload_now(dispatcher, stores, input_file, tmp_path):
    dispatcher.add_queue("Q", corecount=2, zip_time_gap=0, heartbeat=1, storages=storages(stores))
    task_id = es_task(dispatcher, input_file, n_events=40, per_worker=1, mode="sleep")
    pilot = PilotProcess(
        dispatcher.url,
        "Q",
        tmp_path / "pilot",
        "--cores",
        "2",
        "--jobs",
        "1",
        env={"PAYLOAD_SLEEP": "5"},
    )
    dispatcher.wait_for(
        lambda: any(r["state"] == "running" for r in dispatcher.ranges(task_id)), 60, "running"
    )
    panda_id = dispatcher.jobs(task_id)[0]["PandaID"]
    dispatcher.api("POST", f"/jobs/{panda_id}/command", json={"command": "tobekilled"})
    assert pilot.wait(30) == 0, pilot.output()
    assert "tobekilled" in pilot.output()
    job = dispatcher.jobs(task_id)[0]
    assert job["state"] == "failed" and job["errorCode"] == 1144, job
    ranges = dispatcher.ranges(task_id)
    assert not [r for r in ranges if r["state"] in ("sent", "running", "finished")]


def test_payload_error_messages_fail_only_their_ranges(dispatcher, stores, input_file, tmp_path):
    dispatcher.add_queue("Q", corecount=2, zip_time_gap=0, heartbeat=2, storages=storages(stores))
    task_id = es_task(
        dispatcher, input_file, n_events=12, per_worker=1, mode="errors", esMaxAttempt=2
    )
    code, output = run_pilot(dispatcher, "Q", tmp_path / "pilot", "--cores", "2")
    assert code == 0, output
    by_start = {}
    for r in dispatcher.ranges(task_id):
        by_start[r["startEvent"]] = r
    assert len(by_start) == 12
    for start, r in by_start.items():
        kind = start % 4
        if kind == 3:
            assert r["state"] in ("finished", "done", "merged"), r
        elif kind == 2:
            assert r["state"] == "fatal" and r["errorCode"] == 1228, r
        else:
            # retryable: tried esMaxAttempt times, then left failed with the pilot's code
            assert r["state"] == "failed" and r["attemptNr"] == 2, r
            assert r["errorCode"] == (1220 if kind == 0 else 1221), r
    assert "names no held range" in output or "naming no held range" in output
    jobs = dispatcher.jobs(task_id)
    assert jobs and all(j["state"] == "finished" for j in jobs if j["eventService"] == 1)


@pytest.mark.parametrize("zip_time_gap", [0, 600], ids=["ship-at-once", "ship-at-the-end"])
def test_payload_crash_fails_in_flight_ranges_and_the_job(
    dispatcher, stores, input_file, tmp_path, zip_time_gap
):
    # With a long zip_time_gap the outputs done before the crash are still waiting in the
    # payload's directory when it dies: they must ship all the same.
    dispatcher.add_queue(
        "Q", corecount=2, zip_time_gap=zip_time_gap, heartbeat=2, storages=storages(stores)
    )
    task_id = es_task(dispatcher, input_file, n_events=20, per_worker=1, mode="crash")
    code, output = run_pilot(dispatcher, "Q", tmp_path / "pilot", "--cores", "2", "--jobs", "1")
    assert code == 0, output
    job = dispatcher.jobs(task_id)[0]  # the one this pilot ran; a new consumer may follow
    assert job["state"] == "failed" and job["errorCode"] == 3, job
    ranges = dispatcher.ranges(task_id)
    assert not [r for r in ranges if r["state"] in ("sent", "running")]
    crashed = [
        h
        for h in dispatcher.history()
        if "1222" in str(h) or "crash" in str(h).lower() or "died" in str(h)
    ]
    finished = [r for r in ranges if r["state"] == "finished"]
    assert len(finished) >= 2, (ranges, output)  # shipped before the crash, and kept
    retried = [r for r in ranges if r["attemptNr"] > 1]
    assert retried, ranges  # the range the crashed worker held came back for another try
    assert crashed or any(r["errorCode"] == 1222 for r in ranges)


def test_storage_failover_and_objstore_ids(dispatcher, stores, input_file, tmp_path):
    broken = tmp_path / "not-a-dir"
    broken.write_text("a file where a directory should be")
    queue = dispatcher.add_queue(
        "Q",
        corecount=2,
        zip_time_gap=0,
        heartbeat=2,
        storages=storages(stores, es_events=f"file://{broken}/os"),
    )
    task_id = es_task(dispatcher, input_file, n_events=8, per_worker=1)
    code, output = run_pilot(dispatcher, "Q", tmp_path / "pilot", "--cores", "2")
    assert code == 0, output
    assert dispatcher.task(task_id)["state"] == "done", output
    assert not list(stores["os"].rglob("*.tar"))
    assert list(stores["failover"].rglob("*.tar"))
    failover_id = queue["objectStores"][f"file://{stores['failover']}"]
    assert failover_id != queue["objectStores"][f"file://{broken}/os"]


def test_storage_failing_everywhere_reports_ranges_failed(dispatcher, stores, input_file, tmp_path):
    broken = tmp_path / "not-a-dir"
    broken.write_text("x")
    bad = {a: [f"file://{broken}/{a}"] for a in ("es_events", "es_failover")}
    dispatcher.add_queue(
        "Q", corecount=2, zip_time_gap=0, heartbeat=2, storages={**storages(stores), **bad}
    )
    task_id = es_task(dispatcher, input_file, n_events=40, per_worker=1, mode="sleep")
    code, output = run_pilot(
        dispatcher,
        "Q",
        tmp_path / "pilot",
        "--cores",
        "2",
        "--jobs",
        "1",
        "--storage-failures",
        "2",
        "--storage-retry-delay",
        "0.2",
        env={"PAYLOAD_SLEEP": "0.2"},
    )
    assert code == 0, output
    job = dispatcher.jobs(task_id)[0]
    assert job["state"] == "failed" and job["errorCode"] == 1137, job
    ranges = dispatcher.ranges(task_id)
    assert not [r for r in ranges if r["state"] in ("finished", "sent", "running")]
    assert any(r["errorCode"] == 1137 for r in ranges)
    # It stopped taking new ranges: some were never handed to this job.
    assert [r for r in ranges if r["state"] == "ready" and r["attemptNr"] == 1]
