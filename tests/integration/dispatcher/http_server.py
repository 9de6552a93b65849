"""Run ``eventservice server`` as a subprocess for the over-HTTP tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from eventservice.demo.processes import free_port

STARTUP_DEADLINE = 60.0


@contextmanager
def running_server(db_url: str, lease_seconds: float, log: Path) -> Iterator[str]:
    """Start the dispatcher; yield its base URL once getStatus answers; stop it after."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "eventservice",
                "server",
                "--db",
                db_url,
                "--port",
                str(port),
                "--lease-seconds",
                str(lease_seconds),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            deadline = time.monotonic() + STARTUP_DEADLINE
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
                try:
                    answer = httpx.post(f"{base}/server/panda/getStatus", timeout=2)
                    if answer.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start: {log.read_text()[-3000:]}")
                time.sleep(0.2)
            yield base
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
