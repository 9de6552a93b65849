"""Stopping a pilot: SIGTERM drain, SIGKILL (lease expiry), the softkill command."""

from __future__ import annotations

import signal

from tests.integration.pilot.conftest import PilotProcess, es_task, storages


def states(dispatcher, task_id):
    return [r["state"] for r in dispatcher.ranges(task_id)]


def test_sigterm_drains_releases_in_flight_and_reports_finished(
    dispatcher, stores, input_file, tmp_path
):
    dispatcher.add_queue("Q", corecount=2, zip_time_gap=0, heartbeat=1, storages=storages(stores))
    task_id = es_task(dispatcher, input_file, n_events=40, per_worker=1, mode="sleep")
    pilot = PilotProcess(
        dispatcher.url,
        "Q",
        tmp_path / "pilot",
        "--cores",
        "2",
        "--grace",
        "0.5",
        env={"PAYLOAD_SLEEP": "1.5"},
    )
    dispatcher.wait_for(lambda: "finished" in states(dispatcher, task_id), 60, "a finished range")
    pilot.signal(signal.SIGTERM)
    code = pilot.wait(60)
    assert code == 0, pilot.output()
    ranges = dispatcher.ranges(task_id)
    finished = [r for r in ranges if r["state"] == "finished"]
    released = [r for r in ranges if r["attemptNr"] == 2]
    assert finished and all(r["attemptNr"] == 1 for r in finished)
    # In-flight and buffered ranges were handed back at once (not via the 3 s lease):
    # back to ready with a new attempt, and the release did not count as a failure.
    assert released and all(r["state"] == "ready" and r["failures"] == 0 for r in released)
    assert not [r for r in ranges if r["state"] in ("sent", "running")]
    assert "signal SIGTERM" in pilot.output()
    job = dispatcher.jobs(task_id)[0]
    assert job["state"] == "finished", job
    assert len(dispatcher.jobs(task_id)) >= 1 and "job 1: finished" in pilot.output()


def test_sigkill_ranges_come_back_after_the_lease(dispatcher, stores, input_file, tmp_path):
    dispatcher.add_queue("Q", corecount=2, zip_time_gap=0, heartbeat=1, storages=storages(stores))
    task_id = es_task(dispatcher, input_file, n_events=12, per_worker=1, mode="sleep")
    first = PilotProcess(
        dispatcher.url, "Q", tmp_path / "p1", "--cores", "2", env={"PAYLOAD_SLEEP": "1"}
    )
    dispatcher.wait_for(lambda: "finished" in states(dispatcher, task_id), 60, "a finished range")
    first.signal(signal.SIGKILL)
    first.wait(10)
    held = [r for r in dispatcher.ranges(task_id) if r["state"] in ("sent", "running")]
    assert held  # the dead pilot still holds ranges, until its lease expires
    dispatcher.wait_for(
        lambda: not [r for r in dispatcher.ranges(task_id) if r["state"] in ("sent", "running")],
        30,
        "lease expiry",
    )
    second = PilotProcess(
        dispatcher.url, "Q", tmp_path / "p2", "--cores", "2", env={"PAYLOAD_SLEEP": "0"}
    )
    assert second.wait(90) == 0, second.output()
    task = dispatcher.task(task_id)
    assert task["state"] == "done", (task, second.output())
    assert task["rangesRedispatched"] >= len(held)


def test_softkill_command_drains_the_job(dispatcher, stores, input_file, tmp_path):
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
        env={"PAYLOAD_SLEEP": "0.3"},
    )
    dispatcher.wait_for(lambda: "finished" in states(dispatcher, task_id), 60, "a finished range")
    panda_id = dispatcher.jobs(task_id)[0]["PandaID"]
    dispatcher.api("POST", f"/jobs/{panda_id}/command", json={"command": "softkill"})
    assert pilot.wait(60) == 0, pilot.output()
    assert "softkill" in pilot.output()
    job = dispatcher.jobs(task_id)[0]
    assert job["state"] == "finished", job
    ranges = dispatcher.ranges(task_id)
    done = [r for r in ranges if r["state"] == "finished"]
    assert 0 < len(done) < 40
    # Drained, not failed: nothing used up an attempt, nothing is left held.
    assert all(r["failures"] == 0 for r in ranges)
    assert not [r for r in ranges if r["state"] in ("sent", "running", "failed")]
