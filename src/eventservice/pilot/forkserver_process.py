"""What runs in a fork server's process: import the preload, fork payloads on request.

The pilot's side, and the protocol on the server's stdin and stdout, are in
:mod:`eventservice.pilot.forkserver`.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import json
import os
import select
import signal
import sys
import threading
import traceback
from typing import Any, NoReturn


def serve(preload: list[str], entry: str, standby: bool = False) -> None:
    """Run as the fork server: import ``preload``, then fork payloads on request.

    A ``standby`` server imports ``preload`` only once its first request gave it an
    environment.
    """
    if not standby:
        _preload(preload)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    pending = b""
    while True:
        readable, _, _ = select.select([0, wake_read], [], [])
        if wake_read in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_read, 4096)
            _report_exits()
        if 0 in readable:
            chunk = os.read(0, 65536)
            if not chunk:
                return  # the pilot is done with us
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                request = json.loads(line)
                if "environment" in request:
                    os.environ.clear()
                    os.environ.update(request["environment"])
                    _preload(preload)
                else:
                    _answer(request, entry, (wake_read, wake_write))


def _preload(names: list[str]) -> None:
    # Collections while importing would only look at objects that freeze() keeps for good.
    gc.disable()
    try:
        for name in names:
            importlib.import_module(name)
    finally:
        gc.enable()
    # Objects made so far stay out of the collector: forked payloads share their pages
    # instead of copying them when a collection touches every object.
    gc.freeze()


def serve_standby(
    ours: tuple[int, int],
    theirs: tuple[int, int],
    in_session: int,
    preload: tuple[str, ...],
    entry: str,
) -> NoReturn:
    """Run as a standby server in a process just forked from the pilot; never returns.

    ``ours`` are the pipe ends this process reads requests from and answers on, which
    become its stdin and stdout; ``theirs`` are the pilot's ends, closed here.
    ``in_session`` is closed once this process leads a session of its own: the pilot
    waits for that, so that no signal to its process group can reach the server.
    """
    code = 1
    try:
        os.setsid()
        os.close(in_session)
        os.dup2(ours[0], 0)
        os.dup2(ours[1], 1)
        for fd in (*ours, *theirs):
            os.close(fd)
        # Payloads write to fds 1 and 2 through sys.stdout and sys.stderr, as in a fresh
        # interpreter; the forking process may have replaced them (a test runner).
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - the process's own
        sys.stderr = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)  # noqa: SIM115
        serve(list(preload), entry, standby=True)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)  # never back into the pilot's code, its exit handlers included


def _send(message: dict[str, Any]) -> None:
    os.write(1, json.dumps(message).encode() + b"\n")


def _report_exits() -> None:
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            return
        code = os.waitstatus_to_exitcode(status)
        _send({"exited": pid, "code": code, "cpu": usage.ru_utime + usage.ru_stime})


def _answer(request: dict[str, Any], entry: str, wake: tuple[int, int]) -> None:
    # The pid is reported once the child leads its session: from then on the pilot can
    # signal its process group, as it does a subprocess payload's.
    ready_read, ready_write = os.pipe()
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(ready_read)
        os.close(ready_write)
        _send({"error": f"fork failed: {exc}"})
        return
    if pid == 0:
        os.close(ready_read)
        _run_child(request, entry, (*wake, ready_write))
    os.close(ready_write)
    os.read(ready_read, 1)  # a byte, or end of file if the child died before
    os.close(ready_read)
    _send({"started": pid})


def _run_child(request: dict[str, Any], entry: str, fds: tuple[int, int, int]) -> NoReturn:
    code = 1
    try:
        os.setsid()
        *wake, ready = fds
        os.write(ready, b"x")
        os.close(ready)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in wake:
            os.close(fd)
        gc.unfreeze()
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        for fd, path, mode in (
            (0, os.devnull, os.O_RDONLY),
            (1, request["stdout"], flags),
            (2, request["stderr"], flags),
        ):
            opened = os.open(path, mode, 0o644)
            os.dup2(opened, fd)
            os.close(opened)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["eventservice", *request["argv"]]
        module, function = entry.split(":")
        try:
            getattr(importlib.import_module(module), function)()
            code = 0
        except SystemExit as exc:
            code = exit_code(exc)
        # What the interpreter does before it exits: wait for the payload's own
        # threads, run its exit handlers.
        for thread in threading.enumerate():
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join()
        atexit._run_exitfuncs()
    except BaseException:
        traceback.print_exc()
        code = code or 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def exit_code(exc: SystemExit) -> int:
    """The exit status the interpreter gives ``raise SystemExit(exc.code)``."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1
