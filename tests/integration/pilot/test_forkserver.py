"""Payloads forked from a pre-imported interpreter behave as payloads started afresh."""

from __future__ import annotations

import os
import shlex
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from eventservice.pilot.executors.base import PayloadProcess, payload_environment
from eventservice.pilot.forkserver import ForkedPayload, ForkServer, PayloadStarter
from eventservice.pilot.logs import PAYLOAD_STDERR, PAYLOAD_STDOUT
from eventservice.proc import is_running

#: An entry point for the server in tests: what it does is chosen by its arguments.
ENTRY_MODULE = """
import atexit, os, sys, threading, time

def main():
    action, *rest = sys.argv[1:]
    if action == "echo":
        print("cwd", os.getcwd())
        print("var", os.environ.get("FORK_TEST_VAR"))
        print("argv", sys.argv)
        print("to stderr", file=sys.stderr)
    elif action == "exit":
        sys.exit(int(rest[0]))
    elif action == "raise":
        raise RuntimeError("payload broke")
    elif action == "sleep":
        time.sleep(float(rest[0]))
    elif action == "burn":
        end = time.process_time() + float(rest[0])
        while time.process_time() < end:
            pass
    elif action == "finish-up":
        def later():
            time.sleep(0.3)
            open("thread.done", "w").write("x")
        threading.Thread(target=later).start()
        atexit.register(lambda: open("atexit.done", "w").write("x"))
"""


@pytest.fixture
def server(tmp_path: Path):
    helpers = tmp_path / "helpers"
    helpers.mkdir()
    (helpers / "fork_entry.py").write_text(textwrap.dedent(ENTRY_MODULE))
    env = {**payload_environment(None, 1), "PYTHONPATH": str(helpers)}
    server = ForkServer(env, preload=("fork_entry",), entry="fork_entry:main")
    yield server
    server.close()


def fork(server: ForkServer, cwd: Path, *argv: str, **env: str) -> ForkedPayload:
    cwd.mkdir(parents=True, exist_ok=True)
    return ForkedPayload(server, " ".join(argv), list(argv), cwd, {**server.env, **env})


def test_runs_in_its_directory_with_its_environment_and_logs(server, tmp_path):
    job = tmp_path / "job"
    payload = fork(server, job, "echo", "a b", FORK_TEST_VAR="hello")
    assert payload.wait(30) == 0
    out = (job / PAYLOAD_STDOUT).read_text()
    assert f"cwd {job}" in out
    assert "var hello" in out
    assert "argv ['eventservice', 'echo', 'a b']" in out
    assert (job / PAYLOAD_STDERR).read_text() == "to stderr\n"
    assert payload.cpu_seconds is not None


@pytest.mark.parametrize(
    ("argv", "code"), [(("exit", "3"), 3), (("exit", "0"), 0), (("raise",), 1)]
)
def test_exit_codes_are_the_interpreters(server, tmp_path, argv, code):
    payload = fork(server, tmp_path / "job", *argv)
    assert payload.wait(30) == code
    if argv == ("raise",):
        assert "RuntimeError: payload broke" in (tmp_path / "job" / PAYLOAD_STDERR).read_text()


def test_cpu_is_the_payloads_own(server, tmp_path):
    payload = fork(server, tmp_path / "job", "burn", "0.3")
    assert payload.wait(30) == 0
    assert 0.25 <= payload.cpu_seconds < 5


def test_threads_and_exit_handlers_finish_before_the_exit(server, tmp_path):
    job = tmp_path / "job"
    assert fork(server, job, "finish-up").wait(30) == 0
    assert (job / "thread.done").exists()
    assert (job / "atexit.done").exists()


def test_kill_stops_its_session(server, tmp_path):
    payload = fork(server, tmp_path / "job", "sleep", "60")
    assert os.getpgid(payload.process.pid) == payload.process.pid  # a session of its own
    assert payload.poll() is None
    started = time.monotonic()
    assert payload.kill(grace=5) == -signal.SIGTERM
    assert payload.killed
    assert time.monotonic() - started < 5


def test_server_is_out_of_reach_of_the_pilots_drain_signals(server):
    """SIGTERM to the pilot's process group must not take the server with it."""
    assert os.getpgid(server.process.pid) != os.getpgrp()


