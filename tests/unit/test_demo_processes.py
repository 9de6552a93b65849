"""The demo's process handling: a pilot killed on purpose takes its payload with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eventservice import proc
from eventservice.demo import processes

# A "pilot" that starts a "payload" in a session of its own (as the pilot does), writes
# the payload's PID to a file and waits.
PILOT = """
import subprocess, sys, time
payload = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                           start_new_session=True)
open(sys.argv[1], "w").write(str(payload.pid))
time.sleep(60)
"""

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def start_pilot(tmp_path: Path) -> tuple[processes.Child, int]:
    pid_file = tmp_path / "payload.pid"
    process = subprocess.Popen([sys.executable, "-c", PILOT, str(pid_file)], start_new_session=True)
    deadline = time.monotonic() + 20
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the pilot did not start its payload"
        time.sleep(0.02)
    return processes.Child("pilot", process), int(pid_file.read_text())


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_descendants_finds_a_grandchild_in_another_session(tmp_path: Path) -> None:
    pilot, payload = start_pilot(tmp_path)
    try:
        assert payload in proc.descendants(pilot.process.pid)
        assert processes.process_group(payload) == payload
        assert os.getpid() not in proc.descendants(pilot.process.pid)
    finally:
        pilot.kill(tree=True)


def test_tree_kill_takes_the_payload_with_the_pilot(tmp_path: Path) -> None:
    pilot, payload = start_pilot(tmp_path)
    pilot.kill(tree=True)
    assert pilot.exit_status is not None
    assert wait_dead(payload), "the payload outlived its pilot"


def test_plain_kill_leaves_a_payload_in_its_own_session(tmp_path: Path) -> None:
    # Why the demo's chaos kills use tree=True: the group kill alone misses the payload.
    pilot, payload = start_pilot(tmp_path)
    try:
        pilot.kill()
        assert pilot.exit_status is not None
        assert alive(payload)
    finally:
        os.kill(payload, 9)


def test_process_table_lists_this_process_with_its_parent() -> None:
    table = {pid: (state, parent) for pid, state, parent in proc.process_table()}
    assert table[os.getpid()][1] == os.getppid()


def test_tree_cpu_counts_a_child_still_running() -> None:
    burner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nend = time.process_time() + 0.3\n"
            "while time.process_time() < end: pass\ntime.sleep(30)",
        ]
    )
    try:
        deadline = time.monotonic() + 20
        # /proc counts whole clock ticks, its user and system parts each rounded down, so
        # 0.3 s of burn can read a tick or two short of 0.3.
        while proc.tree_cpu_seconds(burner.pid) < 0.25:
            assert time.monotonic() < deadline, "the child's CPU never showed"
            time.sleep(0.05)
        # The child's first: CPU only grows, so a tree read after it cannot be less
        # unless the tree misses the child.
        child = proc.tree_cpu_seconds(burner.pid)
        assert proc.tree_cpu_seconds(os.getpid()) >= child
    finally:
        burner.kill()
        burner.wait()


# Runs as a subreaper in a process of its own (the prctl lasts for the process): one
# child it tracks, which burns 0.2 s and exits 3, and one grandchild left behind by a
# child that exits at once, which burns 0.3 s and is adopted.
REAPER = """
import json, subprocess, sys, time
from eventservice.demo import processes
BURN = (
    "import sys, time\\nend = time.process_time() + {}\\n"
    "while time.process_time() < end: pass\\nsys.exit({})"
)
assert processes.become_subreaper()
reaper = processes.OrphanReaper()
own = processes.Child("own", subprocess.Popen([sys.executable, "-c", BURN.format(0.2, 3)]))
reaper.track(own)
orphan = "import subprocess, sys; subprocess.Popen([sys.executable, '-c', sys.argv[1]])"
subprocess.run([sys.executable, "-c", orphan, BURN.format(0.3, 0)], check=True)
deadline = time.monotonic() + 30
while own.alive or reaper.cpu_seconds == 0:
    assert time.monotonic() < deadline, "nothing was reaped"
    reaper.reap()
    time.sleep(0.05)
print(json.dumps([own.exit_status, own.cpu_seconds, reaper.cpu_seconds]))
"""


def test_reaper_leaves_tracked_children_to_their_child_and_counts_orphans() -> None:
    run = subprocess.run(
        [sys.executable, "-c", REAPER], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    status, own_cpu, orphan_cpu = json.loads(run.stdout)
    assert status == 3
    assert own_cpu >= 0.2
    assert orphan_cpu >= 0.3
