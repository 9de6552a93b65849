"""Jobset conclusions off the request path: a report is answered once it has committed.

The report that ends a jobset's last held range used to conclude the jobset before its
answer: close its queued consumers, move every finished range to ``done`` and create the
merge job. That move touches every range of the jobset (0.5 s for 40,960 ranges on
PostgreSQL here), so the answer of one report waited for the size of its jobset, and a
large enough jobset would outlast the pilot's HTTP timeout. PanDA makes merge jobs apart
from its dispatcher's calls as well.

A :class:`Concluder` thread takes the jobsets that reports may have drained and concludes
them one at a time, each in a transaction of its own. A dispatcher that stops before it
has concluded one leaves the work to the fallbacks that a crash after a report's commit
always had: the consumers' end (updateJob) and the lease reaper refresh the jobset.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from eventservice.dispatcher import lifecycle
from eventservice.errors import EventServiceError
from eventservice.store.database import Database

log = logging.getLogger(__name__)


def conclude(database: Database, jobset_id: int, now: float) -> None:
    """Conclude one jobset in a transaction of its own; failures are logged, not raised.

    The reports are committed and answered as such whatever happens here.
    """
    try:
        with database.transaction() as conn:
            lifecycle.conclude_jobset(conn, jobset_id, now)
    except EventServiceError as error:
        log.warning("jobset %d not concluded after a report: %s", jobset_id, error)


class Concluder(threading.Thread):
    """Background thread that concludes the jobsets handed to :meth:`submit`, in order."""

    def __init__(self, database: Database, clock: Callable[[], float] = time.time) -> None:
        super().__init__(name="jobset-concluder", daemon=True)
        self._database = database
        self._clock = clock
        # A dict as an ordered set: a jobset named by several reports is concluded once.
        self._pending: dict[int, None] = {}
        self._busy = False
        self._stopping = False
        self._changed = threading.Condition()

    def submit(self, jobset_ids: Iterable[int]) -> None:
        """Conclude these jobsets soon (after the caller's transaction has committed).

        Once :meth:`stop` was called they are concluded here and now instead.
        """
        jobset_ids = list(jobset_ids)
        if not jobset_ids:
            return
        with self._changed:
            if not self._stopping:
                for jobset_id in jobset_ids:
                    self._pending[jobset_id] = None
                self._changed.notify_all()
                return
        for jobset_id in jobset_ids:
            conclude(self._database, jobset_id, self._clock())

    def run(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._stopping:
                    self._changed.wait()
                if not self._pending:
                    return
                jobset_id = next(iter(self._pending))
                del self._pending[jobset_id]
                self._busy = True
            try:
                conclude(self._database, jobset_id, self._clock())
            except Exception:
                # A bug here must not end the thread: every later jobset would then wait
                # for its consumers' end to be concluded.
                log.exception("jobset %d: conclusion failed", jobset_id)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every submitted jobset has been concluded; ``False`` on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._pending and not self._busy, timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Conclude what was submitted, then end the thread (waits at most ``timeout`` s)."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self.is_alive():
            self.join(timeout)
