"""The heartbeat/monitor thread: ``updateJob`` every H seconds, commands, deadlines.

Each beat reports the job ``running`` (with what the executor says about progress)
and hands the answer's command to :class:`~eventservice.pilot.signals.PilotControl`.
Once one beat got through, a beat is skipped while the dispatcher hears from the job
another way: an ``updateEventRanges`` naming the job refreshes its heartbeat and
answers its command (DESIGN §5), so an ES job that reports ranges every second needs
no beat of its own.
The thread also soft-kills the pilot at its own deadline (the queue's ``maxtime``
minus a margin, or ``--lifetime``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from eventservice.errors import DispatcherUnavailable, EventServiceError
from eventservice.pilot.signals import PilotControl

log = logging.getLogger(__name__)


class Heartbeat:
    """Beats for one job until stopped."""

    def __init__(
        self,
        client: Any,
        panda_id: int,
        interval: float,
        control: PilotControl,
        progress: Callable[[], dict[str, Any]] = dict,
        deadline: float | None = None,
    ) -> None:
        self.client = client
        self.panda_id = panda_id
        self.interval = max(0.05, interval)
        self.control = control
        self.progress = progress
        self.deadline = deadline
        #: Called after this thread told ``control`` to drain or kill, so the job's
        #: executor acts now rather than at its next look (an executor may set it).
        self.wake: Callable[[], None] = lambda: None
        self.beats = 0
        #: When the dispatcher last heard from the job other than by a beat (monotonic).
        self._heard_at = -float("inf")
        self._stop = threading.Event()
        self._send_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        """Beat now and then every ``interval`` seconds in a background thread."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop beating; once this returns no further beat is sent."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        # A beat stuck in retries must not overtake the job's final update.
        if not self._send_lock.acquire(timeout=timeout):
            log.warning("a heartbeat is still being retried while the job ends")
            return
        self._send_lock.release()

    def heard(self) -> None:
        """The dispatcher has just heard from the job (and answered its command) by
        another call: the next beat is due ``interval`` s from now."""
        self._heard_at = time.monotonic()

    def beat(self) -> None:
        """Send one ``updateJob(running)`` and obey its command."""
        with self._send_lock:
            if self._stop.is_set() and self.beats:
                return
            try:
                command = self.client.update_job(self.panda_id, "running", **self.progress())
            except DispatcherUnavailable as exc:
                log.warning("heartbeat not delivered: %s", exc)
                return
            except EventServiceError as exc:
                log.error("heartbeat refused: %s", exc)
                return
            self.beats += 1
        if command:
            log.info("dispatcher command on heartbeat: %s", command)
            self.control.apply_command(command, "heartbeat")
            self.wake()

    def check_deadline(self) -> None:
        """Soft-kill the pilot once its own deadline has passed."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.control.request_drain("pilot deadline reached (maxtime/lifetime)", pilot_wide=True)
            self.deadline = None
            self.wake()

    def _run(self) -> None:
        next_beat = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_beat:
                # Only once a beat got through: the first one tells the dispatcher
                # the job is running.
                if self.beats and now - self._heard_at < self.interval:
                    next_beat = self._heard_at + self.interval
                else:
                    self.beat()
                    next_beat = time.monotonic() + self.interval
            self.check_deadline()
            # Each wake-up costs CPU the payload could use: sleep until the next beat
            # or the deadline, whichever comes first.
            wake = next_beat if self.deadline is None else min(next_beat, self.deadline)
            self._stop.wait(max(0.0, wake - time.monotonic()))
