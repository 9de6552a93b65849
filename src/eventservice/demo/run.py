"""The demo's run: set up, supervise pilots (killing some on purpose), verify, summarise."""

from __future__ import annotations

import random
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from eventservice.demo import processes
from eventservice.demo.progress import Progress

FINAL_TASK_STATES = ("done", "finished", "failed")
QUEUE = "DEMO"
RESTART_DELAY = 2.0


@dataclass(frozen=True)
class DemoConfig:
    """What ``eventservice demo`` runs."""

    events: int = 2000
    pilots: int = 4
    cores: int = 2
    preempt_every: float | None = None
    db: str | None = None
    storage: str | None = None
    keep: Path | None = None
    cpu_per_event: float = 0.002
    events_per_range: int = 5
    lease_seconds: float = 6.0
    timeout: float = 900.0
    seed: int = 1
    live: bool = True


@dataclass
class DemoResult:
    """What happened, for the summary and for tests."""

    task: dict[str, Any] = field(default_factory=dict)
    verified: bool = False
    verify_summary: str = ""
    pilots_started: int = 0
    pilots_killed: int = 0
    cpu_spent: float = 0.0
    wall_seconds: float = 0.0
    workdir: Path | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.verified and self.error is None


class Demo:
    """One demo run in ``workdir``."""

    def __init__(self, config: DemoConfig, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.port = processes.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.url + "/api/v1", timeout=30)
        self.pilots: list[processes.Child] = []
        self.dispatcher: processes.Child | None = None
        self.orphans = processes.OrphanReaper()
        self.result = DemoResult(workdir=workdir)
        self.random = random.Random(config.seed)

    # --- set-up ------------------------------------------------------------------------

    def start_dispatcher(self) -> None:
        db = self.config.db or f"sqlite:///{self.workdir / 'dispatcher.sqlite'}"
        self.dispatcher = processes.start(
            "dispatcher",
            [
                "server",
                "--db",
                db,
                "--port",
                str(self.port),
                "--lease-seconds",
                str(self.config.lease_seconds),
            ],
            self.workdir / "dispatcher.log",
            self.workdir,
        )
        self.orphans.known.add(self.dispatcher.process.pid)
        processes.wait_for_dispatcher(self.url, self.dispatcher)

    def define_queue_and_task(self, input_path: Path) -> int:
        storage = self.config.storage or (self.workdir / "objectstore").as_uri()
        out = self.workdir / "output"
        queue = {
            "name": QUEUE,
            "corecount": self.config.cores,
            "jobseed": "all",
            "zip_time_gap": 5,
            "heartbeat": 2,
            "storages": {
                "es_events": [storage],
                "es_events_read": [storage],
                "es_failover": [(self.workdir / "failover").as_uri()],
                "pw": [out.as_uri()],
                "pl": [(self.workdir / "logs").as_uri()],
            },
        }
        self._api("POST", "/queues", json=queue)
        python = shlex.quote(sys.executable)
        cpu = f"--cpu-per-event {self.config.cpu_per_event}"
        task = {
            "name": "demo",
            "inputs": [{"url": str(input_path)}],
            "transformation": f"{python} -m eventservice payload simulate {cpu}",
            "normalTransformation": (
                f"{python} -m eventservice payload simulate --sequential --input {{input}} "
                f"--out {{output}} --first-event {{first_event}} --last-event {{last_event}} {cpu}"
            ),
            "mergeTransformation": f"{python} -m eventservice payload merge --out {{output}} "
            "{inputs}",
            "params": {
                "nEventsPerJob": self.config.events,
                "nEventsPerWorker": self.config.events_per_range,
                "nEsConsumers": self.config.pilots,
            },
        }
        return int(self._api("POST", "/tasks", json=task)["taskID"])

    def start_pilot(self) -> None:
        index = self.result.pilots_started
        self.result.pilots_started += 1
        workdir = self.workdir / "pilots" / f"pilot-{index:03d}"
        workdir.mkdir(parents=True)
        child = processes.start(
            f"pilot-{index}",
            [
                "pilot",
                "--server",
                self.url,
                "--queue",
                QUEUE,
                "--cores",
                str(self.config.cores),
                "--workdir",
                str(workdir),
            ],
            workdir.with_suffix(".log"),
            workdir,
        )
        self.orphans.known.add(child.process.pid)
        self.pilots.append(child)

    # --- supervision -------------------------------------------------------------------

    def supervise(self, task_id: int, progress: Progress) -> dict[str, Any]:
        start = time.monotonic()
        next_kill = self._next_kill(start)
        next_start = start
        while True:
            now = time.monotonic()
            task = self._api("GET", f"/tasks/{task_id}")
            alive = [p for p in self.pilots if p.poll()]
            self.orphans.reap()
            progress.update(task, len(alive), self.result.pilots_killed, now - start)
            if task["state"] in FINAL_TASK_STATES:
                return task
            if now - start > self.config.timeout:
                raise RuntimeError(f"task not done after {self.config.timeout:.0f} s")
            if next_kill is not None and now >= next_kill and alive:
                victim = self.random.choice(alive)
                victim.kill()
                self.result.pilots_killed += 1
                progress.note(f"killed {victim.name} (SIGKILL)")
                next_kill = self._next_kill(now)
            if len(alive) < self.config.pilots and now >= next_start:
                self.start_pilot()
                # Pilots exit when no job is free (e.g. while a dead pilot's lease runs
                # out): fill up at once at first, then do not spin starting new ones.
                initial = self.result.pilots_started < self.config.pilots
                next_start = now if initial else now + RESTART_DELAY
            time.sleep(0.5)

    def _next_kill(self, now: float) -> float | None:
        if not self.config.preempt_every:
            return None
        return now + self.random.expovariate(1.0 / self.config.preempt_every)

    def stop_all(self) -> None:
        for pilot in self.pilots:
            pilot.kill(processes.signal.SIGTERM)
        if self.dispatcher is not None:
            self.dispatcher.kill(processes.signal.SIGTERM)
        self.orphans.reap()
        self.result.cpu_spent = sum(p.cpu_seconds for p in self.pilots) + self.orphans.cpu_seconds

    # --- verification --------------------------------------------------------------------

    def verify(self, task: dict[str, Any], input_path: Path) -> None:
        from eventservice.payload.simulate import run_sequential
        from eventservice.payload.verify import verify_files
        from eventservice.storage import StorageRouter

        outputs = [o for o in task["outputs"] if o.get("path")]
        if task["state"] != "done" or len(outputs) != 1:
            self.result.verify_summary = f"task ended {task['state']}; nothing to verify"
            return
        merged = self.workdir / "merged.root"
        output = outputs[0]
        StorageRouter({}).download(
            output["path"], merged, size=output.get("fsize"), adler32=output.get("adler32")
        )
        reference = self.workdir / "reference.root"
        run_sequential(str(input_path), str(reference), cpu_per_event=self.config.cpu_per_event)
        report = verify_files(str(merged), str(reference))
        self.result.verified = report.identical
        self.result.verify_summary = report.summary()

    def _api(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = self.http.request(method, path, **kwargs)
        if answer.status_code >= 400:
            raise RuntimeError(f"dispatcher answered {answer.status_code}: {answer.text}")
        return answer.json()


def run_demo(config: DemoConfig) -> DemoResult:
    """Run the whole system once; never raises for run-time failures (see ``error``)."""
    from eventservice.payload.inputs import make_input

    processes.become_subreaper()
    workdir = config.keep or Path(tempfile.mkdtemp(prefix="eventservice-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    demo = Demo(config, workdir)
    started = time.monotonic()
    input_path = workdir / "evnt.root"
    try:
        make_input(input_path, config.events, seed=config.seed)
        demo.start_dispatcher()
        task_id = demo.define_queue_and_task(input_path)
        with Progress(config.live) as progress:
            task = demo.supervise(task_id, progress)
        demo.result.task = task
        demo.result.wall_seconds = time.monotonic() - started
        demo.stop_all()
        demo.verify(task, input_path)
    except Exception as exc:  # the demo reports what went wrong instead of a traceback
        demo.result.error = f"{type(exc).__name__}: {exc}"
    finally:
        demo.stop_all()
        if not demo.result.wall_seconds:
            demo.result.wall_seconds = time.monotonic() - started
        if config.keep is None and demo.result.ok:
            shutil.rmtree(workdir, ignore_errors=True)
            demo.result.workdir = None
    return demo.result
