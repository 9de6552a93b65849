"""The pilot's outer loop: read the queue, pull jobs until none are left, run each one.

The pilot talks to the dispatcher only through the PanDA paths (plus the queue
definition from ``GET /api/v1/queues/{name}``). It never imports the dispatcher, the
store or the server: it may run on any machine that reaches the dispatcher over HTTP.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventservice.errors import DispatcherUnavailable, EventServiceError
from eventservice.pilot import codes
from eventservice.pilot.executors import executor_for
from eventservice.pilot.executors.base import JobContext, JobResult, PilotOptions
from eventservice.pilot.forkserver import PayloadStarter
from eventservice.pilot.job import Job, QueueConfig, cores_for
from eventservice.pilot.logs import job_log, set_job, ship_logs
from eventservice.pilot.payload_keeper import PayloadKeeper
from eventservice.pilot.reports import ReportJournal
from eventservice.pilot.signals import PilotControl, install_signal_handlers

log = logging.getLogger(__name__)


@dataclass
class PilotSummary:
    """What one pilot run did."""

    jobs: list[tuple[int, str]] = field(default_factory=list)
    stopped_because: str = ""
    pending_reports: int = 0

    @property
    def all_finished(self) -> bool:
        return all(state == "finished" for _, state in self.jobs)


def make_router(queue: QueueConfig) -> Any:
    """The storage router for the queue's storages (imported lazily)."""
    from eventservice.storage import StorageRouter

    return StorageRouter(queue.storages)


#: Seconds between getJob calls while waiting for a job (``wait_for_jobs``).
JOB_POLL_INTERVAL = 0.5


