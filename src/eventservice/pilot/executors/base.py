"""What every executor shares: the job context, the result, payload processes, transfers."""

from __future__ import annotations

import logging
import os
import select
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from eventservice.errors import StorageError
from eventservice.pilot.heartbeat import Heartbeat
from eventservice.pilot.job import InputFile, Job, QueueConfig
from eventservice.pilot.logs import PAYLOAD_STDERR, PAYLOAD_STDOUT
from eventservice.pilot.reports import ReportJournal
from eventservice.pilot.signals import PilotControl

log = logging.getLogger(__name__)


@dataclass
class PilotOptions:
    """Knobs of one pilot run (CLI options)."""

    cores: int | None = None
    grace: float = 60.0
    softkill_margin: float = 600.0
    storage_max_failures: int = 3
    storage_retry_delay: float = 5.0
    node: str = ""
    #: Keep an idle ES payload for the next ES job with the same command (payload_keeper).
    keep_payload: bool = True
    #: Fork this installation's payload commands from a pre-imported interpreter
    #: (pilot/forkserver.py) instead of starting each afresh.
    fork_payloads: bool = True


@dataclass
class JobContext:
    """Everything an executor needs to run one job."""

    client: Any
    queue: QueueConfig
    job: Job
    job_dir: Path
    journal: ReportJournal
    router: Any
    control: PilotControl
    options: PilotOptions
    cores: int = 1
    deadline: float | None = None
    #: The pilot's kept payload, if it keeps one (``None``: a new payload per job).
    payloads: Any | None = None
    #: Starts the job's payload processes (a ``forkserver.PayloadStarter``; ``None``: each
    #: payload a plain subprocess).
    starter: Any | None = None
    #: The job's heartbeat (``updateJob`` every queue ``heartbeat`` s). The pilot runs it
    #: from the job's start to just before its final report; an executor may set its
    #: ``progress``.
    heartbeat: Heartbeat = field(init=False)

    def __post_init__(self) -> None:
        self.heartbeat = Heartbeat(
            self.client,
            self.job.panda_id,
            self.queue.heartbeat,
            self.control,
            progress=lambda: {"coreCount": self.cores},
            deadline=self.deadline,
        )


@dataclass
class JobResult:
    """How a job ended; turned into the final ``updateJob``."""

    state: str
    n_events: int = 0
    error_code: int | None = None
    error_diag: str | None = None
    #: The payload's own exit code; ``None`` when the pilot stopped it (the code is ours).
    exit_code: int | None = None
    output_files: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    #: CPU seconds the payload (and everything it started) used.
    cpu_seconds: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.state == "finished"

    def update_fields(self, cores: int) -> dict[str, Any]:
        """Fields of the final ``updateJob``."""
        fields: dict[str, Any] = {"nEvents": self.n_events, "coreCount": cores}
        if self.error_code is not None:
            fields["pilotErrorCode"] = self.error_code
        if self.error_diag:
            fields["pilotErrorDiag"] = self.error_diag[:500]
        if self.exit_code:
            fields["exeErrorCode"] = self.exit_code
            fields["transExitCode"] = self.exit_code
        if self.output_files:
            fields["outputFiles"] = self.output_files
        if self.cpu_seconds is not None:
            fields["cpuConsumptionTime"] = round(self.cpu_seconds, 3)
        return fields


def fill_template(template: str, inputs: list[str], output: str | None) -> str:
    """Replace ``{input}``, ``{inputs}`` and ``{output}`` (docs/protocol.md), shell-quoted."""
    command = template
    if "{input}" in command:
        command = command.replace("{input}", shlex.quote(inputs[0]) if inputs else "")
    command = command.replace("{inputs}", " ".join(shlex.quote(i) for i in inputs))
    if output is not None:
        command = command.replace("{output}", shlex.quote(output))
    return command


#: Thread pools sized from the environment (OpenMP, OpenBLAS, MKL). Unset, each payload
#: process starts one thread per core of the node: on a shared many-core node that
#: oversubscribes it, and starting them cost 0.1 s of CPU per ``import numpy`` here.
THREAD_POOL_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def payload_environment(extra: dict[str, str] | None = None, cores: int = 1) -> dict[str, str]:
    """The pilot's environment plus ``extra``, with the pilot's own ``bin`` first in PATH.

    Commands like ``eventservice payload simulate`` then resolve to the installation
    running the pilot even when its virtual environment is not activated. Thread pools
    are sized to the job's ``cores`` unless the site set them.
    """
    env = {**os.environ, **(extra or {})}
    for variable in THREAD_POOL_VARIABLES:
        env.setdefault(variable, str(cores))
    own_bin = str(Path(sys.executable).parent)
    path = env.get("PATH", "")
    if own_bin not in path.split(os.pathsep):
        env["PATH"] = os.pathsep.join(p for p in (own_bin, path) if p)
    return env


