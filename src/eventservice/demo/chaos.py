"""What goes wrong on purpose during a demo: pilot deaths, a dispatcher crash, a storage outage."""

from __future__ import annotations

import math
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

#: The golden ratio's fractional part: stepping by it visits [0, 1) evenly at any length.
GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass
class PilotDeaths:
    """When pilots die: a global mean interval, or an exponential lifetime per pilot.

    Lifetimes are exponential with mean ``lifetime_mean``. With ``spread`` (the default)
    their quantiles are taken in a quasi-random order: a seeded start, then steps of the
    golden ratio. Plain draws leave a run of a dozen pilots to its seed's luck (seed 7's
    first 13 exponential draws for a mean of 30 s average 11.5 s); any prefix of this
    sequence covers the distribution evenly, so a short run sees about the nominal mean.
    The same evenness also spaces the long lifetimes: a job that needs one pilot to
    outlive it never waits many pilots for one, which favours file-level jobs over
    pilots killed truly at random. ``spread=False`` gives independent draws, for
    comparisons that must not lean either way (``benchmarks/lifetime_sampling.py``).
    """

    rng: random.Random
    every: float | None = None
    lifetime_mean: float | None = None
    spread: bool = True
    next_kill: float | None = None
    deadlines: dict[str, float] = field(default_factory=dict)
    #: Every lifetime handed out, in order.
    lifetimes: list[float] = field(default_factory=list)
    _quantile: float | None = None

    def start(self, now: float) -> None:
        if self.every:
            self.next_kill = now + self.rng.expovariate(1.0 / self.every)

    def born(self, name: str, now: float) -> None:
        if self.lifetime_mean:
            self.deadlines[name] = now + self.next_lifetime()

    def next_lifetime(self) -> float:
        """The next pilot's lifetime (seconds)."""
        assert self.lifetime_mean, "no lifetimes without a mean"
        if not self.spread:
            lifetime = self.rng.expovariate(1.0 / self.lifetime_mean)
        else:
            if self._quantile is None:
                self._quantile = self.rng.random()
            else:
                self._quantile = (self._quantile + GOLDEN) % 1.0
            lifetime = -self.lifetime_mean * math.log1p(-self._quantile)
        self.lifetimes.append(lifetime)
        return lifetime

    def victims(self, alive: list[str], now: float) -> list[str]:
        """Names of the pilots to SIGKILL now."""
        doomed = [name for name in alive if self.deadlines.get(name, float("inf")) <= now]
        if self.next_kill is not None and now >= self.next_kill and alive:
            choice = self.rng.choice(alive)
            if choice not in doomed:
                doomed.append(choice)
            self.next_kill = now + self.rng.expovariate(1.0 / (self.every or 1.0))
        return doomed


@dataclass
class StorageOutage:
    """Makes a local object-store directory unwritable, even for root, for a while.

    The directory is moved aside and a plain file takes its place, so every write under
    it fails; afterwards the directory comes back with everything it held.
    """

    directory: Path
    start_at: float
    duration: float
    state: str = "pending"  # pending | down | over

    @property
    def aside(self) -> Path:
        return self.directory.with_name(self.directory.name + ".offline")

    def tick(self, elapsed: float) -> str | None:
        """Advance; returns a note when something changed."""
        if self.state == "pending" and elapsed >= self.start_at:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.directory.rename(self.aside)
            self.directory.write_text("storage outage: this object store is offline\n")
            self.state = "down"
            return f"object store {self.directory} is down"
        if self.state == "down" and elapsed >= self.start_at + self.duration:
            self.end()
            return f"object store {self.directory} is back"
        return None

    def end(self) -> None:
        if self.state != "down":
            return
        self.directory.unlink(missing_ok=True)
        if self.aside.exists():
            self.aside.rename(self.directory)
        else:  # nothing was ever stored: leave an empty store
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory.mkdir()
        self.state = "over"
