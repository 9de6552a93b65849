"""CPU time the machine's hypervisor took during a run (virtual machines only).

On a virtual machine the host may give a physical CPU to another guest while one of
ours wants to run: ``/proc/stat`` counts that as *steal*. A run's wall time then holds
time that no process of the run could use, and that no process's CPU time shows; the
demo reports it, and the preemption benchmark sets it apart from the system's own costs.
"""

from __future__ import annotations

from eventservice.proc import cpu_steal_seconds


class StealClock:
    """The hypervisor's steal (:func:`cpu_steal_seconds`) read along a run from ``start``.

    Reads come with the task polls; :meth:`during` interpolates between the two around
    the task's end, which the dispatcher records more precisely than a poll sees it.
    """

    def __init__(self, start: float) -> None:
        self.start = start
        self.readings: list[tuple[float, float]] = []
        self.read(start)

    def read(self, now: float) -> None:
        """Take a reading at ``now`` (``time.monotonic()``), if the kernel gives one."""
        value = cpu_steal_seconds()
        if value is not None:
            self.readings.append((now - self.start, value))

    def during(self, seconds: float) -> float | None:
        """Core-seconds stolen in the first ``seconds`` of the run; ``None``: unknown."""
        if len(self.readings) < 2:
            return None
        first = self.readings[0][1]
        before = max(
            (r for r in self.readings if r[0] <= seconds),
            key=lambda r: r[0],
            default=self.readings[0],
        )
        after = min((r for r in self.readings if r[0] >= seconds), default=self.readings[-1])
        if after[0] <= before[0]:
            return after[1] - first
        share = (seconds - before[0]) / (after[0] - before[0])
        return before[1] - first + share * (after[1] - before[1])
