"""Normal jobs, two pilots on one jobset, a dispatcher restart, and offline mode."""

from __future__ import annotations

import json
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from tests.integration.pilot.conftest import (
    PYTHON,
    DispatcherProcess,
    PilotProcess,
    es_command,
    es_task,
    run_pilot,
    storages,
)


def test_normal_job_stage_in_run_stage_out(dispatcher, stores, input_file, tmp_path):
    dispatcher.add_queue("Q", corecount=1, heartbeat=2, storages=storages(stores))
    task_id = dispatcher.submit(
        [{"url": str(input_file), "nEvents": 10}],
        normalTransformation=(
            f"cp {{input}} {{output}} && echo copied {{input}}"
            f" && {PYTHON} -c 'sum(range(3_000_000))'"
        ),
        params={"nEventsPerJob": 10, "esFraction": 0.0},
    )
    code, output = run_pilot(dispatcher, "Q", tmp_path / "pilot")
    assert code == 0, output
    task = dispatcher.task(task_id)
    [job] = dispatcher.jobs(task_id)
    assert job["eventService"] == 0 and job["state"] == "finished" and job["nEvents"] == 10
    final = task["outputs"][0]
    stored = Path(final["path"].removeprefix("file://"))
    assert stored.is_relative_to(stores["out"])
    assert stored.read_bytes() == input_file.read_bytes()
    assert task["cpuSecondsInOutput"] > 0  # the payload's CPU time was reported
    [log] = stores["logs"].rglob("*.log.tgz")
    with tarfile.open(log) as tar:
        assert tar.extractfile("payload.stdout").read().decode().startswith("copied ")


def test_normal_job_payload_failure_is_reported(dispatcher, stores, input_file, tmp_path):
    dispatcher.add_queue("Q", corecount=1, heartbeat=2, storages=storages(stores))
    task_id = dispatcher.submit(
        [{"url": str(input_file), "nEvents": 10}],
        normalTransformation="exit 7",
        params={"nEventsPerJob": 10, "esFraction": 0.0, "maxAttempt": 1},
    )
    code, output = run_pilot(dispatcher, "Q", tmp_path / "pilot", "--jobs", "1")
    assert code == 0, output
    job = dispatcher.jobs(task_id)[0]
    assert job["state"] == "failed" and job["errorCode"] == 7, job


def test_two_pilots_drain_one_jobset(dispatcher, stores, input_file, tmp_path):
    dispatcher.add_queue("Q", corecount=2, zip_time_gap=1, heartbeat=1, storages=storages(stores))
    task_id = dispatcher.submit(
        [{"url": str(input_file), "nEvents": 40}],
        transformation=es_command("sleep"),
        mergeTransformation="cat {inputs} > {output}",
        params={"nEventsPerJob": 40, "nEventsPerWorker": 1, "esFraction": 1.0, "nEsConsumers": 2},
    )
    env = {"PAYLOAD_SLEEP": "0.1"}
    pilots = [
        PilotProcess(dispatcher.url, "Q", tmp_path / f"p{i}", "--cores", "2", env=env)
        for i in range(2)
    ]
    for pilot in pilots:
        assert pilot.wait(120) == 0, pilot.output()
    task = dispatcher.task(task_id)
    assert task["state"] == "done", task
    consumers = {j["PandaID"] for j in dispatcher.jobs(task_id) if j["eventService"] == 1}
    holders = {r["PandaID"] for r in dispatcher.ranges(task_id)}
    assert len(consumers) >= 2 and len(holders) >= 2  # both consumers processed ranges
    assert all("job" in p.output() for p in pilots)
    merged = Path(task["outputs"][0]["path"].removeprefix("file://")).read_text().splitlines()
    assert sorted(int(line.split()[1]) for line in merged) == list(range(40))


