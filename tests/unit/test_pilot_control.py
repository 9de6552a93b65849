"""Drain/kill control, signals, heartbeat commands and deadlines, and layering."""

from __future__ import annotations

import ast
import os
import signal
import time
from pathlib import Path

import pytest

import eventservice
from eventservice.errors import DispatcherUnavailable
from eventservice.pilot.heartbeat import Heartbeat
from eventservice.pilot.signals import PilotControl, install_signal_handlers

PACKAGE = Path(eventservice.__file__).parent


def test_pilot_and_client_never_import_the_dispatcher_side():
    forbidden = ("eventservice.store", "eventservice.dispatcher", "eventservice.server")
    offenders = []
    for folder in ("pilot", "client"):
        for path in (PACKAGE / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                offenders += [f"{path.name}: {n}" for n in names if n.startswith(forbidden)]
    assert offenders == []
    assert list((PACKAGE / "pilot").rglob("*.py"))  # the check looked at something


def test_job_commands_are_forgotten_between_jobs_but_signals_are_not():
    control = PilotControl(grace=30)
    control.apply_command("softkill")
    assert control.draining and not control.killed and not control.stop_pilot
    control.reset_for_next_job()
    assert not control.draining
    control.apply_command("tobekilled")
    assert control.killed
    control.reset_for_next_job()
    assert not control.killed
    control.request_drain("lifetime", pilot_wide=True)
    control.reset_for_next_job()
    assert control.draining and control.stop_pilot


def test_grace_period():
    control = PilotControl(grace=0.05)
    assert not control.grace_expired()
    control.request_drain("x")
    assert not control.grace_expired()
    time.sleep(0.1)
    assert control.grace_expired()


def test_signals_drain_then_kill():
    control = PilotControl(grace=10)
    restore = install_signal_handlers(control)
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)
        assert control.draining and not control.killed and control.stop_pilot
        assert "SIGUSR1" in (control.reason or "")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert control.killed
    finally:
        restore()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


class FakeClient:
    def __init__(self, commands):
        self.commands = list(commands)
        self.beats = []

    def update_job(self, panda_id, state, **fields):
        self.beats.append((panda_id, state, fields))
        command = self.commands.pop(0) if self.commands else None
        if command == "down":
            raise DispatcherUnavailable("down")
        return command


def test_heartbeat_beats_and_obeys():
    client = FakeClient(["down", None, "softkill"])
    control = PilotControl()
    heartbeat = Heartbeat(client, 4, 0.05, control, progress=lambda: {"nEvents": 2})
    heartbeat.start()
    deadline = time.monotonic() + 5
    while not control.draining and time.monotonic() < deadline:
        time.sleep(0.02)
    heartbeat.stop()
    assert control.draining and "softkill" in control.reason
    assert client.beats[0] == (4, "running", {"nEvents": 2})
    count = len(client.beats)
    time.sleep(0.15)
    assert len(client.beats) == count  # stopped means stopped


def test_heartbeat_wakes_the_executor_on_a_command():
    control = PilotControl()
    heartbeat = Heartbeat(FakeClient([None, "tobekilled"]), 4, 0.05, control)
    woken = []
    heartbeat.wake = lambda: woken.append(control.killed)
    heartbeat.beat()
    assert woken == []  # no command, nothing to act on
    heartbeat.beat()
    assert woken == [True]  # told after the kill was asked for


def test_no_beat_while_the_dispatcher_hears_from_the_job_otherwise():
    client = FakeClient([])
    heartbeat = Heartbeat(client, 4, 0.5, PilotControl())
    heartbeat.start()
    deadline = time.monotonic() + 5
    while not client.beats and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(client.beats) == 1  # the first beat goes at once
    for _ in range(30):  # an updateEventRanges naming the job every 0.05 s, for 1.5 s
        heartbeat.heard()
        time.sleep(0.05)
    assert len(client.beats) == 1
    deadline = time.monotonic() + 5  # silence: beats resume within an interval
    while len(client.beats) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    heartbeat.stop()
    assert len(client.beats) >= 2


