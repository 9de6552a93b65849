"""file:// endpoints: a local (or network-mounted) directory acts as the object store.

Plain ``os`` calls: write a hidden ``.part`` file in the target directory, fsync it,
``os.replace`` it onto the final name (atomic within one file system) and fsync the
directory, so that after ``put`` returns the object survives a crash of this machine.
``fsync: false`` in the options trades that for speed (scratch stores, benchmarks).

A bundle (:class:`TarStream`) is made straight into the ``.part`` file through one
reused, page-aligned buffer. When it is to be fsynced it is written with
``O_DIRECT``: its bytes have to reach the disk before ``put`` returns anyway, and
going around the page cache saves copying them there and then waiting for the
kernel to write them back (filesystems that refuse ``O_DIRECT`` get plain writes).
A plain file is copied chunk by chunk, as before (for the many small files a reused
buffer would not pay for itself).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import mmap
import os
from pathlib import Path
from typing import Any

from eventservice.errors import ChecksumMismatch
from eventservice.storage.bundle import TarStream
from eventservice.storage.checksum import Adler32
from eventservice.storage.endpoint import Endpoint, Source, stream, temporary_name, write_rest

#: The reused buffer that a bundle is made in, chunk by chunk: small enough to stay
#: in the CPU cache between being filled, checksummed and written.
BUFFER = 1 << 20
#: O_DIRECT writes must be whole blocks (512 or 4096 bytes) at aligned offsets.
_ALIGN = 4096


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

    def _put(self, source: Source, url: str) -> tuple[int, str]:
        final = local_path(url)
        final.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(temporary_name(str(final)))
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(descriptor, "wb", buffering=0) as target:
                if isinstance(source, TarStream):
                    buffer_size = min(self.chunk_size, BUFFER)
                    size, adler32 = _write_stream(source, target, buffer_size, self.fsync)
                else:
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


def _write_stream(
    source: TarStream, target: io.FileIO, buffer_size: int, direct: bool
) -> tuple[int, str]:
    """Fill one buffer from ``source`` and write it out, again and again; (size, adler32).

    With ``direct``, whole aligned chunks go with ``O_DIRECT``; the last, shorter
    chunk (or any chunk the filesystem refuses that way) through the page cache.
    """
    direct = direct and _set_direct(target, True)
    running = Adler32()
    # An anonymous mapping is page-aligned, as O_DIRECT wants its buffers.
    buffer = memoryview(mmap.mmap(-1, max(_ALIGN, buffer_size - buffer_size % _ALIGN)))
    while filled := source.readinto(buffer):
        piece = buffer[:filled]
        running.update(piece)
        if direct and filled % _ALIGN:
            direct = _set_direct(target, False)
        try:
            _write_all(target, piece)
        except OSError as exc:
            if not direct or exc.errno != errno.EINVAL:
                raise
            direct = _set_direct(target, False)
            _write_all(target, piece)
    return running.size, running.hexdigest()


def _set_direct(target: io.FileIO, on: bool) -> bool:
    """Turn ``O_DIRECT`` on or off for ``target``; whether it is now on."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    flags = fcntl.fcntl(target.fileno(), fcntl.F_GETFL)
    try:
        fcntl.fcntl(target.fileno(), fcntl.F_SETFL, flags | flag if on else flags & ~flag)
    except OSError:
        return False  # the filesystem does not do O_DIRECT: plain writes
    return on


def _write_all(target: io.FileIO, piece: memoryview) -> None:
    written = target.write(piece)
    if written is not None and written < len(piece):
        write_rest(target, piece[written:])


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
