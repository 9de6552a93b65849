"""Child processes of the demo: the dispatcher and pilots, with their CPU accounting.

The demo makes itself a *child subreaper*, so payload workers orphaned by a killed
pilot are re-parented to it and their CPU time is still counted when reaped. A pilot
killed on purpose dies with everything it started (:meth:`Child.kill` with
``tree=True``), as it does when a machine is reclaimed: its payload runs in a session
of its own and would otherwise finish its range for nobody.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from eventservice.proc import descendants, process_table

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux); ``False`` where the kernel does not allow it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def free_port() -> int:
    """A loopback port that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_of(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


@dataclass
class Child:
    """A process started in its own session, so it can be killed with all it started."""

    name: str
    process: subprocess.Popen[bytes]
    cpu_seconds: float = 0.0
    exit_status: int | None = None

    @property
    def alive(self) -> bool:
        return self.exit_status is None

    def poll(self) -> bool:
        """Reap the process if it ended; ``True`` while it runs."""
        if self.exit_status is not None:
            return False
        pid, status, usage = os.wait4(self.process.pid, os.WNOHANG)
        if pid == 0:
            return True
        self._ended(status, usage)
        return False

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30.0, tree: bool = False) -> None:
        """Signal the whole process group and reap the leader.

        With ``tree`` the process groups of all its descendants get ``sig`` too (the
        payload of a pilot runs in a session of its own).
        """
        if self.exit_status is not None:
            return
        groups = {self.process.pid}
        if tree:
            groups |= {g for g in map(process_group, descendants(self.process.pid)) if g}
            groups.discard(os.getpgrp())
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, sig)
        deadline = time.monotonic() + timeout
        while self.poll():
            if time.monotonic() > deadline:
                os.killpg(self.process.pid, signal.SIGKILL)
                deadline = time.monotonic() + timeout
            time.sleep(0.05)

    def _ended(self, status: int, usage: resource.struct_rusage) -> None:
        self.exit_status = os.waitstatus_to_exitcode(status)
        self.cpu_seconds = cpu_of(usage)
        self.process.returncode = self.exit_status


def process_group(pid: int) -> int | None:
    """The process group of ``pid``; ``None`` once it is gone."""
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def start(
    name: str, args: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None
) -> Child:
    """Start ``python -m eventservice ARGS`` in a new session, output to ``log``."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "eventservice", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    return Child(name, process)


@dataclass
class OrphanReaper:
    """Reaps adopted orphans (not our direct children) and sums their CPU time."""

    known: set[int] = field(default_factory=set)
    cpu_seconds: float = 0.0

    def reap(self) -> None:
        me = os.getpid()
        for pid, state, parent in process_table():
            if parent != me or state != "Z" or pid in self.known:
                continue
            try:
                reaped, _status, usage = os.wait4(pid, os.WNOHANG)
            except ChildProcessError:
                continue
            if reaped:
                self.cpu_seconds += cpu_of(usage)


def wait_for_dispatcher(url: str, child: Child, timeout: float = 60.0) -> None:
    """Poll getStatus until the dispatcher answers; raise if it died or never came up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.poll():
            raise RuntimeError(f"the dispatcher exited with status {child.exit_status}")
        try:
            answer = httpx.post(
                f"{url}/server/panda/getStatus", headers={"Accept": "application/json"}, timeout=2
            )
            if answer.status_code == 200 and answer.json().get("StatusCode") == 0:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the dispatcher did not answer within {timeout:.0f} s")
