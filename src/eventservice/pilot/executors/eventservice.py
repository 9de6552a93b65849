"""The event-service executor (DESIGN §6): ranges in, outputs streamed out.

Threads: *channel* (serves payload workers, :mod:`..channel_server`), *stage-out*
(:mod:`..stageout`), *heartbeat* (:mod:`..heartbeat`) and this one, the
*communication* loop: it refills the local buffer with ``nRanges = 2 * cores``
(near the end of the job's chunk only for workers that wait: :func:`ranges_wanted`),
reports ``running``/``failed``/``fatal`` ranges in batches, flushes the journal of
``finished`` reports, and decides when the job ends (payload exit, drain, kill, or
no more ranges with the payload idle: then the payload is kept for the pilot's next
ES job, :mod:`..payload_keeper`).
"""

from __future__ import annotations

import logging
import math
import queue
import time
from typing import Any

from eventservice.errors import DispatcherUnavailable, EventServiceError
from eventservice.pilot import codes
from eventservice.pilot.channel_server import (
    RangeError,
    RangeOutput,
    RangeStarted,
    WorkerLost,
)
from eventservice.pilot.executors.base import (
    JobContext,
    JobResult,
    PayloadProcess,
)
from eventservice.pilot.payload_keeper import PayloadKeeper, PayloadSession
from eventservice.pilot.stageout import StageOut

log = logging.getLogger(__name__)

#: Seconds between journal flushes while ranges keep finishing.
FLUSH_INTERVAL = 0.2
#: Seconds a range runs before it is reported ``running``. One that ends sooner goes
#: straight from ``sent`` to its end: its ``running`` report would be one more call to
#: the dispatcher per range (half of all calls) that no one acts on.
RUNNING_REPORT_DELAY = 1.0
#: Near the end of its chunk, within this many times ``nRanges`` of the chunk's last
#: range, a job asks for ranges only for workers waiting for one (see ranges_wanted).
END_GAME_REQUESTS = 2
#: Seconds an out-of-ranges job waits for its payload to go idle (every worker waiting
#: for a range) so it can be kept; past that it is told ``No more events`` as before.
IDLE_WAIT = 2.0
#: Longest the loop sleeps when nothing falls due and no event comes: how soon it sees
#: what no event announces (a drain or kill asked for, storage given up). Each wake-up
#: costs CPU the payload could use (about 0.1 ms on a virtual machine; BENCHMARKS.md).
MAX_WAIT = 0.5
#: How often the loop looks at the payload while no worker is connected: it is
#: starting, or it is ending and its exit should be seen at once.
PAYLOAD_POLL = 0.05


def n_ranges(cores: int) -> int:
    """``nRanges`` of a request that fills the buffer ahead: two ranges per worker."""
    return 2 * cores


def ranges_wanted(cores: int, buffered: int, waiting: int, end_game: bool) -> int:
    """How many ranges to ask the dispatcher for now; 0: none.

    Normally ``nRanges = 2 * cores`` whenever fewer than ``cores`` are buffered, so a
    worker never waits for a call to the dispatcher (DESIGN §6). Near the end of the
    chunk (``end_game``) only what the waiting workers lack: a range buffered here is
    one that no other pilot can take, and the last ranges held one ahead by one pilot
    are what keeps the others idle at a jobset's end (in the preemption benchmark's
    no-kill task, 0.2 s of its 47 on average: BENCHMARKS.md). A worker then waits one
    call for each of its last ranges.
    """
    if end_game:
        return max(0, waiting - buffered)
    return n_ranges(cores) if buffered < cores else 0


def failed_report(
    event_range: dict[str, Any], code: int, diag: str, fatal: bool = False
) -> dict[str, Any]:
    """A version 0 ``failed``/``fatal`` entry."""
    return {
        "eventRangeID": event_range["eventRangeID"],
        "eventStatus": "fatal" if fatal else "failed",
        "errorCode": code,
        "errorDiag": diag[:500],
    }


