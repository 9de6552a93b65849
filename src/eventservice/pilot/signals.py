"""Stop requests: dispatcher commands, self-imposed deadlines and POSIX signals.

:class:`PilotControl` is the one object every thread consults. A *drain* (``softkill``,
``SIGTERM``/``SIGINT``/``SIGUSR1``, the queue's ``maxtime``) means: take no new ranges,
let in-flight ones finish within a grace period, ship and report, exit cleanly. A
*kill* (``tobekilled``, a second signal) means: stop the payload now, report what is done.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

log = logging.getLogger(__name__)

DRAIN_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class PilotControl:
    """Thread-safe drain/kill flags with the reason and the drain deadline."""

    def __init__(self, grace: float = 60.0) -> None:
        self.grace = grace
        self._lock = threading.Lock()
        self._drain = threading.Event()
        self._kill = threading.Event()
        self.reason: str | None = None
        self.drain_deadline: float | None = None
        self.signalled = False
        self._pilot_wide = False

    @property
    def draining(self) -> bool:
        """No new ranges or jobs should be taken."""
        return self._drain.is_set() or self._kill.is_set()

    @property
    def killed(self) -> bool:
        """Stop the payload now."""
        return self._kill.is_set()

    def request_drain(
        self, reason: str, grace: float | None = None, *, pilot_wide: bool = False
    ) -> None:
        """Drain; in-flight work has ``grace`` seconds (default: the pilot's grace).

        ``pilot_wide`` drains outlive the job (signals, deadlines): no further job is taken.
        """
        with self._lock:
            self._pilot_wide = self._pilot_wide or pilot_wide
            deadline = time.monotonic() + (self.grace if grace is None else grace)
            if self.drain_deadline is None or deadline < self.drain_deadline:
                self.drain_deadline = deadline
            if not self._drain.is_set():
                self.reason = reason
                self._drain.set()
                log.warning("draining: %s", reason)

    def request_kill(self, reason: str, *, pilot_wide: bool = False) -> None:
        """Stop now."""
        with self._lock:
            self._pilot_wide = self._pilot_wide or pilot_wide
            if not self._kill.is_set():
                self.reason = reason
                self._kill.set()
                log.warning("killing: %s", reason)

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; ``True`` as soon as a drain or kill is asked for."""
        end = time.monotonic() + seconds
        while not self.draining:
            left = end - time.monotonic()
            if left <= 0:
                return False
            self._drain.wait(min(left, 0.1))  # a kill sets no drain: look again soon
        return True

    def grace_expired(self) -> bool:
        """Whether a drain has run out of time."""
        deadline = self.drain_deadline
        return deadline is not None and time.monotonic() >= deadline

    def apply_command(self, command: str | None, origin: str = "dispatcher") -> None:
        """Obey a dispatcher command (``tobekilled``, ``softkill``; others ignored)."""
        if command == "tobekilled":
            self.request_kill(f"{origin} said tobekilled")
        elif command == "softkill":
            self.request_drain(f"{origin} said softkill")

    @property
    def stop_pilot(self) -> bool:
        """Whether the pilot must take no further job."""
        return self._pilot_wide

    def reset_for_next_job(self) -> None:
        """Forget a job's ``softkill``/``tobekilled``; pilot-wide drains stay in force."""
        with self._lock:
            if not self._pilot_wide:
                self._kill.clear()
                self._drain.clear()
                self.drain_deadline = None
                self.reason = None


def install_signal_handlers(control: PilotControl) -> Callable[[], None]:
    """Route drain signals to ``control``; a second signal kills. Returns an undo function.

    Must be called from the main thread (Python only delivers signals there).
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if control.signalled:
            control.request_kill(f"second signal {name}", pilot_wide=True)
            return
        control.signalled = True
        control.request_drain(f"signal {name}", pilot_wide=True)

    previous = {sig: signal.signal(sig, handler) for sig in DRAIN_SIGNALS}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