def test_server_ends_when_the_pilot_dies(tmp_path):
    """Its stdin closes with the pilot: nothing is left behind."""
    script = (
        "import sys, os; from eventservice.pilot.forkserver import ForkServer; "
        "s = ForkServer(dict(os.environ), preload=()); print(s.process.pid, flush=True); "
        "os._exit(0)"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    server_pid = int(out.stdout)
    deadline = time.monotonic() + 10
    while is_running(server_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_running(server_pid)


def test_a_payload_outlives_a_lost_server_and_its_end_is_seen(server, tmp_path):
    payload = fork(server, tmp_path / "job", "sleep", "60")
    server.process.kill()
    server.process.wait()
    deadline = time.monotonic() + 10
    while server.alive and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not server.alive
    assert payload.poll() is None  # still running, in its own session
    os.killpg(payload.process.pid, signal.SIGKILL)
    # Its exit status went to whoever adopted it: the code is lost, the end is not.
    assert payload.wait(10) == -1
    with pytest.raises(Exception, match="ended"):
        fork(server, tmp_path / "job2", "exit", "0")


def test_closing_ends_the_server(server):
    server.close()
    assert server.process.returncode == 0


# --- the starter: which commands it forks ---------------------------------------------

OWN_CLI = f"{shlex.quote(sys.executable)} -m eventservice payload --help"


def test_starter_forks_this_installations_cli_from_one_server(tmp_path):
    starter = PayloadStarter()
    try:
        first = starter.start(OWN_CLI, tmp_path)
        assert isinstance(first, ForkedPayload)
        assert first.wait(60) == 0
        assert "merge" in (tmp_path / PAYLOAD_STDOUT).read_text()
        second = starter.start(OWN_CLI, tmp_path)
        assert isinstance(second, ForkedPayload)
        assert second.server is first.server
        assert second.wait(60) == 0
        # The imports were done once, in the server: a forked help costs little.
        assert second.cpu_seconds < 0.5
    finally:
        starter.close()
    assert first.server.process.returncode == 0


@pytest.mark.parametrize(
    "command",
    [
        "echo hello",
        f"{OWN_CLI} > out.txt",
        f"FOO=1 {OWN_CLI}",
        f"{OWN_CLI} && echo done",
        "/usr/bin/python3 -m eventservice payload --help",
    ],
)
def test_starter_leaves_other_commands_to_the_shell(tmp_path, command):
    starter = PayloadStarter()
    try:
        payload = starter.start(command, tmp_path)
        assert type(payload) is PayloadProcess
        payload.wait(60)
    finally:
        starter.close()
    assert not starter._servers


def test_starter_does_not_fork_into_other_thread_pool_sizes(tmp_path):
    starter = PayloadStarter()
    try:
        forked = starter.start(OWN_CLI, tmp_path, cores=2)
        assert isinstance(forked, ForkedPayload)
        forked.wait(60)
        other = starter.start(OWN_CLI, tmp_path, env={"OMP_NUM_THREADS": "7"}, cores=2)
        assert type(other) is PayloadProcess
        other.wait(60)
    finally:
        starter.close()


def test_disabled_starter_starts_subprocesses(tmp_path):
    payload = PayloadStarter(enabled=False).start(OWN_CLI, tmp_path)
    assert type(payload) is PayloadProcess
    assert payload.wait(60) == 0


def test_starter_falls_back_when_the_server_cannot_start_payloads(tmp_path):
    starter = PayloadStarter(preload=("no_such_module_here",))
    try:
        payload = starter.start(OWN_CLI, tmp_path)
        assert type(payload) is PayloadProcess
        assert payload.wait(60) == 0
        assert type(starter.start(OWN_CLI, tmp_path)) is PayloadProcess
    finally:
        starter.close()


def test_starter_falls_back_when_the_server_process_cannot_be_started(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr("eventservice.pilot.forkserver.ForkServer.__init__", refuse)
    starter = PayloadStarter()
    payload = starter.start(OWN_CLI, tmp_path)
    assert type(payload) is PayloadProcess
    assert payload.wait(60) == 0
