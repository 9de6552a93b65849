"""Which payload commands the pilot may fork from its pre-imported interpreter."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eventservice.pilot.forkserver import _compatible, cli_arguments
from eventservice.pilot.forkserver_process import exit_code
from eventservice.proc import is_running

HERE = Path(sys.executable).absolute()
ENV = {"PATH": str(HERE.parent)}


@pytest.mark.parametrize(
    ("command", "arguments"),
    [
        (
            f"{HERE} -m eventservice payload merge --out x.root a.root",
            ["payload", "merge", "--out", "x.root", "a.root"],
        ),
        (f"{shlex.quote(str(HERE))} -m eventservice payload simulate", ["payload", "simulate"]),
        (f"{HERE.parent / 'python'} -m eventservice payload simulate", ["payload", "simulate"]),
        (
            f"{HERE} -m eventservice payload merge --out 'a b.root'",
            ["payload", "merge", "--out", "a b.root"],
        ),
    ],
)
def test_this_pythons_cli_is_forked(command, arguments):
    assert cli_arguments(command, ENV) == arguments


@pytest.mark.parametrize(
    "command",
    [
        "",
        "echo hello",
        "cat {inputs} > {output}",
        f"{HERE} -m eventservice payload merge > log",
        f"{HERE} -m eventservice payload merge && rm -rf x",
        f"{HERE} -m eventservice payload merge *.root",
        f"{HERE} -m eventservice payload merge $HOME/x",
        f"{HERE} -m eventservice payload merge `ls`",
        f"X=1 {HERE} -m eventservice payload merge",
        f"{HERE} -m other_module payload merge",
        f"{HERE} script.py",
        "/usr/bin/python3 -m eventservice payload merge",
        f"{HERE} -m eventservice payload 'unclosed",
    ],
)
def test_anything_else_goes_to_the_shell(command):
    assert cli_arguments(command, ENV) is None


def test_the_console_script_counts_only_when_it_is_this_installations(tmp_path):
    assert cli_arguments("eventservice payload simulate", ENV) == ["payload", "simulate"]
    other = tmp_path / "eventservice"
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    assert cli_arguments("eventservice payload simulate", {"PATH": str(tmp_path)}) is None


def test_startup_variables_must_match_the_servers():
    server = {"OMP_NUM_THREADS": "1", "PATH": "/bin"}
    assert _compatible({"OMP_NUM_THREADS": "1", "PILOT_EVENTRANGECHANNEL": "x"}, server)
    assert not _compatible({"OMP_NUM_THREADS": "2"}, server)
    assert not _compatible({"OMP_NUM_THREADS": "1", "PYTHONPATH": "/x"}, server)
    assert not _compatible({}, {**server, "PYTHONHASHSEED": "0"})


@pytest.mark.parametrize(("code", "status"), [(None, 0), (0, 0), (3, 3), (256, 0), ("bad", 1)])
def test_exit_codes_follow_the_interpreter(code, status, capsys):
    assert exit_code(SystemExit(code)) == status


def test_is_running_tells_a_zombie_from_a_living_process():
    assert is_running(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while is_running(child.pid) and time.monotonic() < deadline:
        time.sleep(0.01)  # until it has exited, unreaped: a zombie
    assert not is_running(child.pid)
    child.wait()
    assert not is_running(child.pid)
