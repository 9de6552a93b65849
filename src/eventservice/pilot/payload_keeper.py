"""An event-service payload kept between a pilot's jobs, so it starts once, not per job.

Starting a payload costs its initialisation: 0.5 s of CPU for the reference payload's
imports, minutes for a detector simulation. When an ES job ends because the dispatcher
has no more ranges for it and its payload is idle (every worker connected and waiting
for a range), the pilot keeps the payload and its channel instead of answering ``No
more events``: it is *parked*. The next ES job with the same command line and cores
takes it over, its workers get that job's ranges; other jobs (merges, normal jobs) run
meanwhile, the parked workers waiting on the channel at no cost. A job that needs
another command, or the pilot's end, closes the parked payload: its workers are told
``No more events`` and it exits as after any job.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from eventservice.payload.channel import ENV_CHANNEL
from eventservice.pilot.channel_server import ChannelServer
from eventservice.pilot.executors.base import PayloadProcess
from eventservice.pilot.forkserver import SUBPROCESSES, PayloadStarter
from eventservice.pilot.logs import PAYLOAD_STDERR, PAYLOAD_STDOUT
from eventservice.proc import tree_cpu_seconds

log = logging.getLogger(__name__)

#: Seconds a closed payload gets to exit after ``No more events`` before it is killed.
CLOSE_GRACE = 30.0


@dataclass
class PayloadSession:
    """One payload process and the channel its workers hold, across one or more jobs."""

    command: str
    cores: int
    directory: Path
    channel: ChannelServer
    process: PayloadProcess
    #: Whether ``directory`` is the session's own, to remove when it ends.
    owns_directory: bool = False
    jobs: int = 0
    #: CPU seconds already reported for earlier jobs.
    cpu_reported: float = 0.0
    #: Where the payload's stdout/stderr stood when the current job took it.
    _log_offsets: dict[str, int] = field(default_factory=dict)
    _ended: bool = False

    @classmethod
    def start(
        cls,
        command: str,
        cores: int,
        directory: Path,
        owns_directory: bool = False,
        starter: PayloadStarter = SUBPROCESSES,
    ) -> PayloadSession:
        """Serve a new channel and start ``command`` on it in ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        channel = ChannelServer()
        channel.start()
        env = {ENV_CHANNEL: channel.name, "ATHENA_PROC_NUMBER": str(cores)}
        try:
            process = starter.start(command, directory, env, cores)
        except BaseException:
            channel.stop()
            raise
        return cls(command, cores, directory, channel, process, owns_directory)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def serves(self, command: str, cores: int) -> bool:
        """Whether this payload can run a job of ``command`` on ``cores``."""
        return self.alive and self.command == command and self.cores == cores

    def begin_job(self) -> None:
        """A job takes the payload over: note where its logs stand."""
        self.jobs += 1
        self._log_offsets = {
            name: (self.directory / name).stat().st_size
            for name in (PAYLOAD_STDOUT, PAYLOAD_STDERR)
            if (self.directory / name).exists()
        }

    def job_cpu(self) -> float:
        """CPU seconds the payload used since the previous call (for the job ending now)."""
        if self.process.cpu_seconds is not None:  # exited and reaped
            total = self.process.cpu_seconds
        else:
            total = tree_cpu_seconds(self.process.process.pid)
        used = max(0.0, total - self.cpu_reported)
        self.cpu_reported = max(total, self.cpu_reported)
        return used

    def copy_logs(self, job_dir: Path) -> None:
        """Put what the payload wrote during the current job into ``job_dir``'s logs."""
        if not self.owns_directory:
            return  # the payload runs in the job's directory: its logs are there already
        for name in (PAYLOAD_STDOUT, PAYLOAD_STDERR):
            source = self.directory / name
            if not source.exists():
                continue
            with open(source, "rb") as reader, open(job_dir / name, "ab") as writer:
                reader.seek(self._log_offsets.get(name, 0))
                shutil.copyfileobj(reader, writer)

    def close(self, grace: float = CLOSE_GRACE) -> int:
        """Tell the workers there are no more events, wait for the exit; return its code."""
        self.channel.set_no_more()
        try:
            code = self.process.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning("kept payload did not exit %.0f s after no more events", grace)
            code = self.process.kill()
        self.end()
        return code

    def end(self) -> None:
        """The payload has exited: close the channel, remove the session's directory."""
        if self._ended:
            return
        self._ended = True
        self.channel.stop()
        if self.owns_directory:
            with contextlib.suppress(OSError):
                shutil.rmtree(self.directory)


class PayloadKeeper:
    """The pilot's parked payload, at most one, and where kept payloads run."""

    def __init__(
        self, directory: Path, enabled: bool = True, starter: PayloadStarter = SUBPROCESSES
    ) -> None:
        self.directory = directory
        self.enabled = enabled
        self.starter = starter
        self.parked: PayloadSession | None = None
        self.started = 0

    def session_for(self, command: str, cores: int, job_dir: Path) -> PayloadSession:
        """The parked payload if it serves ``command`` on ``cores``, else a new one.

        A parked payload that does not serve is closed first. Kept payloads run in
        a directory of their own (job directories go when their job ends); with
        keeping disabled the payload runs in ``job_dir``, as before.
        """
        parked, self.parked = self.parked, None
        if parked is not None:
            if parked.serves(command, cores):
                log.info("reusing the payload kept from %d earlier job(s)", parked.jobs)
                parked.begin_job()
                return parked
            log.info("closing the kept payload: this job needs another")
            parked.close()
        self.started += 1
        if self.enabled:
            directory = self.directory / f"payload-{self.started}"
            session = PayloadSession.start(
                command, cores, directory, owns_directory=True, starter=self.starter
            )
        else:
            session = PayloadSession.start(command, cores, job_dir, starter=self.starter)
        session.begin_job()
        return session

    def park(self, session: PayloadSession) -> None:
        """Keep an idle payload for the next job."""
        if self.parked is not None and self.parked is not session:
            self.parked.close()
        self.parked = session

    def close(self) -> None:
        """Close the parked payload, if any (the pilot ends)."""
        parked, self.parked = self.parked, None
        if parked is not None:
            code = parked.close()
            log.info("kept payload closed after %d job(s), exit %s", parked.jobs, code)
