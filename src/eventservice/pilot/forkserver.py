"""Payload processes forked from an interpreter that has already imported the payload.

Every start of the reference payload or of a merge costs about 0.75 s of CPU before any
work: Python imports numpy, awkward and uproot afresh in each process. A pilot starts one
such process per ES payload and per merge job. Its *fork server* imports them once and
forks each payload of this installation's own ``eventservice`` CLI from there, ready to
run, as AthenaMP forks its workers after initialisation. Any other command, or one the
server cannot run exactly as the shell would (shell syntax, another interpreter, an
environment that differs in what is read at start-up), starts as a plain subprocess.

The server is a child of the pilot, in a session of its own (signals to the pilot's
process group are the pilot's to handle); it ends when its stdin closes, that is when
the pilot ends or dies. The pilot forks it from itself as it starts, before any thread
runs, so the server shares the interpreter and the pilot's own imports (about 0.2 s of
CPU a fresh ``python -c`` would spend again, ``benchmarks/forkserver_start.py``); it
waits there, importing nothing more, until the first payload it can serve. Where the
pilot cannot do that (another thread already runs, a second core count), the server
starts afresh as ``python -c``. It reads one JSON request per line on stdin and answers
one JSON object per line on stdout:

- a standby server first gets ``{"environment": {...}}``: it takes that environment (the
  thread-pool sizes of its payloads) and imports the payload's modules; no answer;
- ``{"argv": [...], "cwd": ..., "env": {...}, "stdout": path, "stderr": path}`` →
  ``{"started": pid}`` or ``{"error": reason}``;
- when a forked payload exits: ``{"exited": pid, "code": n, "cpu": seconds}`` (CPU of the
  payload and the descendants it reaped, as ``wait4`` gives it).

Each forked payload runs in a session of its own, like a subprocess payload.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from eventservice.pilot.executors.base import (
    THREAD_POOL_VARIABLES,
    PayloadProcess,
    payload_environment,
)
from eventservice.pilot.forkserver_process import serve_standby
from eventservice.proc import is_running

log = logging.getLogger(__name__)

#: Modules the server imports before it forks: what the payload and merge commands load.
#: Named too: what the CLI imports as it registers its commands, uproot (the payload
#: modules import it only where they read or write a file) and the parts of numpy it
#: loads on first use.
PRELOAD = (
    "eventservice.cli.main",
    "eventservice.cli.demo_commands",
    "eventservice.cli.dispatcher_commands",
    "eventservice.cli.payload_commands",
    "eventservice.cli.pilot_commands",
    "eventservice.payload.simulate",
    "eventservice.payload.merge",
    "eventservice.payload.verify",
    "uproot",
    "numpy.ma",
    "numpy.random",
)
#: What a forked payload runs: ``module:function``, called with ``sys.argv`` set.
ENTRY = "eventservice.cli.main:main"
#: Seconds to wait for the server to answer a request before starting a subprocess.
ANSWER_TIMEOUT = 60.0
#: Characters that make a command line more than words and quotes for ``/bin/sh``.
SHELL_SYNTAX = set("$`*?[~;&|<>(){}#!\\\n")
#: Environment variables an interpreter reads when it starts (or numpy when imported):
#: a payload forked from the server has the server's values of these.
_STARTUP_VARIABLES = ("LD_PRELOAD", "LD_LIBRARY_PATH", *THREAD_POOL_VARIABLES)


def cli_arguments(command: str, env: dict[str, str]) -> list[str] | None:
    """The arguments ``command`` gives this installation's ``eventservice`` CLI, or ``None``.

    Only plain command lines qualify: ``<this python> -m eventservice ...`` or
    ``eventservice ...`` resolving (on ``env``'s PATH) to the script next to this python.
    """
    if SHELL_SYNTAX & set(command):
        return None
    try:
        argv = shlex.split(command)
    except ValueError:
        return None
    if not argv or "=" in argv[0]:
        return None
    program, here = Path(argv[0]), Path(sys.executable).absolute()
    if program.name.startswith("python") and argv[1:3] == ["-m", "eventservice"]:
        same = program.absolute() == here or (
            program.parent == here.parent and program.name in (here.name, "python", "python3")
        )
        return argv[3:] if same else None
    if program.name == "eventservice":
        found = shutil.which(argv[0], path=env.get("PATH"))
        if found and Path(found).absolute().parent == here.parent:
            return argv[1:]
    return None


class ForkServerError(RuntimeError):
    """The fork server could not start a payload (the caller starts a subprocess)."""


class ForkServer:
    """One server process and the payloads forked from it (pilot side).

    Made by :meth:`spawn` (a fresh interpreter) or :meth:`standby` (forked from this one).
    """

    def __init__(
        self, process: subprocess.Popen[bytes] | _ForkedProcess, env: dict[str, str] | None
    ) -> None:
        self.process = process
        #: The environment the server's interpreter runs with; ``None`` until a standby
        #: server is given one by :meth:`prepare`.
        self.env = env
        self._lock = threading.Lock()
        self._answers: queue.Queue[dict[str, Any]] = queue.Queue()
        self._exits: dict[int, tuple[int, float]] = {}
        self._exited = threading.Condition()
        self.alive = True
        self._reader = threading.Thread(target=self._read, name="forkserver", daemon=True)
        self._reader.start()

    @classmethod
    def spawn(
        cls, env: dict[str, str], preload: tuple[str, ...] = PRELOAD, entry: str = ENTRY
    ) -> ForkServer:
        """A server in a fresh interpreter started with ``env``, importing ``preload`` at once."""
        module = "eventservice.pilot.forkserver_process"
        code = f"from {module} import serve; serve({list(preload)!r}, {entry!r})"
        # `-c`, not `-m`: a payload spawning workers must not re-import the server's module.
        process = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            # Not in the pilot's process group: a pilot draining on SIGTERM or SIGINT may
            # still start payloads. The server ends when its stdin closes, as the pilot ends.
            start_new_session=True,
        )
        return cls(process, env)

    @classmethod
    def standby(cls, preload: tuple[str, ...] = PRELOAD, entry: str = ENTRY) -> ForkServer:
        """A server forked from this process, idle until :meth:`prepare`.

        Call it only while this process runs no other thread: a thread holding a lock at
        the fork would leave that lock held for ever in the server.
        """
        return cls(_fork_standby(preload, entry), None)

    def prepare(self, env: dict[str, str]) -> None:
        """Give a standby server the environment of its payloads; it imports ``preload`` then.

        ``env`` must read at start-up what this interpreter read (``PYTHON*`` variables):
        the server is this interpreter.
        """
        with self._lock:
            self._write({"environment": env})
        self.env = env

    def _write(self, message: dict[str, Any]) -> None:
        if not self.alive or self.process.stdin is None:
            raise ForkServerError("the fork server has ended")
        try:
            self.process.stdin.write(json.dumps(message).encode() + b"\n")
            self.process.stdin.flush()
        except OSError as exc:
            raise ForkServerError(f"the fork server did not answer: {exc!r}") from exc

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                log.warning("fork server said something unreadable: %r", line[:200])
                continue
            if "exited" in message:
                with self._exited:
                    self._exits[int(message["exited"])] = (int(message["code"]), message["cpu"])
                    self._exited.notify_all()
            else:
                self._answers.put(message)
        with self._exited:
            self.alive = False
            self._exited.notify_all()
        self._answers.put({"error": "the fork server has ended"})

    def start(
        self, argv: list[str], cwd: Path, env: dict[str, str], stdout: Path, stderr: Path
    ) -> int:
        """Fork a payload running the CLI with ``argv``; its pid."""
        request = {
            "argv": argv,
            "cwd": str(cwd),
            "env": env,
            "stdout": str(stdout),
            "stderr": str(stderr),
        }
        with self._lock:
            self._write(request)
            try:
                answer = self._answers.get(timeout=ANSWER_TIMEOUT)
            except queue.Empty as exc:
                raise ForkServerError(f"the fork server did not answer: {exc!r}") from exc
        if "started" not in answer:
            raise ForkServerError(str(answer.get("error", answer)))
        return int(answer["started"])

    def exit_of(self, pid: int, timeout: float | None = 0.0) -> tuple[int, float] | None:
        """``(exit code, CPU s)`` of a forked payload once it has exited, else ``None``.

        Should the server be gone, a payload no longer running counts as exited with
        code -1 and no CPU known, as for a subprocess whose exit was reaped elsewhere.
        """
        with self._exited:
            self._exited.wait_for(lambda: pid in self._exits or not self.alive, timeout)
            if pid in self._exits:
                return self._exits.pop(pid)
            if self.alive or is_running(pid):
                return None
            return -1, 0.0

    def close(self, timeout: float = 10.0) -> None:
        """Tell the server to end (closing its stdin) and reap it."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class _Forked:
    """The ``pid``/``returncode`` pair :class:`PayloadProcess` keeps in ``process``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None


class ForkedPayload(PayloadProcess):
    """A payload forked by a :class:`ForkServer`; used exactly as a :class:`PayloadProcess`."""

    def __init__(
        self,
        server: ForkServer,
        command: str,
        argv: list[str],
        cwd: Path,
        env: dict[str, str],
    ) -> None:
        from eventservice.pilot.logs import PAYLOAD_STDERR, PAYLOAD_STDOUT

        self.command = command
        self.server = server
        self.cpu_seconds: float | None = None
        self.killed = False
        self._stdout = self._stderr = None
        log.info("starting payload (forked, imports done): %s", command)
        pid = server.start(argv, cwd, env, cwd / PAYLOAD_STDOUT, cwd / PAYLOAD_STDERR)
        self.process = _Forked(pid)  # type: ignore[assignment]

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code as soon as the payload exits within ``timeout`` s, else ``None``."""
        if self.process.returncode is None:
            self._record(self.server.exit_of(self.process.pid, timeout))
        return self.process.returncode

    def _reap(self, flags: int) -> None:
        self._record(self.server.exit_of(self.process.pid, None if flags == 0 else 0.0))

    def _record(self, ended: tuple[int, float] | None) -> None:
        if ended is not None:
            self.process.returncode, self.cpu_seconds = ended


class PayloadStarter:
    """Starts a pilot's payload processes: forked from a fork server wherever it can.

    One server per core count (thread pools are sized when numpy is imported), started
    with the first payload that can use it: the standby server if :meth:`fork_standby`
    made one, else a fresh one. Disabled, every payload is a subprocess.
    """

    def __init__(self, enabled: bool = True, preload: tuple[str, ...] = PRELOAD) -> None:
        self.enabled = enabled
        self.preload = preload
        self._servers: dict[int, ForkServer] = {}
        self._standby: ForkServer | None = None
        self._broken = False

    def fork_standby(self) -> None:
        """Fork the first server from this process now, if it runs no other thread yet.

        Call it before the pilot starts anything (threads, logging, connections): the
        server shares what the pilot imported so far, and holds nothing else of it.
        """
        if not self.enabled or self._standby is not None or threading.active_count() > 1:
            return
        try:
            self._standby = ForkServer.standby(self.preload)
        except OSError as exc:
            log.warning("cannot fork a standby fork server (%s); will start one afresh", exc)

    def start(
        self, command: str, cwd: Path, env: dict[str, str] | None = None, cores: int = 1
    ) -> PayloadProcess:
        """Start ``command`` in ``cwd`` with ``env`` added to the pilot's environment."""
        if self.enabled and not self._broken:
            full_env = payload_environment(env, cores)
            argv = cli_arguments(command, full_env)
            try:
                server = self._server(cores) if argv is not None else None
                if server is not None and _compatible(full_env, server.env or {}):
                    return ForkedPayload(server, command, argv or [], cwd, full_env)
            except (ForkServerError, OSError) as exc:
                log.warning("fork server unusable (%s); starting payloads afresh", exc)
                self._broken = True
        return PayloadProcess(command, cwd, env, cores)

    def _server(self, cores: int) -> ForkServer | None:
        server = self._servers.get(cores)
        if server is None or not server.alive:
            if server is not None:
                server.close()
            env = payload_environment(None, cores)
            server = self._take_standby(env) or ForkServer.spawn(env, self.preload)
            self._servers[cores] = server
        return server

    def _take_standby(self, env: dict[str, str]) -> ForkServer | None:
        standby, self._standby = self._standby, None
        if standby is not None and standby.alive:
            standby.prepare(env)
            return standby
        if standby is not None:
            standby.close()
        return None

    def close(self) -> None:
        """End the fork servers (the pilot ends)."""
        servers, self._servers = list(self._servers.values()), {}
        if self._standby is not None:
            servers.append(self._standby)
            self._standby = None
        for server in servers:
            server.close()


def _compatible(env: dict[str, str], server_env: dict[str, str]) -> bool:
    keys = {k for k in (*env, *server_env) if k.startswith("PYTHON")} | set(_STARTUP_VARIABLES)
    return all(env.get(k) == server_env.get(k) for k in keys)


#: A plain subprocess for every payload: for callers with no pilot-wide starter.
SUBPROCESSES = PayloadStarter(enabled=False)


def _fork_standby(preload: tuple[str, ...], entry: str) -> _ForkedProcess:
    """Fork this process into a standby server; its pid and the pipes to it.

    Returns once the server leads a session of its own, out of reach of signals to this
    process's group (a pilot draining on SIGTERM).
    """
    requests_read, requests_write = os.pipe()
    answers_read, answers_write = os.pipe()
    session_read, session_write = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # or the server would write what is buffered a second time
    try:
        pid = os.fork()
    except OSError:
        ends = (requests_read, requests_write, answers_read, answers_write)
        for fd in (*ends, session_read, session_write):
            os.close(fd)
        raise
    if pid == 0:
        os.close(session_read)
        serve_standby(
            (requests_read, answers_write),
            (requests_write, answers_read),
            session_write,
            preload,
            entry,
        )
    for fd in (requests_read, answers_write, session_write):
        os.close(fd)
    try:
        os.read(session_read, 1)  # end of file: the server has called setsid(), or died
    finally:
        os.close(session_read)
    return _ForkedProcess(pid, os.fdopen(requests_write, "wb"), os.fdopen(answers_read, "rb"))


class _ForkedProcess:
    """What a :class:`ForkServer` uses of :class:`subprocess.Popen`, for a forked server."""

    def __init__(self, pid: int, stdin: Any, stdout: Any) -> None:
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit code once the server has ended, else ``None``."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else: its code is lost
                self.returncode = -1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the server to end; :class:`subprocess.TimeoutExpired` after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"fork server {self.pid}", timeout or 0.0)
            time.sleep(0.01)
        return code

    def kill(self) -> None:
        """SIGKILL the server, unless it has ended."""
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