def test_the_first_beat_is_retried_even_while_the_dispatcher_hears_from_the_job():
    # A job the dispatcher never heard as running stays `sent` there until a beat gets through.
    client = FakeClient(["down"])
    heartbeat = Heartbeat(client, 4, 0.1, PilotControl())
    heartbeat.start()
    deadline = time.monotonic() + 5
    while len(client.beats) < 2 and time.monotonic() < deadline:
        heartbeat.heard()
        time.sleep(0.02)
    heartbeat.stop()
    assert len(client.beats) >= 2 and heartbeat.beats >= 1


def test_heartbeat_soft_kills_at_the_deadline():
    control = PilotControl()
    heartbeat = Heartbeat(FakeClient([]), 4, 60, control, deadline=time.monotonic() + 0.1)
    woken = []
    heartbeat.wake = lambda: woken.append(control.draining)
    heartbeat.start()
    # The thread sleeps until the deadline, not 1 s at a time nor until a beat 60 s away.
    end = time.monotonic() + 0.9
    while not control.draining and time.monotonic() < end:
        time.sleep(0.01)
    heartbeat.stop()
    assert control.draining and control.stop_pilot
    assert woken == [True]


def test_pilot_deadline_from_maxtime_and_lifetime(tmp_path):
    from eventservice.pilot.executors.base import PilotOptions
    from eventservice.pilot.job import QueueConfig
    from eventservice.pilot.main import Pilot

    pilot = Pilot(None, "Q", tmp_path, options=PilotOptions(softkill_margin=600))
    assert pilot.deadline(QueueConfig(name="Q", maxtime=0)) is None
    assert pilot.deadline(QueueConfig(name="Q", maxtime=3600)) == pytest.approx(
        pilot.started + 3000
    )
    short = Pilot(None, "Q", tmp_path, options=PilotOptions(softkill_margin=600), lifetime=50)
    assert short.deadline(QueueConfig(name="Q", maxtime=3600)) == pytest.approx(short.started + 50)
    assert short._stop_reason(0, short.started - 1) == "lifetime over"
    assert short._stop_reason(0, None) is None


def test_control_wait_sleeps_until_a_drain_or_kill():
    import threading

    control = PilotControl()
    start = time.monotonic()
    assert control.wait(0.05) is False
    assert time.monotonic() - start >= 0.05
    for ask in ("request_drain", "request_kill"):
        control = PilotControl()
        threading.Timer(0.05, getattr(control, ask), args=("stop",)).start()
        start = time.monotonic()
        assert control.wait(10) is True
        assert time.monotonic() - start < 2


class NoJobsClient:
    """A dispatcher with an empty queue."""

    def __init__(self):
        self.get_job_calls = 0

    def get_queue(self, name):
        return {"name": name}

    def get_job(self, queue, **fields):
        self.get_job_calls += 1
        return None


@pytest.mark.parametrize(("wait", "calls"), [(0.0, 1), (0.7, 3)])
def test_pilot_asks_for_jobs_for_wait_for_jobs_seconds(tmp_path, wait, calls):
    from eventservice.pilot.main import JOB_POLL_INTERVAL, Pilot

    assert JOB_POLL_INTERVAL == 0.5  # asks at 0, 0.5 and 1.0 s for wait=0.7
    client = NoJobsClient()
    summary = Pilot(client, "Q", tmp_path, wait_for_jobs=wait, router=object()).run()
    assert summary.stopped_because == "no more jobs"
    assert client.get_job_calls == calls


def test_a_waiting_pilot_stops_on_a_drain(tmp_path):
    import threading

    from eventservice.pilot.main import Pilot

    control = PilotControl()
    pilot = Pilot(NoJobsClient(), "Q", tmp_path, wait_for_jobs=60, control=control, router=object())
    threading.Timer(
        0.3, control.request_drain, args=("signal SIGTERM",), kwargs={"pilot_wide": True}
    ).start()
    start = time.monotonic()
    summary = pilot.run()
    assert time.monotonic() - start < 5
    assert summary.stopped_because == "signal SIGTERM"