class EventServiceRun:
    """One ES consumer job, from the first range to the final report."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.job = ctx.job
        self.cores = ctx.cores
        self.keeper = ctx.payloads or PayloadKeeper(ctx.job_dir, enabled=False)
        self.session: PayloadSession | None = None
        self.stageout = StageOut(
            ctx.job,
            ctx.queue,
            ctx.router,
            ctx.journal,
            ctx.job_dir / "stageout",
            max_failures=ctx.options.storage_max_failures,
            retry_delay=ctx.options.storage_retry_delay,
            on_give_up=self._storage_gave_up,
            on_report=self._nudge,
        )
        ctx.heartbeat.progress = self._progress
        ctx.heartbeat.wake = self._nudge
        self.no_more = False
        self.storage_broken = False
        self.received = 0
        #: Near the end of the chunk: ask only for waiting workers (ranges_wanted).
        self.end_game = False
        self.finished_by_payload = 0
        self.failed = 0
        self.released = 0
        #: Ranges a worker took, with when, not yet reported ``running``.
        self._running: list[tuple[float, dict[str, Any]]] = []
        self._done_ids: set[str] = set()
        self._last_flush = 0.0
        self._out_of_ranges_at: float | None = None

    # -- helpers -------------------------------------------------------------------

    def _progress(self) -> dict[str, Any]:
        return {"coreCount": self.cores, "nEvents": self.stageout.shipped_events}

    def _storage_gave_up(self) -> None:
        self.storage_broken = True
        self._nudge()

    def _nudge(self) -> None:
        """Wake the loop from another thread: a report to send, a command to obey."""
        if self.session is not None:
            self.session.channel.nudge()

    def _fail(
        self, ranges: list[dict[str, Any]], code: int, diag: str, fatal: bool = False
    ) -> None:
        if not ranges:
            return
        self.ctx.journal.add_ranges([failed_report(r, code, diag, fatal) for r in ranges])
        self._done_ids.update(str(r["eventRangeID"]) for r in ranges)
        if code == codes.PREEMPTED:
            self.released += len(ranges)
        else:
            self.failed += len(ranges)
        for r in ranges:
            log.info(
                "range %s: %s",
                "released" if code == codes.PREEMPTED else "failed",
                diag,
                extra={"range": r["eventRangeID"]},
            )

    def _accepting(self) -> bool:
        return not (self.no_more or self.ctx.control.draining or self.storage_broken)

    # -- communication -------------------------------------------------------------

    def _refill(self, wanted: int | None = None) -> None:
        """Ask for ranges when the buffer runs low (:func:`ranges_wanted`), or ``wanted``."""
        if not self._accepting():
            return
        if wanted is None:
            wanted = ranges_wanted(
                self.cores, self.channel.buffered, self.channel.waiting, self.end_game
            )
        if wanted <= 0:
            return
        try:
            ranges = self.ctx.client.get_event_ranges(
                self.job.panda_id, self.job.jobset_id, self.job.task_id, wanted
            )
        except DispatcherUnavailable as exc:
            log.warning("no ranges fetched: %s", exc)
            return
        except EventServiceError as exc:
            log.error("getEventRanges refused: %s; no more events for this job", exc)
            ranges = []
        if not ranges:
            log.info("dispatcher has no more events for this job")
            self.no_more = True
            if not self.keeper.enabled:
                self.channel.set_no_more()
            return
        for event_range in ranges:
            pfn = self.job.input_url(str(event_range.get("LFN", "")))
            if pfn and "PFN" not in event_range:
                event_range["PFN"] = pfn
        self.received += len(ranges)
        self._check_end_game(ranges)
        self.channel.add_ranges(ranges)

    def _check_end_game(self, ranges: list[dict[str, Any]]) -> None:
        if self.end_game:
            return
        left = min((n for r in ranges if (n := self.job.ranges_after(r)) is not None), default=None)
        if left is not None and left <= END_GAME_REQUESTS * n_ranges(self.cores):
            self.end_game = True
            log.info(
                "at most %d range(s) of the chunk left: from now on asking only for "
                "waiting workers",
                left,
            )

    def _handle(self, event: Any) -> None:
        if isinstance(event, RangeStarted):
            self._running.append((time.monotonic(), event.event_range))
        elif isinstance(event, RangeOutput):
            self.finished_by_payload += 1
            log.debug(
                "done: %s (cpu %.3f s, wall %.3f s)",
                event.output_path,
                event.cpu,
                event.wall,
                extra={"range": event.event_range["eventRangeID"]},
            )
            self._done_ids.add(str(event.event_range["eventRangeID"]))
            self.stageout.put(event.event_range, event.output_path, event.cpu, event.wall)
        elif isinstance(event, RangeError):
            code = codes.PAYLOAD_RANGE_FATAL if event.fatal else codes.PAYLOAD_RANGE_ERROR
            if event.kind == "ERR_PILOT_BAD_MESSAGE":
                code = codes.BAD_MESSAGE
            self._fail([event.event_range], code, f"{event.kind}: {event.reason}", event.fatal)
        elif isinstance(event, WorkerLost):
            if self.ctx.control.killed or self.ctx.control.grace_expired():
                self._fail(list(event.event_ranges), codes.PREEMPTED, "payload stopped by pilot")
            else:
                self._fail(
                    list(event.event_ranges),
                    codes.PAYLOAD_CRASHED,
                    "payload worker died holding the range",
                )

    def _report_running(self, now: float | None = None) -> None:
        """Send ``running`` for ranges running ``RUNNING_REPORT_DELAY`` s (best effort).

        With ``now=math.inf``, for every range handed out and not yet ended.
        """
        due = (now if now is not None else time.monotonic()) - RUNNING_REPORT_DELAY
        if not self._running or self._running[0][0] > due:
            return
        running = [
            r
            for started, r in self._running
            if started <= due and str(r["eventRangeID"]) not in self._done_ids
        ]
        self._running = [(started, r) for started, r in self._running if started > due]
        if not running:
            return
        try:
            result = self.ctx.client.update_event_ranges(
                [{"eventRangeID": r["eventRangeID"], "eventStatus": "running"} for r in running]
            )
        except EventServiceError as exc:
            log.warning("running reports not delivered: %s", exc)
            return
        self._answered(result.commands)

    def _answered(self, commands: dict[str, str | None]) -> None:
        """Obey the command an ``updateEventRanges`` answer gives this job, if it names it.

        The dispatcher refreshed the job's heartbeat with that call: the heartbeat
        thread may skip its next beat.
        """
        key = str(self.job.panda_id)
        if key not in commands:
            return
        self.ctx.heartbeat.heard()
        # apply_command ignores what is no command (None, "NULL").
        self.ctx.control.apply_command(commands[key], "updateEventRanges")

    def _flush(self, force: bool = False) -> None:
        """Send journaled reports, at most every ``FLUSH_INTERVAL`` s unless forced."""
        now = time.monotonic()
        if not force and (not self.ctx.journal.unsent or now - self._last_flush < FLUSH_INTERVAL):
            return
        self._last_flush = now
        outcome = self.ctx.journal.flush(self.ctx.client)
        self._answered(outcome.commands)

    # -- the loop ------------------------------------------------------------------

    @property
    def channel(self) -> Any:
        """The payload's channel (the session's: it may outlive this job)."""
        assert self.session is not None, "no payload session yet"
        return self.session.channel

    def run(self) -> JobResult:
        """Run the job to its end and return how it ended (reports already journaled)."""
        self.stageout.start()
        code: int | None = -1
        try:
            self.session = self.keeper.session_for(
                self.job.transformation, self.cores, self.ctx.job_dir
            )
            # One range per worker first: a job that joins a jobset near its end then
            # learns so (ranges_after) before it takes more than its workers can start.
            self._refill(self.cores)
            code = self._loop(self.session.process)
        except Exception as exc:
            # A pilot bug or an unstartable payload: hand everything back, report, end.
            log.exception("event-service executor failed")
            self.ctx.control.request_kill(f"pilot error: {type(exc).__name__}: {exc}")
            code = -1
        finally:
            payload = self.session.process if self.session is not None else None
            if code is not None and payload is not None and payload.poll() is None:
                code = payload.kill()
        if self.session is not None:
            self.session.copy_logs(self.ctx.job_dir)
        if code is None:
            result = self._conclude_parked()
        else:
            killed = self.session is None or self.session.process.killed
            result = self._conclude(code, killed)
        if self.session is not None:
            result.cpu_seconds = self.session.job_cpu()
        return result

    def _loop(self, payload: PayloadProcess) -> int | None:
        """Run until the job ends: the payload's exit code, or ``None`` when kept idle."""
        control = self.ctx.control
        draining_seen = told_no_more = False
        while True:
            try:
                # Any event wakes the loop: a range handed out, or a worker left waiting
                # (WorkerWaiting, nothing to handle), may call for ranges at once; a
                # Nudge (nothing to handle either) means a report, command or exit to see.
                self._handle(self.channel.events.get(timeout=self._wait_time()))
                while True:
                    self._handle(self.channel.events.get_nowait())
            except queue.Empty:
                pass
            if control.killed:
                return payload.kill()
            # Running out of events is no reason to drop buffered ranges: only a drain
            # (softkill, signal, maxtime) or broken storage hands them back unprocessed.
            if (control.draining or self.storage_broken) and not draining_seen:
                draining_seen = True
                self._fail(
                    self.channel.take_buffer(),
                    codes.PREEMPTED,
                    f"released unprocessed: {control.reason or 'no new ranges'}",
                )
                self.channel.set_no_more()
            if draining_seen and control.draining and control.grace_expired():
                log.warning("grace period over; stopping the payload")
                return payload.kill()
            self._refill()
            self._report_running()
            self._flush()
            code = payload.poll()
            if code is not None:
                return payload.wait()
            if self.no_more and not (draining_seen or told_no_more) and self._out_of_work():
                if self.channel.idle:
                    return None
                if time.monotonic() - (self._out_of_ranges_at or 0.0) > IDLE_WAIT:
                    log.info("payload not idle %.0f s after the last range: ending it", IDLE_WAIT)
                    self.channel.set_no_more()
                    told_no_more = True

    def _wait_time(self) -> float:
        """Seconds the loop may sleep before something falls due, if no event comes."""
        if self.channel.connected == 0:
            return PAYLOAD_POLL
        now = time.monotonic()
        due = [now + MAX_WAIT]
        if self._running:
            due.append(self._running[0][0] + RUNNING_REPORT_DELAY)
        if self.ctx.journal.unsent:
            due.append(self._last_flush + FLUSH_INTERVAL)
        # Future times only: one already past has been acted on, and would never pass.
        if self._out_of_ranges_at is not None and now < self._out_of_ranges_at + IDLE_WAIT:
            due.append(self._out_of_ranges_at + IDLE_WAIT)
        deadline = self.ctx.control.drain_deadline
        if deadline is not None and now < deadline:
            due.append(deadline)
        return max(0.0, min(due) - now)

    def _out_of_work(self) -> bool:
        """No range of this job left to hand out or waiting for its payload."""
        done = self.channel.buffered == 0 and self.channel.in_flight == 0
        if done and self._out_of_ranges_at is None:
            self._out_of_ranges_at = time.monotonic()
        return done

    def _drain_events(self) -> None:
        while True:
            try:
                self._handle(self.channel.events.get_nowait())
            except queue.Empty:
                break

    def _conclude_parked(self) -> JobResult:
        """Out of ranges with the payload idle: keep it for the next job, end this one."""
        assert self.session is not None
        self._drain_events()
        self.keeper.park(self.session)
        return self._conclude_reports("kept for the next job", killed=False)

    def _conclude(self, code: int, killed: bool) -> JobResult:
        """The payload has ended (or never started): hand back what it held, report."""
        if self.session is not None:
            # Read what workers sent just before the payload's exit was noticed.
            self.channel.wait_disconnected(timeout=2.0)
            self._drain_events()
            leftovers = self.channel.take_in_flight()
            unserved = self.channel.take_buffer()
            if killed:
                reason = f"payload stopped: {self.ctx.control.reason}"
                self._fail(leftovers, codes.PREEMPTED, reason)
            else:
                reason = f"payload exited ({code}) while processing the range"
                self._fail(leftovers, codes.PAYLOAD_CRASHED, reason)
            self._fail(unserved, codes.PREEMPTED, "payload ended before the range")
        try:
            return self._conclude_reports(f"exit {code}", killed, code)
        finally:
            if self.session is not None:
                # Only now: the outputs the stage-out has just shipped lay in its directory.
                self.session.end()

    def _conclude_reports(self, payload_end: str, killed: bool, code: int = 0) -> JobResult:
        # After a signal the batch system's own grace is ticking: don't wait on storage forever.
        control = self.ctx.control
        self.stageout.finish(timeout=max(30.0, control.grace) if control.stop_pilot else 3600.0)
        self._report_running(math.inf)
        self._flush(force=True)
        stats = {
            "received": self.received,
            "shipped": self.stageout.shipped_ranges,
            "failed": self.failed + self.stageout.failed_ranges,
            "released": self.released,
        }
        log.info("ES job done: payload %s, %s", payload_end, stats)
        n_events = self.stageout.shipped_events
        if self.ctx.control.killed:
            return JobResult(
                "failed",
                n_events,
                codes.JOB_KILLED,
                f"killed: {self.ctx.control.reason}",
                stats=stats,
            )
        if code != 0 and not killed:
            return JobResult(
                "failed",
                n_events,
                codes.JOB_PAYLOAD_FAILED,
                f"payload exited with {code}",
                code,
                stats=stats,
            )
        if self.storage_broken:
            return JobResult(
                "failed",
                n_events,
                codes.JOB_STAGEOUT_FAILED,
                "outputs could not be shipped",
                stats=stats,
            )
        return JobResult("finished", n_events, stats=stats)


def run_eventservice(ctx: JobContext) -> JobResult:
    """Run an ES consumer job."""
    return EventServiceRun(ctx).run()
