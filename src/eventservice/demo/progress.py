"""The demo's live progress view (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

RANGE_STATES = ("ready", "sent", "running", "finished", "done", "merged", "failed", "fatal")


def events_with_output(task: dict[str, Any]) -> int:
    """Events whose output is stored: finished ES ranges, and done file-level jobsets."""
    events = task.get("events", {})
    from_ranges = sum(events.get(state, 0) for state in ("finished", "done", "merged"))
    from_jobs = sum(
        o["lastEvent"] - o["firstEvent"] + 1
        for o in task.get("outputs", [])
        if not o.get("eventService") and o.get("state") == "done"
    )
    return from_ranges + from_jobs


class Progress:
    """Ranges per state, events merged, pilots alive and throughput, refreshed in place."""

    def __init__(self, live: bool = True, console: Console | None = None) -> None:
        self.console = console or Console()
        self._live = Live(console=self.console, refresh_per_second=4) if live else None
        self._notes: list[str] = []

    def __enter__(self) -> Progress:
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def note(self, text: str) -> None:
        self._notes = [*self._notes[-4:], text]

    def update(
        self, task: dict[str, Any], pilots_alive: int, pilots_killed: int, elapsed: float
    ) -> None:
        if self._live is None:
            return
        ranges = task.get("ranges", {})
        table = Table(title=f"task {task['taskID']}: {task['state']}", expand=False)
        for state in RANGE_STATES:
            table.add_column(state, justify="right")
        table.add_row(*(str(ranges.get(state, 0)) for state in RANGE_STATES))
        events = task.get("events", {})
        processed = events_with_output(task)
        rate = processed / elapsed if elapsed > 0 else 0.0
        line = Text(
            f"events processed {processed}/{task['nEvents']}  merged {events.get('merged', 0)}"
            f"  pilots alive {pilots_alive}  killed {pilots_killed}"
            f"  throughput {rate:.0f} events/s  elapsed {elapsed:.0f} s"
        )
        self._live.update(Group(table, line, *(Text(n, style="dim") for n in self._notes)))
