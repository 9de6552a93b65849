"""file:// endpoints: a local (or network-mounted) directory acts as the object store.

Plain ``os`` calls: write a hidden ``.part`` file in the target directory, fsync it,
``os.replace`` it onto the final name (atomic within one file system) and fsync the
directory, so that after ``put`` returns the object survives a crash of this machine.
``fsync: false`` in the options trades that for speed (scratch stores, benchmarks).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO, Any

from eventservice.errors import ChecksumMismatch
from eventservice.storage.endpoint import Endpoint, stream, temporary_name


def local_path(url: str) -> Path:
    """The filesystem path of a ``file://`` URL or plain path."""
    if url.startswith("file://"):
        url = url[len("file://") :]
    return Path(url)


class LocalEndpoint(Endpoint):
    """A directory; ``base`` is ``file:///abs/dir`` or a plain path."""

    def __init__(self, base: str, options: dict[str, Any]) -> None:
        super().__init__(base, options)
        self.fsync = bool(self.options.get("fsync", True))
        self.root = local_path(base)

    def _put(self, source: IO[bytes], url: str) -> tuple[int, str]:
        final = local_path(url)
        final.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(temporary_name(str(final)))
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(descriptor, "wb", buffering=0) as target:
                size, adler32 = stream(source, target, self.chunk_size)
                if self.fsync:
                    os.fsync(target.fileno())
            written = temporary.stat().st_size
            if written != size:
                raise ChecksumMismatch(f"{url}: wrote {size} bytes but the disk holds {written}")
            os.replace(temporary, final)
        except BaseException:
            _remove_quietly(temporary)
            raise
        if self.fsync:
            _fsync_directory(final.parent)
        stored = final.stat().st_size
        if stored != size:
            raise ChecksumMismatch(f"{url}: stored size {stored} differs from {size} sent")
        return size, adler32


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove_quietly(path: Path) -> None:
    # Cleanup of a failed attempt must not hide why it failed.
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
