"""``eventservice server --workers N``: processes with a socket each, spread, supervised."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from eventservice.demo.processes import free_port
from eventservice.proc import is_running, process_table

pytestmark = pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


def _server(db_url: str, port: int, log: Path, workers: int = 2) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        command = [sys.executable, "-m", "eventservice", "server", "--db", db_url]
        return subprocess.Popen(
            [*command, "--port", str(port), "--workers", str(workers)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _wait_up(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.post(f"{base}/server/panda/getStatus", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"dispatcher did not start: {log.read_text()}")


def _children(pid: int) -> list[int]:
    return [child for child, _state, parent in process_table() if parent == pid]


def _connections_by_process(pids: list[int], port: int) -> dict[int, int]:
    """Established connections to ``port`` that each process holds (from /proc)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                    inodes.add(fields[9])
    counts = {}
    for pid in pids:
        owned = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                owned += 1
        counts[pid] = owned
    return counts


@pytest.fixture
def workers(db_url: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    port, log = free_port(), tmp_path / "server.log"
    process = _server(db_url, port, log)
    try:
        _wait_up(f"http://127.0.0.1:{port}", process, log)
        yield process, port, log
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(30)


def test_pilots_arriving_together_are_spread_over_the_processes(workers) -> None:
    process, port, _log = workers
    clients = [httpx.Client(base_url=f"http://127.0.0.1:{port}") for _ in range(64)]
    try:
        for client in clients:
            assert client.post("/server/panda/getStatus").status_code == 200
        counts = _connections_by_process(_children(process.pid), port)
    finally:
        for client in clients:
            client.close()
    assert len(counts) == 2 and sum(counts.values()) == 64
    # Spread by the kernel over the connections' addresses: 32 each give or take;
    # fewer than 8 on one process would happen about once in 10^10 runs.
    assert min(counts.values()) >= 8, counts


def test_a_second_server_on_the_port_is_refused(workers, db_url: str, tmp_path: Path) -> None:
    _process, port, _log = workers
    log = tmp_path / "second.log"
    second = _server(db_url, port, log)
    assert second.wait(60) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in log.read_text()


def test_sigterm_stops_every_process(workers) -> None:
    process, _port, _log = workers
    children = _children(process.pid)
    assert len(children) == 2
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    assert not any(is_running(pid) for pid in children)


def test_the_processes_end_with_a_killed_supervisor(workers) -> None:
    process, _port, _log = workers
    children = _children(process.pid)
    process.kill()
    process.wait()
    deadline = time.monotonic() + 30
    while any(is_running(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(is_running(pid) for pid in children)


def test_a_process_that_dies_is_replaced(workers) -> None:
    process, port, _log = workers
    time.sleep(5.5)  # past MIN_LIFETIME_SECONDS: a process that dies at start stops all
    victim = _children(process.pid)[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = _children(process.pid)
        if len(children) == 2 and victim not in children:
            break
        time.sleep(0.1)
    assert len(children) == 2 and victim not in children
    _wait_up(f"http://127.0.0.1:{port}", process, _log)
