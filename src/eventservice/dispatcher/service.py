"""The dispatcher's operations, each one transaction (a report batch: one, then one per
jobset it may have drained, at once or by a :class:`~.concluder.Concluder`): the API the
HTTP layer calls."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from eventservice.dispatcher import concluder, jobs, ranges, reaper, tasks, updates, views
from eventservice.dispatcher.settings import DispatcherSettings
from eventservice.domain.params import QueueParams
from eventservice.domain.states import Command
from eventservice.domain.task_spec import TaskSpec
from eventservice.errors import InvalidInput
from eventservice.store.database import Database

#: Ranges one task may have; all are created in one transaction at submission.
MAX_RANGES_PER_TASK = 2_000_000


class Dispatcher:
    """Event-level bookkeeping over a SQL database (SQLite or PostgreSQL)."""

    def __init__(
        self,
        database: Database,
        settings: DispatcherSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.database = database
        self.settings = settings or DispatcherSettings()
        self.clock = clock
        #: Concludes drained jobsets in the background once started; until then each
        #: report concludes them itself before it is answered.
        self.concluder: concluder.Concluder | None = None

    # --- tasks and queues -------------------------------------------------------------

    def submit_task(self, data: dict[str, Any]) -> int:
        """Validate and create a task; returns its taskID."""
        spec = TaskSpec.from_mapping(data)
        resolved = tuple(tasks.resolve_input(f) for f in spec.inputs)
        spec = TaskSpec(**{**spec.__dict__, "inputs": resolved})
        n_ranges = sum(-(-(f.n_events or 0) // spec.params.nEventsPerWorker) for f in resolved)
        if n_ranges > MAX_RANGES_PER_TASK:
            raise InvalidInput(
                f"task would have {n_ranges} event ranges, more than {MAX_RANGES_PER_TASK}: "
                "raise nEventsPerWorker or split it into several tasks"
            )
        with self.database.transaction() as conn:
            return tasks.submit_task(conn, spec, self.clock())

    def add_queue(self, name: str, data: dict[str, Any], replace: bool = False) -> dict[str, Any]:
        params = QueueParams.from_mapping(data)
        with self.database.transaction() as conn:
            tasks.add_queue(conn, name, params, self.clock(), replace)
            return tasks.describe_queue(conn, name)

    def queue(self, name: str) -> dict[str, Any]:
        with self.database.transaction() as conn:
            return tasks.describe_queue(conn, name)

    def queues(self) -> list[dict[str, Any]]:
        with self.database.transaction() as conn:
            return tasks.list_queues(conn)

    # --- PanDA dispatcher methods -----------------------------------------------------

    def get_job(self, queue: str, node: str) -> dict[str, Any] | None:
        with self.database.transaction() as conn:
            return jobs.claim_job(conn, queue, node, self.clock())

    def update_job(self, panda_id: int, state: str, details: dict[str, Any]) -> str:
        with self.database.transaction() as conn:
            return jobs.update_job(
                conn, panda_id, state, details, self.clock(), self.settings.merge_max_attempts
            )

    def set_command(self, panda_id: int, command: Command) -> dict[str, Any]:
        with self.database.transaction() as conn:
            return jobs.set_command(
                conn, panda_id, command, self.clock(), self.settings.merge_max_attempts
            )

    def get_event_ranges(
        self, panda_id: int, jobset_id: int | None, task_id: int | None, n_ranges: int
    ) -> list[dict[str, Any]]:
        limit = self.settings.max_ranges_per_call
        if not 1 <= n_ranges <= limit:
            raise InvalidInput(f"nRanges must be between 1 and {limit}, got {n_ranges}")
        now = self.clock()
        if self.database.is_sqlite:
            with self.database.transaction() as conn:
                return ranges.get_event_ranges(conn, panda_id, jobset_id, task_id, n_ranges, now)
        # Most answers are whole: one statement, committed on its own, makes them.
        with self.database.statements() as conn:
            first = ranges.first_claim(conn, panda_id, jobset_id, task_id, n_ranges, now)
            if first is not None and len(first.rows) == n_ranges:
                return ranges.answer(conn, panda_id, first, n_ranges)
        with self.database.transaction() as conn:
            return ranges.get_event_ranges(
                conn, panda_id, jobset_id, task_id, n_ranges, now, first, tried=True
            )

    def update_event_ranges(self, entries: Any, version: int) -> dict[str, Any]:
        """Apply a batch; refusals come back per range, malformed batches change nothing.

        A jobset whose last ready ranges may be gone is checked once the batch has
        committed (:func:`~.lifecycle.conclude_jobset`): by the :attr:`concluder` if one
        runs, else here before the answer.
        """
        if version not in (0, 1):
            raise InvalidInput(f"version must be 0 or 1, got {version}")
        reports = ranges.parse_batch(entries, version, self.settings.max_batch)
        now = self.clock()
        with self.database.transaction() as conn:
            outcome = updates.apply_reports(conn, reports, now)
        if self.concluder is not None:
            self.concluder.submit(outcome.drained)
        else:
            for jobset_id in outcome.drained:
                concluder.conclude(self.database, jobset_id, now)
        return {"Returns": outcome.applied, "Errors": outcome.errors, "Command": outcome.commands}

    def events_available(self, panda_id: int, jobset_id: int | None, task_id: int | None) -> int:
        with self.database.transaction() as conn:
            return ranges.count_available(conn, panda_id, jobset_id, task_id)

    def reap(self) -> int:
        """Reap expired leases now (the background reaper calls this periodically)."""
        return reaper.reap_expired(
            self.database,
            self.settings.lease_seconds,
            self.clock(),
            self.settings.merge_max_attempts,
        )

    def start_concluder(self) -> concluder.Concluder:
        """Conclude drained jobsets in a background thread from now on (see :mod:`.concluder`)."""
        thread = concluder.Concluder(self.database, self.clock)
        thread.start()
        self.concluder = thread
        return thread

    def stop_concluder(self, timeout: float | None = None) -> None:
        """Conclude what is pending, then go back to concluding before each answer."""
        thread, self.concluder = self.concluder, None
        if thread is not None:
            thread.stop(timeout)

    def start_reaper(self) -> reaper.Reaper:
        thread = reaper.Reaper(
            self.database,
            self.settings.lease_seconds,
            self.settings.effective_reap_interval,
            self.settings.merge_max_attempts,
            self.clock,
        )
        thread.start()
        return thread

    # --- read API ---------------------------------------------------------------------

    def task(self, task_id: int) -> dict[str, Any]:
        with self.database.transaction() as conn:
            return views.task_summary(conn, task_id)

    def tasks(self) -> list[dict[str, Any]]:
        with self.database.transaction() as conn:
            return views.list_tasks(conn)

    def job(self, panda_id: int) -> dict[str, Any]:
        with self.database.transaction() as conn:
            return views.job_detail(conn, panda_id)

    def jobs(self, **filters: Any) -> list[dict[str, Any]]:
        with self.database.transaction() as conn:
            return views.list_jobs(conn, **filters)

    def event_ranges(self, **filters: Any) -> list[dict[str, Any]]:
        with self.database.transaction() as conn:
            return views.list_ranges(conn, **filters)

    def history(self, **filters: Any) -> list[dict[str, Any]]:
        with self.database.transaction() as conn:
            return views.list_history(conn, **filters)

    def stats(self) -> dict[str, Any]:
        with self.database.transaction() as conn:
            return views.stats(conn)
