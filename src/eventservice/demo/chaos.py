"""What goes wrong on purpose during a demo: pilot deaths, a dispatcher crash, a storage outage."""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class PilotDeaths:
    """When pilots die: a global mean interval, or an exponential lifetime per pilot."""

    rng: random.Random
    every: float | None = None
    lifetime_mean: float | None = None
    next_kill: float | None = None
    deadlines: dict[str, float] = field(default_factory=dict)

    def start(self, now: float) -> None:
        if self.every:
            self.next_kill = now + self.rng.expovariate(1.0 / self.every)

    def born(self, name: str, now: float) -> None:
        if self.lifetime_mean:
            self.deadlines[name] = now + self.rng.expovariate(1.0 / self.lifetime_mean)

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
