"""Executor helpers: command templates, payload environment, final report fields, offline."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from eventservice.errors import InvalidInput
from eventservice.pilot.executors import executor_for
from eventservice.pilot.executors.base import (
    THREAD_POOL_VARIABLES,
    JobResult,
    fill_template,
    payload_environment,
)
from eventservice.pilot.executors.eventservice import ranges_wanted, run_eventservice
from eventservice.pilot.executors.generic import run_generic
from eventservice.pilot.executors.merge import run_merge
from eventservice.pilot.job import ExecutorKind
from eventservice.pilot.offline import OfflineClient


def test_templates_are_filled_and_quoted():
    command = fill_template("merge --out {output} {inputs}", ["/a b/x", "/c"], "/o ut")
    assert command == "merge --out '/o ut' '/a b/x' /c"
    assert fill_template("sim {input} > {output}", ["/in"], "/out") == "sim /in > /out"
    assert fill_template("run", [], None) == "run"


def test_payload_environment_puts_the_pilot_installation_first(monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin")
    env = payload_environment({"PILOT_EVENTRANGECHANNEL": "@x"})
    assert env["PATH"].split(os.pathsep) == [str(Path(sys.executable).parent), "/usr/bin"]
    assert env["PILOT_EVENTRANGECHANNEL"] == "@x"


def test_payload_thread_pools_follow_the_job_cores_unless_the_site_set_them(monkeypatch):
    for variable in THREAD_POOL_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the site's choice stays
    env = payload_environment(cores=8)
    assert env["OMP_NUM_THREADS"] == "2"
    assert env["OPENBLAS_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "8"


def test_final_update_fields():
    failed = JobResult("failed", n_events=3, error_code=1305, error_diag="boom", exit_code=3)
    fields = failed.update_fields(4)
    assert fields["exeErrorCode"] == 3 and fields["pilotErrorCode"] == 1305
    assert fields["coreCount"] == 4 and fields["nEvents"] == 3
    stopped = JobResult("failed", error_code=1144).update_fields(1)
    assert "exeErrorCode" not in stopped
    done = JobResult("finished", output_files=[{"lfn": "x", "path": "file:///x"}])
    assert done.update_fields(1)["outputFiles"][0]["lfn"] == "x" and done.succeeded


def test_ranges_are_asked_for_ahead_except_near_the_end_of_the_chunk():
    # Ahead: 2 x cores once fewer than cores are buffered, so no worker waits for a call.
    assert ranges_wanted(cores=2, buffered=1, waiting=0, end_game=False) == 4
    assert ranges_wanted(cores=2, buffered=2, waiting=0, end_game=False) == 0
    assert ranges_wanted(cores=1, buffered=0, waiting=1, end_game=False) == 2
    # Near the end: only what the waiting workers lack, nothing buffered ahead.
    assert ranges_wanted(cores=2, buffered=0, waiting=0, end_game=True) == 0
    assert ranges_wanted(cores=4, buffered=0, waiting=3, end_game=True) == 3
    assert ranges_wanted(cores=4, buffered=2, waiting=3, end_game=True) == 1
    assert ranges_wanted(cores=4, buffered=3, waiting=1, end_game=True) == 0


def test_executor_choice():
    assert executor_for(ExecutorKind.EVENTSERVICE) is run_eventservice
    assert executor_for(ExecutorKind.MERGE) is run_merge
    assert executor_for(ExecutorKind.GENERIC) is run_generic


def test_offline_client_hands_out_job_once_and_ranges_in_order(tmp_path):
    job = {"PandaID": 1, "eventService": "True", "coreCount": 3, "queue": {"heartbeat": 5}}
    ranges = [{"eventRangeID": f"1-1-1-{i}-1"} for i in range(5)]
    (tmp_path / "job.json").write_text(json.dumps(job))
    (tmp_path / "ranges.json").write_text(json.dumps(ranges))
    client = OfflineClient.from_files(tmp_path / "job.json", tmp_path / "ranges.json", tmp_path)
    queue = client.get_queue("x")
    assert queue["corecount"] == 3 and queue["heartbeat"] == 5
    assert client.get_job("x")["PandaID"] == 1 and client.get_job("x") is None
    assert [r["eventRangeID"] for r in client.get_event_ranges(1, 1, 1, 3)][-1] == "1-1-1-2-1"
    assert (
        len(client.get_event_ranges(1, 1, 1, 3)) == 2 and client.get_event_ranges(1, 1, 1, 3) == []
    )
    client.update_event_ranges([{"eventRangeID": "1-1-1-0-1", "eventStatus": "finished"}])
    client.update_event_ranges([{"eventRangeID": "1-1-1-0-1", "eventStatus": "failed"}])
    client.update_job(1, "finished")
    assert client.counts() == {"finished": 1} and client.final_state() == "finished"
    report = json.loads((tmp_path / "offline-report.json").read_text())
    assert report["job"]["state"] == "finished"


def test_offline_needs_ranges_for_es_jobs(tmp_path):
    (tmp_path / "job.json").write_text(json.dumps({"PandaID": 1, "eventService": "True"}))
    with pytest.raises(InvalidInput, match="ranges-file"):
        OfflineClient.from_files(tmp_path / "job.json", None, tmp_path)
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(InvalidInput):
        OfflineClient.from_files(tmp_path / "bad.json", None, tmp_path)


def loop_state(**overrides):
    """What EventServiceRun._wait_time reads, at rest: a connected payload, nothing due."""
    state = SimpleNamespace(
        channel=SimpleNamespace(connected=1),
        _running=[],
        _last_flush=0.0,
        _out_of_ranges_at=None,
        ctx=SimpleNamespace(
            journal=SimpleNamespace(unsent=False), control=SimpleNamespace(drain_deadline=None)
        ),
    )
    for name, value in overrides.items():
        target = state.ctx if name in ("journal", "control") else state
        setattr(target, name, value)
    return state


def test_the_loop_sleeps_until_something_falls_due(monkeypatch):
    from eventservice.pilot.executors import eventservice as es

    monkeypatch.setattr(es.time, "monotonic", lambda: 100.0)
    wait = es.EventServiceRun._wait_time
    assert wait(loop_state()) == es.MAX_WAIT  # only what no event announces
    assert wait(loop_state(channel=SimpleNamespace(connected=0))) == es.PAYLOAD_POLL
    # A range running since 99.3 is reported running at 100.3.
    assert wait(loop_state(_running=[(99.3, {}), (99.9, {})])) == pytest.approx(0.3)
    # A report waiting: the next flush is allowed FLUSH_INTERVAL after the last one...
    unsent = SimpleNamespace(unsent=True)
    assert wait(loop_state(journal=unsent, _last_flush=99.9)) == pytest.approx(0.1)
    # ...and is due at once when that is past.
    assert wait(loop_state(journal=unsent, _last_flush=50.0)) == 0.0
    # Out of ranges: the payload has IDLE_WAIT s to go idle.
    assert wait(loop_state(_out_of_ranges_at=100.3 - es.IDLE_WAIT)) == pytest.approx(0.3)
    assert wait(loop_state(_out_of_ranges_at=90.0)) == es.MAX_WAIT  # past: acted on
    assert wait(loop_state(control=SimpleNamespace(drain_deadline=100.2))) == pytest.approx(0.2)


def test_an_answer_naming_the_job_stands_for_a_heartbeat_and_its_command_is_obeyed():
    from eventservice.pilot.executors.eventservice import EventServiceRun
    from eventservice.pilot.signals import PilotControl

    heard = []
    run = SimpleNamespace(
        job=SimpleNamespace(panda_id=7),
        ctx=SimpleNamespace(
            heartbeat=SimpleNamespace(heard=lambda: heard.append(True)), control=PilotControl()
        ),
    )
    EventServiceRun._answered(run, {"8": "tobekilled"})  # another job's answer
    assert heard == [] and not run.ctx.control.draining
    EventServiceRun._answered(run, {"7": None})
    assert heard == [True] and not run.ctx.control.draining
    EventServiceRun._answered(run, {"7": "softkill"})
    assert len(heard) == 2 and run.ctx.control.draining and not run.ctx.control.killed
