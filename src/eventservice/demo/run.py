"""The demo's run: set up, supervise pilots (killing some on purpose), verify, summarise."""

from __future__ import annotations

import random
import shlex
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from eventservice.demo import processes
from eventservice.demo.chaos import PilotDeaths, StorageOutage
from eventservice.demo.progress import Progress, events_with_output
from eventservice.demo.steal import StealClock
from eventservice.tls import tls_context

FINAL_TASK_STATES = ("done", "finished", "failed")
QUEUE = "DEMO"
#: A pilot that ends by itself (it waits for jobs, so something went wrong) is replaced
#: at most this often, so the demo does not spin; one we killed is replaced at once, as
#: an opportunistic resource hands the slot to the next pilot.
RESTART_DELAY = 2.0
#: Seconds between the supervisor's rounds: pilots alive, deaths due, replacements.
POLL_INTERVAL = 0.5
#: Seconds between reads of the task's summary without a live view (the benchmarks).
#: Each read costs the dispatcher about 4 ms of CPU and the demo about 1 ms, on the cores
#: the payloads run on; the makespan comes from the dispatcher's own clock, not the poll.
QUIET_TASK_POLL_INTERVAL = 2.0


@dataclass(frozen=True)
class DemoConfig:
    """What ``eventservice demo`` runs."""

    events: int = 2000
    pilots: int = 4
    cores: int = 2
    preempt_every: float | None = None
    pilot_lifetime_mean: float | None = None
    db: str | None = None
    storage: str | None = None
    keep: Path | None = None
    #: Ranges of about 0.15 s of CPU: long enough that a range's fixed costs (a call, a
    #: file, a transfer, a report) take a small share of it, short enough for a lively view.
    cpu_per_event: float = 0.01
    events_per_range: int = 10
    #: nEsConsumers of the task; None: one per pilot.
    consumers: int | None = None
    #: Bundle outputs every this many seconds; None: ship each output alone, at once.
    zip_time_gap: int | None = None
    files: int = 1
    mode: str = "es"  # "es": event-service consumers; "file": one normal job per file
    crash_dispatcher_at: float | None = None
    storage_outage: tuple[float, float] | None = None
    lease_seconds: float = 6.0
    timeout: float = 900.0
    seed: int = 1
    #: Seed of the pilot deaths alone (None: ``seed``), so kills can vary over the same inputs.
    chaos_seed: int | None = None
    #: Pilot lifetimes spread evenly over their distribution (``PilotDeaths.spread``);
    #: False: independent draws.
    spread_lifetimes: bool = True
    live: bool = True