class Pilot:
    """Pulls and runs jobs from one dispatcher queue.

    With ``wait_for_jobs`` it keeps asking for a job that long when none is free before
    it ends (a pilot that ends and is replaced pays its start-up again).
    """

    def __init__(
        self,
        client: Any,
        queue_name: str,
        workdir: Path,
        *,
        options: PilotOptions | None = None,
        max_jobs: int | None = None,
        lifetime: float | None = None,
        wait_for_jobs: float = 0.0,
        control: PilotControl | None = None,
        router: Any | None = None,
        starter: PayloadStarter | None = None,
    ) -> None:
        self.client = client
        self.queue_name = queue_name
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.options = options or PilotOptions()
        self.options.node = self.options.node or socket.gethostname()
        self.max_jobs = max_jobs
        self.lifetime = lifetime
        self.wait_for_jobs = wait_for_jobs
        self.control = control or PilotControl(self.options.grace)
        self.journal = ReportJournal(self.workdir / "pending-reports")
        if hasattr(client, "give_up_retrying"):
            # Past a drain's grace (or killed), an unreachable dispatcher must not hold us:
            # what is unsent stays in the journal for the next pilot on this workdir.
            control = self.control
            client.give_up_retrying = lambda: (
                control.killed or (control.draining and control.grace_expired())
            )
        self._router = router
        self.starter = starter or PayloadStarter(self.options.fork_payloads)
        self.payloads = PayloadKeeper(
            self.workdir / "payloads", self.options.keep_payload, self.starter
        )
        self.started = time.monotonic()

    def deadline(self, queue: QueueConfig) -> float | None:
        """When to soft-kill ourselves: ``maxtime`` minus the margin, or ``--lifetime``."""
        candidates = []
        if queue.maxtime > 0:
            candidates.append(self.started + max(0.0, queue.maxtime - self.options.softkill_margin))
        if self.lifetime:
            candidates.append(self.started + self.lifetime)
        return min(candidates) if candidates else None

    def _stop_reason(self, done: int, deadline: float | None) -> str | None:
        if self.control.stop_pilot:
            return str(self.control.reason)
        if self.max_jobs is not None and done >= self.max_jobs:
            return f"ran {done} job(s) (--jobs)"
        if deadline is not None and time.monotonic() >= deadline:
            return "lifetime over"
        return None

    def run(self) -> PilotSummary:
        """Run jobs until there are none, or a limit or a signal says stop."""
        summary = PilotSummary()
        restore = None
        if threading.current_thread() is threading.main_thread():
            restore = install_signal_handlers(self.control)
        try:
            queue = QueueConfig.from_api(self.client.get_queue(self.queue_name))
            leftover = self.journal.flush(self.client)
            if leftover.sent:
                log.info("sent %d report(s) left by an earlier pilot", leftover.sent)
            router = self._router or make_router(queue)
            deadline = self.deadline(queue)
            idle_since: float | None = None
            while not (reason := self._stop_reason(len(summary.jobs), deadline)):
                fields = self.client.get_job(
                    queue.name,
                    computingElement=queue.name,
                    node=self.options.node,
                    cpu=self.options.cores or queue.corecount,
                )
                if fields is None:
                    # None free now; within --wait-for-jobs one may come (a merge job, a
                    # consumer replacing a lost one): ask again rather than end.
                    now = time.monotonic()
                    idle_since = now if idle_since is None else idle_since
                    if now - idle_since >= self.wait_for_jobs:
                        reason = "no more jobs"
                        break
                    self.control.wait(min(JOB_POLL_INTERVAL, self.wait_for_jobs))
                    continue
                idle_since = None
                state = self.run_job(fields, queue, router, deadline)
                summary.jobs.append((int(fields["PandaID"]), state))
                self.control.reset_for_next_job()
            summary.stopped_because = reason
        except DispatcherUnavailable as exc:
            summary.stopped_because = f"dispatcher unavailable: {exc}"
            log.error("%s", summary.stopped_because)
        finally:
            self.payloads.close()
            self.starter.close()
            if restore is not None:
                restore()
        summary.pending_reports = len(self.journal)
        log.info(
            "pilot ends: %d job(s), %s; %d report(s) pending",
            len(summary.jobs),
            summary.stopped_because,
            summary.pending_reports,
        )
        return summary

    def run_job(
        self, fields: dict[str, Any], queue: QueueConfig, router: Any, deadline: float | None
    ) -> str:
        """Run one job end to end, journal its final report; return its final state."""
        try:
            job = Job.from_fields(fields)
        except EventServiceError as exc:
            log.error("job %s unusable: %s", fields.get("PandaID"), exc)
            self.journal.add_job(
                int(fields["PandaID"]),
                "failed",
                {"pilotErrorCode": codes.JOB_BAD_DEFINITION, "pilotErrorDiag": str(exc)},
            )
            self.journal.flush(self.client)
            return "failed"
        set_job(job.panda_id)
        job_dir = self.workdir / f"job_{job.panda_id}"
        job_dir.mkdir(parents=True, exist_ok=True)
        cores = cores_for(job, queue, self.options.cores)
        ctx = JobContext(
            self.client,
            queue,
            job,
            job_dir,
            self.journal,
            router,
            self.control,
            self.options,
            cores,
            deadline,
            self.payloads,
            self.starter,
        )
        # Beats go on until the log has shipped: a job silent while its last outputs and
        # its log ship would lose its lease. None may follow (or overtake) the final report.
        try:
            with job_log(job_dir):
                log.info(
                    "job %d (%s, task %d, jobset %d) on %d core(s) in %s",
                    job.panda_id,
                    job.kind.value,
                    job.task_id,
                    job.jobset_id,
                    cores,
                    job_dir,
                )
                result = self._execute(ctx)
                log.info(
                    "job %d ends %s (%s)", job.panda_id, result.state, result.error_diag or "ok"
                )
            shipped = ship_logs(job_dir, job.task_id, job.log_file, router)
        finally:
            ctx.heartbeat.stop()
        self.journal.add_job(job.panda_id, result.state, result.update_fields(cores))
        outcome = self.journal.flush(self.client, on_job_command=lambda _, c: None)
        if outcome.remaining:
            log.warning(
                "%d report(s) kept in %s until the dispatcher answers",
                outcome.remaining,
                self.journal.directory,
            )
        set_job(None)
        if shipped is not None and result.succeeded:
            shutil.rmtree(job_dir, ignore_errors=True)
        return result.state

    def _execute(self, ctx: JobContext) -> JobResult:
        try:
            command = self.client.update_job(
                ctx.job.panda_id, "starting", node=self.options.node, coreCount=ctx.cores
            )
            self.control.apply_command(command, "updateJob")
        except EventServiceError as exc:
            log.warning("could not announce the job starting: %s", exc)
        ctx.heartbeat.start()
        try:
            return executor_for(ctx.job.kind)(ctx)
        except Exception as exc:  # an executor bug must not lose the job's report
            log.exception("executor crashed")
            return JobResult(
                "failed",
                error_code=codes.JOB_BAD_DEFINITION,
                error_diag=f"pilot error: {type(exc).__name__}: {exc}",
            )


def default_workdir() -> Path:
    """``./eventservice-pilot-<pid>`` when no ``--workdir`` is given."""
    return Path.cwd() / f"eventservice-pilot-{os.getpid()}"
