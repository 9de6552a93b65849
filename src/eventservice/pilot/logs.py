"""Pilot logging: every line carries time, job and range; job logs are tarred and shipped.

Call sites pass the range with ``extra={"range": range_id}``; the job is set once per
job with :func:`set_job`. The job's own log file (``pilot.log``) and the payload's
stdout/stderr are packed into the job's ``logFile`` and uploaded to the queue's ``pl``
storage when the job ends.
"""

from __future__ import annotations

import logging
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eventservice.errors import StorageError

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)-7s job=%(job)s range=%(range)s [%(threadName)s] %(message)s"
PILOT_LOG = "pilot.log"
PAYLOAD_STDOUT = "payload.stdout"
PAYLOAD_STDERR = "payload.stderr"

_current_job = "-"


def set_job(panda_id: int | str | None) -> None:
    """Name the job that following log lines belong to (``None``: no job)."""
    global _current_job
    _current_job = "-" if panda_id is None else str(panda_id)


class ContextFilter(logging.Filter):
    """Fills ``job`` and ``range`` on every record so the format never fails."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job"):
            record.job = _current_job
        if not hasattr(record, "range"):
            record.range = "-"
        return True


def _handler(handler: logging.Handler, level: int) -> logging.Handler:
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(ContextFilter())
    handler.setLevel(level)
    return handler


def setup_logging(verbose: bool = False) -> None:
    """Log the ``eventservice`` package to stderr (once per process)."""
    root = logging.getLogger("eventservice")
    root.setLevel(logging.DEBUG)
    if not any(getattr(h, "_pilot_console", False) for h in root.handlers):
        level = logging.DEBUG if verbose else logging.INFO
        handler = _handler(logging.StreamHandler(sys.stderr), level)
        handler._pilot_console = True  # type: ignore[attr-defined]
        root.addHandler(handler)


@contextmanager
def job_log(job_dir: Path) -> Iterator[Path]:
    """Copy the package's log lines to ``<job_dir>/pilot.log`` while the block runs."""
    path = job_dir / PILOT_LOG
    root = logging.getLogger("eventservice")
    if root.level == logging.NOTSET or root.level > logging.DEBUG:
        root.setLevel(logging.DEBUG)
    handler = _handler(logging.FileHandler(path), logging.DEBUG)
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()


def pack_logs(job_dir: Path, tar_path: Path) -> list[str]:
    """Tar (gzip) the pilot log and the payload's stdout/stderr; return member names."""
    members = []
    with tarfile.open(tar_path, "w:gz") as tar:
        for name in (PILOT_LOG, PAYLOAD_STDOUT, PAYLOAD_STDERR):
            path = job_dir / name
            if path.exists():
                tar.add(path, arcname=name)
                members.append(name)
    return members


def ship_logs(job_dir: Path, task_id: int, log_file: str, router: Any) -> Any | None:
    """Pack the job's logs and upload them to the ``pl`` storage; never raises.

    Returns the stored object, or ``None`` when there is no ``pl`` storage or the
    upload failed (logged: losing a log must not fail a job that did its work).
    """
    tar_path = job_dir.parent / f"{job_dir.name}.{log_file}"
    try:
        pack_logs(job_dir, tar_path)
        stored = router.upload(tar_path, f"{task_id}/{log_file}", activity="pl", fallback=())
        log.info("logs shipped to %s", stored.url)
        return stored
    except (StorageError, OSError, KeyError, ValueError) as exc:
        log.warning("could not ship logs %s: %s", log_file, exc)
        return None
    finally:
        tar_path.unlink(missing_ok=True)
