"""`payload simulate` and `payload per-range` end to end under a fake pilot.

The fake pilot serves the real channel (AF_UNIX SOCK_SEQPACKET, one datagram per
message) and deals ranges to whichever worker asks; the payload runs as a separate
process exactly as a pilot starts it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from eventservice.payload.channel import (
    ENV_CHANNEL,
    NO_MORE_EVENTS,
    READY,
    RangeDone,
    RangeFailed,
    format_range,
    parse_payload_message,
    socket_address,
)
from eventservice.payload.inputs import make_input
from eventservice.payload.merge import merge_outputs
from eventservice.payload.simulate import run_sequential
from eventservice.payload.verify import verify_files

GUID = "GUID-CHANNEL"
LAUNCHER = (
    "import sys, typer; from eventservice.cli.payload_commands import register; "
    "app = typer.Typer(); register(app); app(sys.argv[1:])"
)


class FakePilot:
    """Serves ranges from a list to every connected worker; records the replies."""

    def __init__(self, ranges: list[dict[str, object]]) -> None:
        self.name = f"@es-test-{uuid.uuid4().hex}"
        self.pending = list(ranges)
        self.replies: list[RangeDone | RangeFailed] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._server.bind(socket_address(self.name))
        self._server.listen()
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            with self._lock:
                self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            while text := conn.recv(65536).decode():
                if text == READY:
                    with self._lock:
                        event_range = self.pending.pop(0) if self.pending else None
                    conn.send(
                        (format_range(event_range) if event_range else NO_MORE_EVENTS).encode()
                    )
                else:
                    message = parse_payload_message(text)
                    assert isinstance(message, RangeDone | RangeFailed)
                    with self._lock:
                        self.replies.append(message)

    def close(self) -> None:
        self._stop.set()
        self._acceptor.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)
        self._server.close()


def run_payload(pilot: FakePilot, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, ENV_CHANNEL: pilot.name, "ATHENA_PROC_NUMBER": "2"}
    return subprocess.run(
        [sys.executable, "-c", LAUNCHER, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ranges_of(lfn: str, bounds: list[tuple[int, int]]) -> list[dict[str, object]]:
    return [
        {
            "eventRangeID": f"5-6-1-{a}-1",
            "startEvent": a,
            "lastEvent": b,
            "LFN": lfn,
            "GUID": GUID,
            "scope": "test",
        }
        for a, b in bounds
    ]


@pytest.fixture
def evnt(tmp_path: Path) -> str:
    path = tmp_path / "evnt.root"
    make_input(path, 12, seed=9, guid=GUID)
    return str(path)


def test_simulate_workers_merge_equals_sequential(tmp_path: Path, evnt: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    good = [(0, 2), (3, 5), (6, 8), (9, 11)]
    pilot = FakePilot(ranges_of(evnt, [*good[:2], (10, 20), *good[2:]]))
    try:
        result = run_payload(pilot, work, "payload", "simulate", "--cpu-per-event", "0.001")
    finally:
        pilot.close()
    assert result.returncode == 0, result.stderr
    assert pilot.connections == 2
    done = [r for r in pilot.replies if isinstance(r, RangeDone)]
    failed = [r for r in pilot.replies if isinstance(r, RangeFailed)]
    assert sorted(r.range_id for r in done) == [f"5-6-1-{a}-1" for a, _ in good]
    assert [(r.kind, r.range_id) for r in failed] == [("ERR_ATHENAMP_PROCESS", "5-6-1-10-1")]
    assert "range 10-20 is outside" in failed[0].reason
    for reply in done:
        assert reply.output_path == str(work / f"{reply.range_id}.HITS.root")
        assert reply.cpu > 0 and reply.wall > 0
    merged = merge_outputs(
        [r.output_path for r in done], str(tmp_path / "merged.root"), expect=(0, 11)
    )
    sequential, _ = run_sequential(evnt, str(tmp_path / "seq.root"), cpu_per_event=0.0)
    report = verify_files(merged.path, sequential)
    assert report.identical, report.summary()


def test_per_range_wrapper_runs_the_command_once_per_range(tmp_path: Path) -> None:
    pilot = FakePilot(ranges_of("in.root", [(0, 1), (2, 3), (4, 5)]))
    script = (
        'test "$ES_FIRST_EVENT" != 2 || { echo bad range >&2; exit 4; }; '
        'echo "$ES_INPUT" > "$ES_OUTPUT"'
    )
    try:
        result = run_payload(pilot, tmp_path, "payload", "per-range", "--", "sh", "-c", script)
    finally:
        pilot.close()
    assert result.returncode == 0, result.stderr
    by_id = {r.range_id: r for r in pilot.replies}
    assert isinstance(by_id["5-6-1-0-1"], RangeDone) and isinstance(by_id["5-6-1-4-1"], RangeDone)
    assert (tmp_path / "5-6-1-0-1.out").read_text() == "in.root\n"
    bad = by_id["5-6-1-2-1"]
    assert isinstance(bad, RangeFailed) and bad.kind == "ERR_ATHENAMP_PROCESS"
    assert bad.reason == "command exited with code 4; stderr: bad range"