def test_reports_survive_a_dispatcher_restart(stores, input_file, tmp_path):
    dispatcher = DispatcherProcess(tmp_path, lease_seconds=60)
    dispatcher.start()
    try:
        dispatcher.add_queue(
            "Q", corecount=2, zip_time_gap=0, heartbeat=1, storages=storages(stores)
        )
        task_id = es_task(dispatcher, input_file, n_events=20, per_worker=1, mode="sleep")
        pilot = PilotProcess(
            dispatcher.url, "Q", tmp_path / "pilot", "--cores", "2", env={"PAYLOAD_SLEEP": "0.3"}
        )
        dispatcher.wait_for(
            lambda: any(r["state"] == "finished" for r in dispatcher.ranges(task_id)),
            60,
            "a finished range",
        )
        dispatcher.stop()
        time.sleep(2.5)  # ranges finish meanwhile; their reports wait on disk
        dispatcher.start()
        assert pilot.wait(120) == 0, pilot.output()
        assert "retry in" in pilot.output()
        task = dispatcher.task(task_id)
        assert task["state"] == "done", (task, pilot.output())
        assert task["rangesRedispatched"] == 0  # nothing was lost or redone
    finally:
        dispatcher.stop()


def test_offline_mode(tmp_path, input_file):
    job = {
        "PandaID": 1,
        "jobsetID": 1,
        "taskID": 9,
        "attemptNr": 1,
        "coreCount": 2,
        "eventService": "True",
        "transformation": es_command("ok"),
        "inFiles": "input.dat",
        "inFilesURL": str(input_file),
        "outFiles": "out.root",
        "logFile": "9.1.log.tgz",
    }
    ranges = [
        {
            "eventRangeID": f"9-1-1-{i}-1",
            "startEvent": i,
            "lastEvent": i,
            "LFN": "input.dat",
            "GUID": "g",
            "scope": "s",
        }
        for i in range(6)
    ]
    (tmp_path / "job.json").write_text(json.dumps(job))
    (tmp_path / "ranges.json").write_text(json.dumps(ranges))
    workdir = tmp_path / "work"
    result = subprocess.run(
        [
            PYTHON,
            "-m",
            "eventservice.cli.main",
            "pilot",
            "--job-file",
            str(tmp_path / "job.json"),
            "--ranges-file",
            str(tmp_path / "ranges.json"),
            "--workdir",
            str(workdir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 finished" in result.stdout
    report = json.loads((workdir / "offline-report.json").read_text())
    assert report["job"]["state"] == "finished"
    assert {r["eventStatus"] for r in report["ranges"].values()} == {"finished"}
    bundles = list((workdir / "offline-store").rglob("*.tar"))
    with tarfile.open(bundles[0]) as tar:
        assert all(name.startswith("9-1-1-") for name in tar.getnames())
    missing = subprocess.run(
        [
            PYTHON,
            "-m",
            "eventservice.cli.main",
            "pilot",
            "--job-file",
            str(tmp_path / "job.json"),
            "--workdir",
            str(tmp_path / "w2"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and "ranges-file" in missing.stderr


def test_reports_left_on_disk_are_sent_by_the_next_pilot(stores, input_file, tmp_path):
    dispatcher = DispatcherProcess(tmp_path, lease_seconds=60)
    dispatcher.start()
    try:
        dispatcher.add_queue(
            "Q", corecount=2, zip_time_gap=0, heartbeat=1, storages=storages(stores)
        )
        task_id = es_task(dispatcher, input_file, n_events=16, per_worker=1, mode="sleep")
        workdir = tmp_path / "pilot"
        first = PilotProcess(
            dispatcher.url,
            "Q",
            workdir,
            "--cores",
            "2",
            "--grace",
            "1",
            env={"PAYLOAD_SLEEP": "0.4"},
        )
        dispatcher.wait_for(
            lambda: any(r["state"] == "finished" for r in dispatcher.ranges(task_id)),
            60,
            "a finished range",
        )
        dispatcher.stop()
        time.sleep(1.5)  # more ranges finish and ship; their reports can only go to disk
        first.signal(signal.SIGTERM)
        assert first.wait(40) == 1, first.output()  # ended in time, reports pending
        pending = [json.loads(p.read_text()) for p in (workdir / "pending-reports").glob("*.json")]
        on_disk = {
            r["eventRangeID"]
            for entry in pending
            if entry["kind"] == "ranges"
            for item in entry["items"]
            for r in (item["eventRanges"] if entry["version"] == 1 else [item])
            if r["eventStatus"] == "finished"
        }
        assert on_disk, first.output()
        dispatcher.start()
        second = PilotProcess(
            dispatcher.url, "Q", workdir, "--cores", "2", env={"PAYLOAD_SLEEP": "0"}
        )
        assert second.wait(90) == 0, second.output()
        assert not list((workdir / "pending-reports").glob("*.json"))
        task = dispatcher.task(task_id)
        assert task["state"] == "done", task
        merged = {r["eventRangeID"] for r in dispatcher.ranges(task_id) if r["state"] == "merged"}
        assert on_disk <= merged  # what the first pilot did was not forgotten nor redone
    finally:
        dispatcher.stop()


def offline_es_job(panda_id: int, input_file, mode: str, n_ranges: int):
    """An offline ES job running the test payload in ``mode``, with one-event ranges."""
    job = {
        "PandaID": panda_id,
        "jobsetID": 1,
        "taskID": panda_id,
        "attemptNr": 1,
        "coreCount": 1,
        "eventService": "True",
        "transformation": es_command(mode),
        "inFiles": "input.dat",
        "inFilesURL": str(input_file),
        "outFiles": "out.root",
        "logFile": f"{panda_id}.1.log.tgz",
    }
    ranges = [
        {"eventRangeID": f"{panda_id}-1-1-{i}-1", "startEvent": i, "lastEvent": i}
        for i in range(n_ranges)
    ]
    return job, [dict(r, LFN="input.dat") for r in ranges]


class RecordingClient:
    """An offline client whose calls a subclass notes; everything else passes through."""

    def __init__(self, client):
        self.client = client
        self.updates: list[tuple[float, str]] = []
        self.statuses: list[tuple[str, str]] = []

    def __getattr__(self, name):
        return getattr(self.client, name)


class TimedOfflineClient(RecordingClient):
    """An offline client that notes when each job update arrived."""

    def update_job(self, panda_id, state, **fields):
        self.updates.append((time.monotonic(), state))
        return self.client.update_job(panda_id, state, **fields)


def test_the_heartbeat_goes_on_while_the_last_outputs_ship(input_file, tmp_path, monkeypatch):
    # A job silent while its last outputs ship would lose its lease (and its ranges) on a
    # slow store: the heartbeat must beat until the job's final report.
    from eventservice.pilot.main import Pilot
    from eventservice.pilot.offline import OfflineClient
    from eventservice.pilot.stageout import StageOut

    job, ranges = offline_es_job(5, input_file, "ok", 3)
    workdir = tmp_path / "work"
    client = TimedOfflineClient(OfflineClient(job, ranges, workdir, queue={"heartbeat": 0.1}))
    finishing: list[float] = []
    ship = StageOut.finish

    def slow_finish(self, timeout=None):
        finishing.append(time.monotonic())
        time.sleep(1.0)
        ship(self, timeout)

    monkeypatch.setattr(StageOut, "finish", slow_finish)
    Pilot(client, "OFFLINE", workdir, max_jobs=1).run()
    assert client.client.final_state() == "finished"
    assert client.client.counts() == {"finished": 3}
    [started] = finishing
    final_at = next(t for t, state in client.updates if state == "finished")
    beats_while_shipping = [
        t for t, state in client.updates if state == "running" and started < t < final_at
    ]
    assert len(beats_while_shipping) >= 3, client.updates


class RangeReportRecorder(RecordingClient):
    """An offline client that notes every range status the pilot sends."""

    def update_event_ranges(self, reports, version=0):
        for item in reports:
            for entry in item["eventRanges"] if version == 1 else [item]:
                self.statuses.append((entry["eventRangeID"], entry["eventStatus"]))
        return self.client.update_event_ranges(reports, version)


@pytest.mark.parametrize(("sleep", "reported_running"), [("0", False), ("1.5", True)])
def test_only_ranges_running_a_while_are_reported_running(
    input_file, tmp_path, monkeypatch, sleep, reported_running
):
    """A range that ends within ``RUNNING_REPORT_DELAY`` goes from sent to finished."""
    from eventservice.pilot.main import Pilot
    from eventservice.pilot.offline import OfflineClient

    monkeypatch.setenv("PAYLOAD_SLEEP", sleep)
    job, ranges = offline_es_job(6, input_file, "sleep", 2)
    client = RangeReportRecorder(OfflineClient(job, ranges, tmp_path / "work"))
    Pilot(client, "OFFLINE", tmp_path / "work", max_jobs=1).run()
    assert client.client.counts() == {"finished": 2}
    running = {rid for rid, status in client.statuses if status == "running"}
    assert running == ({r["eventRangeID"] for r in ranges} if reported_running else set())
