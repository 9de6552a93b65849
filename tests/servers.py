"""Real servers on loopback for the tests and the benchmarks: XRootD and moto's S3 server.

Both start on a free port and stop (and clean up) when their context ends; a server
that cannot start raises :class:`ServerUnavailable`, so a test fixture can skip (or
fail in CI) while a benchmark stops with the reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from eventservice.demo.processes import free_port

__all__ = ["ServerUnavailable", "free_port", "moto_process", "xrootd_process"]


class ServerUnavailable(RuntimeError):
    """A server's binary is missing, or it did not listen in time."""


def wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float) -> bool:
    """Whether ``process`` listens on ``port`` within ``seconds`` (``False`` if it died)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate, then kill if it does not end."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def xrootd_process(prefix: str, seconds: float = 20) -> Iterator[tuple[int, Path]]:
    """Debian's ``xrootd`` exporting ``/data`` with adler32; yields (port, export dir).

    Objects under ``root://127.0.0.1:PORT//data/X`` live in ``<export>/data/X``. As
    root the server runs as ``nobody`` (it refuses root), so its directories are not
    under pytest's private tmp_path.
    """
    binary = shutil.which("xrootd")
    if binary is None:
        raise ServerUnavailable("xrootd is not installed (Debian package xrootd-server)")
    base = Path(tempfile.mkdtemp(prefix=prefix))
    export, admin = base / "export", base / "admin"
    (export / "data").mkdir(parents=True)
    admin.mkdir()
    config = base / "xrootd.cfg"
    config.write_text(
        f"all.export /data\noss.localroot {export}\nxrootd.chksum adler32\n"
        f"all.adminpath {admin}\nall.pidpath {admin}\n"
    )
    command = [binary, "-c", str(config), "-l", str(base / "xrootd.log"), "-n", "estest"]
    if os.geteuid() == 0:
        for path in (base, export, export / "data", admin):
            shutil.chown(path, "nobody")
        command += ["-R", "nobody"]
    port = free_port()
    process = subprocess.Popen(
        [*command, "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=base
    )
    try:
        if not wait_for_port(port, process, seconds):
            raise ServerUnavailable(f"xrootd did not listen on port {port} (log: {base})")
        yield port, export
    finally:
        stop(process)
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def moto_process(env: dict[str, str] | None = None, seconds: float = 30) -> Iterator[str]:
    """moto's standalone S3 server; yields its endpoint URL."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        raise ServerUnavailable("moto is not installed (pip install 'moto[server]')") from None
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MOTO_PORT": str(port), **(env or {})},
    )
    try:
        if not wait_for_port(port, process, seconds):
            raise ServerUnavailable(f"moto did not listen on port {port}")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)