@dataclass
class DemoResult:
    """What happened, for the summary, the tests and the benchmarks."""

    task: dict[str, Any] = field(default_factory=dict)
    verified: bool = False
    verify_summary: str = ""
    pilots_started: int = 0
    pilots_killed: int = 0
    #: Seconds from the start of supervision at which each pilot started, in order.
    pilot_starts: list[float] = field(default_factory=list)
    #: Lifetimes given to the pilots (``--pilot-lifetime``), in order.
    pilot_lifetimes: list[float] = field(default_factory=list)
    dispatcher_restarts: int = 0
    cpu_spent: float = 0.0
    #: CPU seconds the verification's plain sequential run of the same events took, on
    #: this machine right after the run: the reference an ideal run is measured against.
    sequential_cpu: float = 0.0
    #: Seconds from the start of supervision (the first pilots' start) to the task's
    #: final state, by the dispatcher's record of when it changed: no polling delay.
    task_seconds: float = 0.0
    #: Core-seconds the machine's hypervisor took from its CPUs during ``task_seconds``
    #: (``/proc/stat``'s steal): time no process of the run could use. ``None``: unknown.
    steal_seconds: float | None = None
    wall_seconds: float = 0.0
    samples: list[tuple[float, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    workdir: Path | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.verified and self.error is None


class Demo:
    """One demo run in ``workdir``."""

    def __init__(self, config: DemoConfig, workdir: Path) -> None:
        if config.mode not in ("es", "file"):
            raise ValueError(f"mode must be 'es' or 'file', got {config.mode!r}")
        if not 1 <= config.files <= config.events:
            raise ValueError("files must be between 1 and the number of events")
        if config.consumers is not None and config.consumers < 1:
            raise ValueError("consumers must be at least 1")
        if config.zip_time_gap is not None and config.zip_time_gap < 1:
            raise ValueError("zip_time_gap must be at least 1 s")
        self.config = config
        self.workdir = workdir
        self.port = processes.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(
            base_url=self.url + "/api/v1", timeout=30, verify=tls_context(self.url)
        )
        self.pilots: list[processes.Child] = []
        self.unreplaced_kills = 0
        self._supervision_start = 0.0
        self.dispatcher: processes.Child | None = None
        self.orphans = processes.OrphanReaper()
        self.result = DemoResult(workdir=workdir)
        rng = random.Random(config.seed if config.chaos_seed is None else config.chaos_seed)
        self.deaths = PilotDeaths(
            rng,
            every=config.preempt_every,
            lifetime_mean=config.pilot_lifetime_mean,
            spread=config.spread_lifetimes,
        )
        self.outage = (
            StorageOutage(workdir / "objectstore", *config.storage_outage)
            if config.storage_outage and config.storage is None
            else None
        )

    # --- set-up ------------------------------------------------------------------------

    def make_inputs(self) -> list[Path]:
        from eventservice.payload.inputs import make_input

        base, extra = divmod(self.config.events, self.config.files)
        paths = []
        for index in range(self.config.files):
            path = self.workdir / f"evnt.{index:03d}.root"
            make_input(path, base + (index < extra), seed=self.config.seed + index)
            paths.append(path)
        return paths

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
        self.orphans.track(self.dispatcher)
        processes.wait_for_dispatcher(self.url, self.dispatcher)

    def define_queue_and_task(self, inputs: list[Path]) -> int:
        storage = self.config.storage or (self.workdir / "objectstore").as_uri()
        self._api(
            "POST",
            "/queues",
            json={
                "name": QUEUE,
                "corecount": self.config.cores,
                "jobseed": "all",
                **(
                    {"not_es_to_zip": True}
                    if self.config.zip_time_gap is None
                    else {"zip_time_gap": self.config.zip_time_gap}
                ),
                "heartbeat": 2,
                "storages": {
                    "es_events": [storage],
                    "es_events_read": [storage],
                    "es_failover": [(self.workdir / "failover").as_uri()],
                    "pw": [(self.workdir / "output").as_uri()],
                    "pl": [(self.workdir / "logs").as_uri()],
                },
            },
        )
        program = f"{shlex.quote(sys.executable)} -m eventservice payload"
        cpu = f"--cpu-per-event {self.config.cpu_per_event}"
        largest = -(-self.config.events // self.config.files)
        task = {
            "name": f"demo-{self.config.mode}",
            "inputs": [{"url": str(path)} for path in inputs],
            "transformation": f"{program} simulate {cpu}",
            "normalTransformation": (
                f"{program} simulate --sequential --input {{input}} --out {{output}} "
                f"--first-event {{first_event}} --last-event {{last_event}} {cpu}"
            ),
            "mergeTransformation": f"{program} merge --out {{output}} {{inputs}}",
            "params": {
                "nEventsPerJob": largest,
                "nEventsPerWorker": self.config.events_per_range,
                "nEsConsumers": self.config.consumers or self.config.pilots,
                "esFraction": 1.0 if self.config.mode == "es" else 0.0,
            },
        }
        if self.config.preempt_every or self.config.pilot_lifetime_mean:
            # A lost lease counts against esMaxAttempt because the range may have killed
            # its pilot. Here we kill pilots ourselves, so a range that happens to be in
            # flight at several kills is not suspect: give it room.
            task["params"] |= {"esMaxAttempt": 100, "maxAttempt": 100}
        return int(self._api("POST", "/tasks", json=task)["taskID"])

    def start_pilot(self, now: float) -> None:
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
                # A pilot that finds no free job waits for one (the next merge job, a
                # consumer replacing a killed pilot's) instead of ending and being
                # replaced: a new pilot costs about 0.5 s of CPU to start.
                "--wait-for-jobs",
                f"{self.config.timeout:g}",
            ],
            workdir.with_suffix(".log"),
            workdir,
        )
        self.orphans.track(child)
        self.pilots.append(child)
        self.deaths.born(child.name, now)
        self.result.pilot_starts.append(now - self._supervision_start)

    # --- supervision -------------------------------------------------------------------

    def supervise(self, task_id: int, progress: Progress) -> dict[str, Any]:
        start, start_wall = time.monotonic(), time.time()
        self._supervision_start = start
        steal = StealClock(start)
        self.deaths.start(start)
        # All at once, as a batch of slots opening together; one per poll would leave
        # the last one's cores idle for (pilots - 1) polls.
        for _ in range(self.config.pilots):
            self.start_pilot(start)
        next_start = next_task_poll = start
        task_poll_interval = POLL_INTERVAL if self.config.live else QUIET_TASK_POLL_INTERVAL
        task: dict[str, Any] | None = None
        while True:
            now = time.monotonic()
            elapsed = now - start
            polled = now >= next_task_poll
            if polled:
                task = self._poll_task(task_id) or task
                next_task_poll = now + task_poll_interval
                steal.read(time.monotonic())
            alive = [p for p in self.pilots if p.poll()]
            self.orphans.reap()
            if polled and task is not None:
                self.result.samples.append((elapsed, events_with_output(task)))
                progress.update(task, len(alive), self.result.pilots_killed, elapsed)
                if task["state"] in FINAL_TASK_STATES:
                    # Same machine, same clock as the dispatcher's time.time().
                    ended = task.get("modifiedAt")
                    self.result.task_seconds = (ended - start_wall) if ended else elapsed
                    self.result.steal_seconds = steal.during(self.result.task_seconds)
                    return task
            if elapsed > self.config.timeout:
                raise RuntimeError(f"task not done after {self.config.timeout:.0f} s")
            self._chaos(alive, now, elapsed, progress)
            if len(alive) < self.config.pilots and (now >= next_start or self.unreplaced_kills):
                replacing_kill = self.unreplaced_kills > 0
                self.unreplaced_kills = max(0, self.unreplaced_kills - 1)
                self.start_pilot(now)
                if not replacing_kill:
                    next_start = now + RESTART_DELAY
            time.sleep(POLL_INTERVAL)

    def _chaos(
        self, alive: list[processes.Child], now: float, elapsed: float, progress: Progress
    ) -> None:
        for name in self.deaths.victims([p.name for p in alive], now):
            # As a reclaimed machine: the pilot and everything it started die at once.
            next(p for p in alive if p.name == name).kill(tree=True)
            self.result.pilots_killed += 1
            self.unreplaced_kills += 1
            self._note(progress, f"{elapsed:5.1f} s: killed {name} (SIGKILL)")
        if self.outage is not None and (note := self.outage.tick(elapsed)):
            self._note(progress, f"{elapsed:5.1f} s: {note}")
        crash_at = self.config.crash_dispatcher_at
        if crash_at is not None and elapsed >= crash_at and not self.result.dispatcher_restarts:
            assert self.dispatcher is not None
            self.dispatcher.kill()
            self._note(progress, f"{elapsed:5.1f} s: dispatcher killed (SIGKILL), restarting")
            self.result.dispatcher_restarts += 1
            self.start_dispatcher()

    def _poll_task(self, task_id: int) -> dict[str, Any] | None:
        try:
            return self._api("GET", f"/tasks/{task_id}")
        except httpx.HTTPError:
            return None  # the dispatcher may be restarting: pilots ride it out, so do we

    def _note(self, progress: Progress, text: str) -> None:
        self.result.notes.append(text)
        progress.note(text)

    def stop_all(self) -> None:
        for pilot in self.pilots:
            pilot.kill(signal.SIGTERM)
        if self.dispatcher is not None:
            self.dispatcher.kill(signal.SIGTERM)
        if self.outage is not None and self.outage.state == "down":
            self.outage.end()
            self.result.notes.append(f"object store {self.outage.directory} is back (run over)")
        self.orphans.reap()
        self.result.cpu_spent = sum(p.cpu_seconds for p in self.pilots) + self.orphans.cpu_seconds
        self.result.pilot_lifetimes = list(self.deaths.lifetimes)

    # --- verification --------------------------------------------------------------------

    def verify(self, task: dict[str, Any], inputs: list[Path]) -> None:
        """Each jobset's final output must equal a sequential run over the same events."""
        from eventservice.payload.simulate import run_sequential
        from eventservice.payload.verify import verify_files
        from eventservice.storage import StorageRouter

        outputs = [o for o in task["outputs"] if o.get("path")]
        if task["state"] != "done" or len(outputs) != len(task["outputs"]):
            self.result.verify_summary = f"task ended {task['state']}; nothing to verify"
            return
        summaries = []
        identical = True
        for index, (output, source) in enumerate(zip(outputs, inputs, strict=True)):
            merged = self.workdir / f"merged.{index:03d}.root"
            reference = self.workdir / f"reference.{index:03d}.root"
            StorageRouter({}).download(
                output["path"], merged, size=output.get("fsize"), adler32=output.get("adler32")
            )
            cpu_before = time.process_time()
            run_sequential(
                str(source),
                str(reference),
                output["firstEvent"],
                output["lastEvent"],
                cpu_per_event=self.config.cpu_per_event,
            )
            self.result.sequential_cpu += time.process_time() - cpu_before
            report = verify_files(str(merged), str(reference))
            identical &= report.identical
            summaries.append(report.summary())
        self.result.verified = identical
        self.result.verify_summary = "\n".join(summaries)

    def _api(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = self.http.request(method, path, **kwargs)
        if answer.status_code >= 400:
            raise RuntimeError(f"dispatcher answered {answer.status_code}: {answer.text}")
        return answer.json()


def run_demo(config: DemoConfig) -> DemoResult:
    """Run the whole system once; run-time failures end up in ``error``, not a traceback."""
    processes.become_subreaper()
    workdir = config.keep or Path(tempfile.mkdtemp(prefix="eventservice-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    demo = Demo(config, workdir)
    started = time.monotonic()
    try:
        inputs = demo.make_inputs()
        demo.start_dispatcher()
        task_id = demo.define_queue_and_task(inputs)
        with Progress(config.live) as progress:
            task = demo.supervise(task_id, progress)
        demo.result.task = task
        demo.result.wall_seconds = time.monotonic() - started
        demo.stop_all()
        demo.verify(task, inputs)
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
