"""The heartbeat/monitor thread: ``updateJob`` every H seconds, commands, deadlines.

Each beat reports the job ``running`` (with what the executor says about progress)
and hands the answer's command to :class:`~eventservice.pilot.signals.PilotControl`.
Between beats the thread checks the pilot's own deadline (the queue's ``maxtime``
minus a margin, or ``--lifetime``) and soft-kills itself when it has passed.
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
        self.beats = 0
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

    def check_deadline(self) -> None:
        """Soft-kill the pilot once its own deadline has passed."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.control.request_drain("pilot deadline reached (maxtime/lifetime)", pilot_wide=True)
            self.deadline = None

    def _run(self) -> None:
        next_beat = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_beat:
                self.beat()
                next_beat = time.monotonic() + self.interval
            self.check_deadline()
            self._stop.wait(min(1.0, max(0.0, next_beat - time.monotonic())))
