"""Dispatcher settings (server-wide, not per task)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DispatcherSettings:
    """Knobs of one dispatcher process."""

    #: A consumer silent for longer loses its ranges (DESIGN §4).
    lease_seconds: float = 300.0
    #: How often the reaper looks for expired leases; default lease/4, at most 10 s.
    reap_interval: float | None = None
    #: Most ranges one getEventRanges may ask for.
    max_ranges_per_call: int = 1000
    #: Most entries one updateEventRanges batch may carry.
    max_batch: int = 5000
    #: Merge tries of a jobset before its outputs are discarded and re-processed.
    merge_max_attempts: int = 3

    @property
    def effective_reap_interval(self) -> float:
        if self.reap_interval is not None:
            return self.reap_interval
        return max(0.2, min(self.lease_seconds / 4, 10.0))
