"""A pilot keeps an idle ES payload for its next ES job with the same command."""

from __future__ import annotations

import os
import signal
import tarfile
import time
from pathlib import Path

import pytest

from eventservice.proc import descendants
from tests.integration.pilot.conftest import (
    ES_PAYLOAD,
    MERGE,
    PYTHON,
    PilotProcess,
    es_command,
    run_pilot,
    storages,
)

#: A payload whose extra connection never asks for ranges (a monitor, say), so it is
#: never idle: the job must still end, by telling its worker there are no more events.
NEVER_IDLE = """
import os, sys, time
from eventservice.payload.channel import ChannelClient
monitor = ChannelClient.from_environment()
with ChannelClient.from_environment() as channel:
    for event_range in channel.ranges():
        path = os.path.abspath(event_range["eventRangeID"] + ".out")
        open(path, "w").write("x\\n")
        channel.report_done(path, event_range["eventRangeID"], 0.0, 0.0)
monitor.close()
"""


def two_jobset_task(dispatcher, tmp_path: Path, transformation: str) -> int:
    """Two inputs, so two jobsets of one consumer each: one pilot runs both in turn."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    inputs = []
    for index in range(2):
        path = tmp_path / f"input{index}.dat"
        path.write_bytes(os.urandom(1024))
        inputs.append({"url": str(path), "nEvents": 6})
    return dispatcher.submit(
        inputs,
        transformation=transformation,
        mergeTransformation=MERGE,
        params={"nEventsPerJob": 6, "nEventsPerWorker": 2, "nEsConsumers": 1, "esFraction": 1},
    )


def es_jobs(dispatcher, task_id: int) -> list[dict]:
    return [job for job in dispatcher.jobs(task_id) if job["eventService"] == 1]


def test_consecutive_es_jobs_share_one_payload(dispatcher, stores, tmp_path):
    dispatcher.add_queue("Q", corecount=1, not_es_to_zip=True, storages=storages(stores))
    task_id = two_jobset_task(dispatcher, tmp_path, es_command())
    code, output = run_pilot(dispatcher, "Q", tmp_path / "pilot", "--cores", "1")
    assert code == 0, output
    task = dispatcher.task(task_id)
    assert task["state"] == "done", (task, output)
    assert task["ranges"] == {"merged": 6}
    # One payload served both consumer jobs, a merge job running in between.
    assert output.count(f"starting payload: {es_command()}") == 1, output
    assert "reusing the payload kept from 1 earlier job(s)" in output
    assert "kept payload closed after 2 job(s), exit 0" in output
    finished = [job for job in es_jobs(dispatcher, task_id) if job["state"] == "finished"]
    assert len(finished) == 2
    # Each job's log holds the payload's output of its own turn, and the kept
    # payload's directory is gone with it.
    for job in finished:
        with tarfile.open(next(stores["logs"].rglob(f"*.{job['PandaID']}.log.tgz"))) as tar:
            assert {"pilot.log", "payload.stdout", "payload.stderr"} <= set(tar.getnames())
    assert not list((tmp_path / "pilot" / "payloads").iterdir())


def test_new_payload_per_job_starts_one_per_job(dispatcher, stores, tmp_path):
    dispatcher.add_queue("Q", corecount=1, not_es_to_zip=True, storages=storages(stores))
    task_id = two_jobset_task(dispatcher, tmp_path, es_command())
    code, output = run_pilot(
        dispatcher, "Q", tmp_path / "pilot", "--cores", "1", "--new-payload-per-job"
    )
    assert code == 0, output
    assert dispatcher.task(task_id)["state"] == "done", output
    assert output.count(f"starting payload: {es_command()}") == 2, output
    assert "reusing" not in output


def test_a_job_with_another_command_closes_the_kept_payload(dispatcher, stores, tmp_path):
    dispatcher.add_queue("Q", corecount=1, not_es_to_zip=True, storages=storages(stores))
    first = two_jobset_task(dispatcher, tmp_path / "a", es_command())
    # The same payload under another command line.
    other = f"PAYLOAD_SLEEP=0 {es_command()}"
    second = two_jobset_task(dispatcher, tmp_path / "b", other)
    code, output = run_pilot(dispatcher, "Q", tmp_path / "pilot", "--cores", "1")
    assert code == 0, output
    assert dispatcher.task(first)["state"] == "done"
    assert dispatcher.task(second)["state"] == "done"
    assert output.count(f"starting payload: {es_command()}") == 1, output
    assert output.count(f"starting payload: {other}") == 1, output
    assert "closing the kept payload: this job needs another" in output


def test_a_payload_that_never_goes_idle_is_told_no_more_events(dispatcher, stores, tmp_path):
    script = tmp_path / "never_idle.py"
    script.write_text(NEVER_IDLE)
    dispatcher.add_queue("Q", corecount=1, not_es_to_zip=True, storages=storages(stores))
    task_id = two_jobset_task(dispatcher, tmp_path, f"{PYTHON} {script}")
    code, output = run_pilot(dispatcher, "Q", tmp_path / "pilot", "--cores", "1")
    assert code == 0, output
    assert dispatcher.task(task_id)["state"] == "done", output
    assert "payload not idle 2 s after the last range: ending it" in output
    assert output.count(f"starting payload: {PYTHON} {script}") == 2, output


def kept_payload_pids(pilot: PilotProcess, dispatcher, task_id: int) -> list[int]:
    """Wait for the task to be done while the pilot waits for jobs; its payload's PIDs."""
    dispatcher.wait_for(lambda: dispatcher.task(task_id)["state"] == "done", 60, "task done")
    dispatcher.wait_for(lambda: "payload kept for the next job" in pilot.output(), 10, "kept")
    pids = [
        pid
        for pid in descendants(pilot.process.pid)
        if str(ES_PAYLOAD) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    ]
    assert pids, pilot.output()
    return pids


def gone(pids: list[int], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [Path(f"/proc/{pid}/stat") for pid in pids]
        if all(
            not s.exists() or s.read_text().rsplit(")", 1)[-1].split()[0] == "Z" for s in states
        ):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_kept_payload_ends_with_its_pilot(dispatcher, stores, tmp_path, sig):
    dispatcher.add_queue("Q", corecount=1, not_es_to_zip=True, storages=storages(stores))
    task_id = two_jobset_task(dispatcher, tmp_path, es_command())
    pilot = PilotProcess(
        dispatcher.url, "Q", tmp_path / "pilot", "--cores", "1", "--wait-for-jobs", "120"
    )
    pids = kept_payload_pids(pilot, dispatcher, task_id)
    pilot.signal(sig)
    pilot.wait(30)
    # Drained, the pilot says no more events; killed, its channel closes: either way
    # the payload ends instead of waiting for ranges forever.
    assert gone(pids), pilot.output()
    if sig == signal.SIGTERM:
        assert "kept payload closed after 2 job(s), exit 0" in pilot.output()
