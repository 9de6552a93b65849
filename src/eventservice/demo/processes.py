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

from eventservice.proc import descendants
from eventservice.tls import tls_context

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
    """Reaps every child that has exited and sums the CPU time of the adopted orphans.

    Our own :class:`Child` processes, once :meth:`track`-ed, keep their exit status and
    CPU in their ``Child``; any other child (an orphan re-parented to this subreaper) is
    reaped here and its CPU added to :attr:`cpu_seconds`. Exited children are found
    with ``waitid(WNOWAIT)``, so nothing scans ``/proc`` twice a second.
    """

    known: dict[int, Child] = field(default_factory=dict)
    cpu_seconds: float = 0.0

    def track(self, child: Child) -> None:
        """Leave ``child``'s exit status and CPU to ``child`` itself."""
        self.known[child.process.pid] = child

    def reap(self) -> None:
        """Reap every child that has exited by now."""
        seen: set[int] = set()
        while (pid := _exited_child()) is not None and pid not in seen:
            seen.add(pid)  # a child that cannot be reaped is not asked about forever
            if pid in self.known:
                self.known[pid].poll()
                continue
            try:
                reaped, _status, usage = os.wait4(pid, os.WNOHANG)
            except ChildProcessError:
                continue  # reaped meanwhile by whoever started it
            if reaped:
                self.cpu_seconds += cpu_of(usage)


def _exited_child() -> int | None:
    """The PID of a child of ours that has exited and not been reaped, if any."""
    try:
        info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # no children at all
        return None
    return info.si_pid if info is not None and info.si_pid else None


def wait_for_dispatcher(url: str, child: Child, timeout: float = 60.0) -> None:
    """Poll getStatus until the dispatcher answers; raise if it died or never came up."""
    deadline = time.monotonic() + timeout
    with httpx.Client(verify=tls_context(url), timeout=2) as http:
        while time.monotonic() < deadline:
            if not child.poll():
                raise RuntimeError(f"the dispatcher exited with status {child.exit_status}")
            try:
                answer = http.post(
                    f"{url}/server/panda/getStatus", headers={"Accept": "application/json"}
                )
                if answer.status_code == 200 and answer.json().get("StatusCode") == 0:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"the dispatcher did not answer within {timeout:.0f} s")