class PayloadProcess:
    """A payload command run by the shell in its own session, output to ``cwd``."""

    def __init__(
        self, command: str, cwd: Path, env: dict[str, str] | None = None, cores: int = 1
    ) -> None:
        self.command = command
        self._stdout: BinaryIO | None = open(cwd / PAYLOAD_STDOUT, "ab")  # noqa: SIM115 - closed in wait()
        self._stderr: BinaryIO | None = open(cwd / PAYLOAD_STDERR, "ab")  # noqa: SIM115
        log.info("starting payload: %s", command)
        #: CPU seconds of the payload and all it started, known once it has exited.
        self.cpu_seconds: float | None = None
        self.process = subprocess.Popen(
            command,
            shell=True,
            cwd=cwd,
            env=payload_environment(env, cores),
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=self._stderr,
            start_new_session=True,
        )
        self.killed = False

    def poll(self) -> int | None:
        """The exit code, ``None`` while running."""
        if self.process.returncode is None:
            self._reap(os.WNOHANG)
        return self.process.returncode

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code as soon as the payload exits within ``timeout`` s, else ``None``."""
        if self.poll() is None:
            try:
                handle = os.pidfd_open(self.process.pid)
            except (OSError, AttributeError):  # reaped elsewhere; not Linux 5.3 or later
                handle = None
            if handle is not None:
                try:
                    select.select([handle], [], [], timeout)  # readable once it has exited
                finally:
                    os.close(handle)
            else:
                deadline = time.monotonic() + timeout
                while self.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.01)
        return self.poll()

    def _reap(self, flags: int) -> None:
        # wait4 rather than Popen's waitpid: it gives this process's own resource use
        # (its descendants included), whatever else the pilot has started and reaped.
        try:
            pid, status, usage = os.wait4(self.process.pid, flags)
        except ChildProcessError:  # reaped elsewhere: the exit code is lost
            self.process.returncode = -1
            self.cpu_seconds = 0.0
            return
        if pid:
            self.process.returncode = os.waitstatus_to_exitcode(status)
            self.cpu_seconds = usage.ru_utime + usage.ru_stime

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit code and close the output files.

        Raises :class:`subprocess.TimeoutExpired` when it runs past ``timeout``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is None:
                self._reap(0)
            elif time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.command, timeout or 0.0)
            else:
                self.wait_exit(max(0.0, deadline - time.monotonic()))
        for stream in (self._stdout, self._stderr):
            if stream is not None:
                stream.close()
        return int(self.process.returncode)

    def kill(self, grace: float = 3.0) -> int:
        """SIGTERM the payload's process group, SIGKILL after ``grace`` seconds."""
        self.killed = True
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                return self.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        return self.wait()


def run_command(ctx: JobContext, command: str) -> tuple[int, bool, float]:
    """Run a payload to completion, obeying kill and drain.

    Returns (exit code, whether the pilot stopped it, payload CPU seconds).
    """
    if ctx.starter is not None:
        process = ctx.starter.start(command, ctx.job_dir, cores=ctx.cores)
    else:
        process = PayloadProcess(command, ctx.job_dir, cores=ctx.cores)
    # Wakes when the payload exits: a merge takes a tenth of a second, and a poll every
    # 0.1 s cost half as much again on average before the next job could start.
    while process.wait_exit(0.1) is None:
        if ctx.control.killed or (ctx.control.draining and ctx.control.grace_expired()):
            log.warning("stopping the payload: %s", ctx.control.reason)
            code = process.kill()
            return code, True, process.cpu_seconds or 0.0
    code = process.wait()
    return code, False, process.cpu_seconds or 0.0


def local_url(url: str) -> str:
    """A plain absolute path as a ``file://`` URL; URLs unchanged."""
    return f"file://{url}" if url.startswith("/") else url


def stage_in(ctx: JobContext, inputs: list[InputFile], dest: Path) -> list[Path]:
    """Download and verify every input into ``dest``; raise :class:`StorageError`."""
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for item in inputs:
        size = item.size if item.size or item.adler32 else None
        target = dest / Path(item.lfn).name
        log.info("stage-in %s", item.url)
        paths.append(
            Path(ctx.router.download(local_url(item.url), target, size=size, adler32=item.adler32))
        )
    return paths


def stage_out_final(ctx: JobContext, path: Path, lfn: str) -> dict[str, Any]:
    """Upload a final output to the ``pw`` storage, verify it, return its record."""
    from eventservice.pilot.stageout import verify_stored

    if not path.is_file():
        raise StorageError(f"output {path} was not produced")
    stored = ctx.router.upload(path, f"{ctx.job.task_id}/{lfn}", activity="pw", fallback=())
    verify_stored(stored, path)
    log.info("output %s shipped to %s", lfn, stored.url)
    return {
        "lfn": lfn,
        "path": stored.url,
        "fsize": int(stored.size),
        "adler32": str(stored.adler32).lower(),
    }
