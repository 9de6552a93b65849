"""Lease expiry: consumers silent for longer than the lease lose their jobs and ranges."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import select, update

from eventservice.dispatcher import history
from eventservice.dispatcher.jobs import job_ended
from eventservice.domain.states import ACTIVE_JOB_STATES, JobState
from eventservice.errors import EventServiceError
from eventservice.store.database import Database
from eventservice.store.schema import jobs

log = logging.getLogger(__name__)
_ACTIVE = [s.value for s in ACTIVE_JOB_STATES]
#: Jobs handled per transaction, so a backlog never holds the database for long.
REAP_BATCH = 50


def reap_expired(
    database: Database, lease_seconds: float, now: float, merge_max_attempts: int
) -> int:
    """Fail every active job whose heartbeat is older than the lease; return how many.

    Their ranges go back to ``ready`` as attempt+1 (a lease expiry counts against
    esMaxAttempt). On PostgreSQL only one dispatcher process reaps at a time.
    """
    reaped = 0
    while True:
        with database.transaction() as conn, database.reaper_lock(conn) as mine:
            if not mine:
                return reaped
            expired = conn.execute(
                select(jobs)
                .where(jobs.c.state.in_(_ACTIVE), jobs.c.heartbeat_at < now - lease_seconds)
                .order_by(jobs.c.panda_id)
                .limit(REAP_BATCH)
                .with_for_update(skip_locked=True)
            ).all()
            for job in expired:
                changed = conn.execute(
                    update(jobs)
                    .where(jobs.c.panda_id == job.panda_id, jobs.c.state == job.state)
                    .values(
                        state=JobState.FAILED.value,
                        ended_at=now,
                        error_diag="lost heartbeat: lease expired",
                    )
                ).rowcount
                if not changed:
                    continue
                history.record_one(
                    conn,
                    "job",
                    job.panda_id,
                    job.state,
                    JobState.FAILED.value,
                    attempt_nr=job.attempt_nr,
                    panda_id=job.panda_id,
                    now=now,
                    reason="lease expired",
                )
                job_ended(conn, job, False, [], now, merge_max_attempts, reason="lease expired")
                reaped += 1
        if len(expired) < REAP_BATCH:
            return reaped


class Reaper(threading.Thread):
    """Background thread that reaps expired leases every ``interval`` seconds."""

    def __init__(
        self,
        database: Database,
        lease_seconds: float,
        interval: float,
        merge_max_attempts: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name="lease-reaper", daemon=True)
        self._database = database
        self._lease = lease_seconds
        self._interval = interval
        self._merge_max_attempts = merge_max_attempts
        self._clock = clock
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self._interval):
            try:
                count = reap_expired(
                    self._database, self._lease, self._clock(), self._merge_max_attempts
                )
                if count:
                    log.info("reaped %d job(s) with expired leases", count)
            except EventServiceError as exc:  # keep reaping once the database is back
                log.warning("reaper: %s", exc)

    def stop(self) -> None:
        self._stop_event.set()
