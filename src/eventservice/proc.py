"""Linux's process table, read from ``/proc``: who is whose child, and CPU used so far.

The demo uses it to kill a pilot with everything it started, and to tell how much CPU
time the machine's hypervisor took; the pilot, to tell what a payload it keeps between
jobs has used while it still runs. Elsewhere than Linux the table is empty, the CPU
unknown (0) and the hypervisor's share unknown (``None``).
"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name; ``None`` if gone."""
    try:
        # The command name in parentheses may hold spaces: split after it.
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None


def process_table() -> list[tuple[int, str, int]]:
    """``(pid, state, parent pid)`` of every process."""
    table = []
    if not PROC.is_dir():
        return table
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(entry.name)) and len(fields) > 1:
            table.append((int(entry.name), fields[0], int(fields[1])))
    return table


def is_running(pid: int) -> bool:
    """Whether ``pid`` still runs: a zombie (exited, not yet reaped) does not."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] != "Z"


def descendants(pid: int) -> list[int]:
    """PIDs of every living descendant of ``pid``."""
    children: dict[int, list[int]] = {}
    for child, _state, parent in process_table():
        children.setdefault(parent, []).append(child)
    found: list[int] = []
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and everything it started, reaped or not."""
    total = 0
    for member in (pid, *descendants(pid)):
        fields = _stat_fields(member)
        if fields and len(fields) > 14:
            # utime, stime, and cutime, cstime: the descendants this one has reaped.
            total += sum(int(value) for value in fields[11:15])
    return total / _TICKS


def cpu_steal_seconds() -> float | None:
    """Core-seconds this machine's hypervisor has run something else on its CPUs since boot.

    The ``steal`` column of ``/proc/stat``: while a virtual CPU wanted to run, the host
    gave its physical CPU to another guest. No process here could use that time, and no
    process's CPU time counts it. ``None`` where the kernel does not say.
    """
    try:
        with (PROC / "stat").open() as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal ...
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    return int(fields[8]) / _TICKS
