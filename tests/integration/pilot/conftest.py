"""A real dispatcher process on loopback, and helpers to drive pilots against it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventservice.demo.processes import free_port

PAYLOADS = Path(__file__).parent / "payloads"
ES_PAYLOAD = PAYLOADS / "es_payload.py"
PYTHON = sys.executable


def es_command(mode: str = "ok") -> str:
    """The ES transformation running the test payload in ``mode``."""
    return f"{PYTHON} {ES_PAYLOAD} {mode}"


MERGE = "cat {inputs} > {output}"


def es_task(
    dispatcher: DispatcherProcess,
    input_file: Path,
    n_events: int = 20,
    per_worker: int = 2,
    mode: str = "ok",
    **params,
) -> int:
    """Submit a one-jobset ES task over ``input_file`` run by the test payload in ``mode``."""
    return dispatcher.submit(
        [{"url": str(input_file), "nEvents": n_events}],
        transformation=es_command(mode),
        mergeTransformation=MERGE,
        params={
            "nEventsPerJob": n_events,
            "nEventsPerWorker": per_worker,
            "esFraction": 1.0,
            **params,
        },
    )


class DispatcherProcess:
    """``eventservice server`` in a subprocess on a free loopback port."""

    def __init__(self, tmp: Path, lease_seconds: float = 3.0) -> None:
        self.db = f"sqlite:///{tmp / 'dispatcher.sqlite'}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lease_seconds = lease_seconds
        self.log = tmp / "dispatcher.log"
        self.process: subprocess.Popen | None = None
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    PYTHON,
                    "-m",
                    "eventservice.cli.main",
                    "server",
                    "--db",
                    self.db,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--lease-seconds",
                    str(self.lease_seconds),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dispatcher died: {self.log.read_text()[-2000:]}")
            try:
                if (
                    self.http.post(
                        "/server/panda/getStatus", headers={"Accept": "application/json"}
                    ).status_code
                    == 200
                ):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("dispatcher did not start within 60 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    # -- /api/v1 helpers ---------------------------------------------------------------

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, f"/api/v1{path}", **kwargs)
        assert response.status_code < 400, response.text
        return response.json()

    def add_queue(self, name: str, **params: Any) -> dict[str, Any]:
        return self.api("POST", "/queues", json={"name": name, **params})

    def submit(self, inputs: list[dict[str, Any]], **spec: Any) -> int:
        return self.api("POST", "/tasks", json={"name": "t", "inputs": inputs, **spec})["taskID"]

    def task(self, task_id: int) -> dict[str, Any]:
        return self.api("GET", f"/tasks/{task_id}")

    def ranges(self, task_id: int) -> list[dict[str, Any]]:
        return self.api("GET", "/events", params={"task_id": task_id, "limit": 10000})

    def jobs(self, task_id: int) -> list[dict[str, Any]]:
        return self.api("GET", "/jobs", params={"task_id": task_id})

    def history(self, entity: str = "range") -> list[dict[str, Any]]:
        return self.api("GET", "/history", params={"entity": entity, "limit": 10000})

    def wait_for(self, what: Callable[[], Any], timeout: float = 60, message: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = what()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting: {message}")
            time.sleep(0.2)


@pytest.fixture
def dispatcher(tmp_path: Path) -> Iterator[DispatcherProcess]:
    process = DispatcherProcess(tmp_path)
    process.start()
    yield process
    process.stop()


@pytest.fixture
def stores(tmp_path: Path) -> dict[str, Path]:
    """Local directories acting as object stores."""
    result = {}
    for name in ("os", "failover", "out", "logs"):
        result[name] = tmp_path / "stores" / name
        result[name].mkdir(parents=True)
    return result


def storages(stores: dict[str, Path], es_events: str | None = None) -> dict[str, list[str]]:
    """A queue's storages over the local stores; ``es_events`` may name a broken URL."""
    os_url = f"file://{stores['os']}"
    return {
        "es_events": [es_events or os_url],
        "es_failover": [f"file://{stores['failover']}"],
        "es_events_read": [os_url, f"file://{stores['failover']}"],
        "pw": [f"file://{stores['out']}"],
        "pl": [f"file://{stores['logs']}"],
    }


@pytest.fixture
def input_file(tmp_path: Path) -> Path:
    path = tmp_path / "input.dat"
    path.write_bytes(os.urandom(4096))
    return path


class PilotProcess:
    """``eventservice pilot`` in a subprocess."""

    def __init__(
        self, server: str, queue: str, workdir: Path, *args: str, env: dict | None = None
    ) -> None:
        self.workdir = workdir
        self.log = workdir.with_suffix(".log")
        workdir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    PYTHON,
                    "-m",
                    "eventservice.cli.main",
                    "pilot",
                    "--server",
                    server,
                    "--queue",
                    queue,
                    "--workdir",
                    str(workdir),
                    *args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )

    def wait(self, timeout: float = 90) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"pilot did not end in {timeout} s:\n{self.output()}") from None

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)


def run_pilot(
    dispatcher: DispatcherProcess,
    queue: str,
    workdir: Path,
    *args: str,
    timeout: float = 90,
    env: dict | None = None,
) -> tuple[int, str]:
    """Run a pilot to its end; return its exit code and output."""
    pilot = PilotProcess(dispatcher.url, queue, workdir, *args, env=env)
    code = pilot.wait(timeout)
    return code, pilot.output()


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())
