"""Several dispatcher processes on one port, each with a listening socket of its own.

uvicorn's ``--workers`` shares one listening socket between its processes, and the
event loop of whichever process wakes first accepts every connection waiting at that
moment. Pilots keep their connection for many calls, so a burst of pilots arriving
together could all land on one process: in the benchmark, one run out of five put all
64 pilots on one of two processes (5,320 ranges/s against 5,800-6,400 for the others),
another put 61 of 64 there. Here each process listens on a socket of its own with
``SO_REUSEPORT``, and the kernel spreads new connections over them by their addresses.

The supervising process (``eventservice server --workers N``) starts the processes,
restarts one that dies, and stops them all on SIGTERM or SIGINT. A process ends by
itself when the supervisor dies: its stdin, a pipe from the supervisor, closes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from types import FrameType

from eventservice.errors import EventServiceError

log = logging.getLogger(__name__)

#: Seconds the processes get to finish their requests once told to stop.
STOP_SECONDS = 20.0
#: A process that dies sooner than this after its start is not started again: it would
#: only die again (a bad database URL, say); the supervisor stops instead.
MIN_LIFETIME_SECONDS = 5.0


class WorkersError(EventServiceError):
    """The dispatcher processes could not be started or kept running."""


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` that other processes may share (SO_REUSEPORT)."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def ensure_port_free(host: str, port: int) -> None:
    """Refuse a port that something listens on already.

    Without this check a second dispatcher started on the same port would join the
    first one's SO_REUSEPORT group, and the two would share its pilots.
    """
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise WorkersError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def serve_one(host: str, port: int, log_level: str) -> None:
    """Run one dispatcher process on its own socket until told to stop (in the child).

    The database and the lease come from the environment (``app_from_environment``).
    """
    import uvicorn

    from eventservice.server.app import app_from_environment

    config = uvicorn.Config(app_from_environment(), log_level=log_level, lifespan="on")
    server = uvicorn.Server(config)

    def supervisor_gone() -> None:
        # Blocks until the pipe from the supervisor closes: it stopped or was killed.
        with contextlib.suppress(OSError):
            while sys.stdin.buffer.read(4096):
                pass
        server.should_exit = True
        time.sleep(STOP_SECONDS)
        os._exit(0)  # the graceful stop took too long

    threading.Thread(target=supervisor_gone, name="supervisor-watch", daemon=True).start()
    server.run(sockets=[listening_socket(host, port)])


class Workers:
    """The supervisor: ``count`` dispatcher processes sharing ``host:port``."""

    def __init__(self, count: int, host: str, port: int, log_level: str, env: dict[str, str]):
        self.count = count
        self.host = host
        self.port = port
        self.log_level = log_level
        self.env = env
        self.processes: list[tuple[subprocess.Popen[bytes], float]] = []
        self.stopping = False

    def _start_one(self) -> tuple[subprocess.Popen[bytes], float]:
        command = [
            sys.executable,
            "-c",
            "from eventservice.server.workers import serve_one; "
            f"serve_one({self.host!r}, {self.port!r}, {self.log_level!r})",
        ]
        process = subprocess.Popen(command, stdin=subprocess.PIPE, env=self.env)
        return process, time.monotonic()

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping the dispatcher processes", signum)
        self.stopping = True

    def run(self) -> int:
        """Start the processes and keep them running until a signal; the exit status."""
        if self.port == 0:
            # Each process would listen on a port of its own choosing.
            raise WorkersError("several dispatcher processes need a fixed --port, not 0")
        ensure_port_free(self.host, self.port)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)
        self.processes = [self._start_one() for _ in range(self.count)]
        status = 0
        try:
            while not self.stopping:
                time.sleep(0.2)
                for index, (process, started) in enumerate(self.processes):
                    code = process.poll()
                    if code is None or self.stopping:
                        continue
                    if time.monotonic() - started < MIN_LIFETIME_SECONDS:
                        log.error("a dispatcher process ended at start (exit %s); stopping", code)
                        self.stopping, status = True, 1
                        break
                    log.warning("a dispatcher process ended (exit %s); starting another", code)
                    self.processes[index] = self._start_one()
        finally:
            self._stop_all()
        return status

    def _stop_all(self) -> None:
        for process, _ in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for process, _ in self.processes:
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdin is not None:
                process.stdin.close()
