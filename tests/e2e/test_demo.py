"""The CLI as a user runs it: ``eventservice demo`` end to end, with things going wrong."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pytest

from eventservice.demo.run import QUIET_TASK_POLL_INTERVAL
from tests.conftest import POSTGRES_URL, require_service, reset_postgres

pytestmark = pytest.mark.slow


#: The tests' workload unless one says otherwise: tiny ranges, many of them, in seconds.
SMALL_RANGES = ("--cpu-per-event", "0.002", "--events-per-range", "5")


def run_demo(tmp_path: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "eventservice",
            "demo",
            "--no-live",
            "--keep",
            str(tmp_path / "demo"),
            *SMALL_RANGES,
            *args,  # after SMALL_RANGES: an option given twice takes its last value
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
    )


def assert_verified(result: subprocess.CompletedProcess[str], events: int) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"identical: tree 'hits', {events} events" in result.stdout, result.stdout


def test_demo_merged_output_equals_sequential_run(tmp_path: Path) -> None:
    result = run_demo(tmp_path, "--events", "300", "--pilots", "2", "--cores", "2")
    assert_verified(result, 300)
    assert "events 300" in result.stdout
    # The verification's sequential run is the yardstick the summary gives for CPU spent.
    assert re.search(
        r"a plain sequential run of the same events .* took [0-9.]+ CPU s", result.stdout
    )
    assert (tmp_path / "demo" / "merged.000.root").stat().st_size > 0
    # The pilots fork the reference payload and the merge from a pre-imported interpreter.
    logs = "".join(p.read_text() for p in (tmp_path / "demo" / "pilots").glob("*.log"))
    forked = [line for line in logs.splitlines() if "(forked, imports done)" in line]
    assert any("payload merge" in line for line in forked), logs[-3000:]
    assert any("payload simulate" in line for line in forked), logs[-3000:]


def test_demo_survives_random_sigkills(tmp_path: Path) -> None:
    """Preemption: 1,000 events, 4 pilots, a random SIGKILL every few seconds."""
    # 10 ms per event: at least 5 s of payload CPU on 2 cores, so kills (seeded, mean
    # 3 s) happen however fast the machine is.
    result = run_demo(
        tmp_path,
        *("--events", "1000", "--cpu-per-event", "0.01", "--pilots", "4", "--cores", "2"),
        *("--preempt-every", "3"),
    )
    assert_verified(result, 1000)
    killed = int(re.search(r"(\d+) killed", result.stdout).group(1))
    assert killed >= 1, result.stdout


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_demo_survives_dispatcher_crash(
    tmp_path: Path, backend: str, postgres_available: bool
) -> None:
    """SIGKILL the dispatcher mid-run, restart it on the same database; the run completes."""
    # 600 events x 20 ms: at least 6 s of payload CPU on 2 cores, so the crash at 3 s
    # falls inside the run however fast the machine starts pilots.
    args = ["--events", "600", "--cpu-per-event", "0.02", "--pilots", "3"]
    args += ["--crash-dispatcher-at", "3"]
    if backend == "postgresql":
        require_service(postgres_available, f"PostgreSQL at {POSTGRES_URL}")
        reset_postgres()
        args += ["--db", POSTGRES_URL]
    result = run_demo(tmp_path, *args)
    assert_verified(result, 600)
    assert "dispatcher killed (SIGKILL), restarting" in result.stdout


def test_demo_survives_storage_outage(tmp_path: Path) -> None:
    """es_events unwritable for a while: bundles go to es_failover and the run verifies."""
    result = run_demo(
        tmp_path,
        *("--events", "600", "--pilots", "2", "--zip-every", "2", "--storage-outage", "2:10"),
    )
    assert_verified(result, 600)
    assert "is down" in result.stdout and "is back" in result.stdout
    assert list((tmp_path / "demo" / "failover").rglob("*.tar")), "nothing went to es_failover"


def test_demo_spare_consumers_each_range_once(tmp_path: Path) -> None:
    """More consumers than pilots (spares for replacements): still every event once."""
    result = run_demo(
        tmp_path, "--events", "400", "--pilots", "2", "--consumers", "4", "--preempt-every", "4"
    )
    assert_verified(result, 400)


def test_demo_file_level_mode_verifies(tmp_path: Path) -> None:
    result = run_demo(tmp_path, "--events", "400", "--files", "2", "--mode", "file")
    assert_verified(result, 200)
    assert result.stdout.count("identical") == 2


def test_demo_result_times_the_task_and_its_sequential_run(tmp_path: Path) -> None:
    """What the preemption benchmark reads: the task's end by the dispatcher's record
    (no later than the poll that saw it), the verification's sequential CPU and when
    the pilots started; without a live view the task is read once a second at most."""
    # In a process of its own: run_demo makes its process the subreaper of orphans.
    script = (
        "import json, pathlib, sys\n"
        "from eventservice.demo import DemoConfig, run_demo\n"
        "r = run_demo(DemoConfig(events=200, pilots=2, cores=1, live=False,"
        " cpu_per_event=0.002, events_per_range=5, keep=pathlib.Path(sys.argv[1])))\n"
        "print(json.dumps([r.ok, r.error, r.task_seconds, [t for t, _ in r.samples],"
        " r.sequential_cpu, r.pilot_starts, r.steal_seconds]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    ok, error, task_seconds, polls, sequential_cpu, starts, steal = json.loads(done.stdout)
    assert ok, error
    assert 0 < task_seconds <= polls[-1]
    assert all(later - earlier >= QUIET_TASK_POLL_INTERVAL for earlier, later in pairwise(polls))
    assert sequential_cpu > 0
    # The pilots start together, as slots of one batch, not one per poll.
    assert len(starts) == 2 and max(starts) < 0.1, starts
    # The hypervisor's share is read off /proc/stat here (Linux): at most all the cores.
    assert steal is not None and 0 <= steal <= task_seconds * (os.cpu_count() or 1)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--events", "0"], "--events"),
        (["--storage-outage", "soon"], "START:DURATION"),
        (["--mode", "batch"], "--mode"),
        (["--consumers", "0"], "--consumers"),
        (["--zip-every", "0"], "--zip-every"),
    ],
)
def test_demo_rejects_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_demo(tmp_path, *args)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
