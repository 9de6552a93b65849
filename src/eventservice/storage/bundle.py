"""Tar bundles of many small range outputs, as the pilot makes them (DESIGN §6).

Members are named by basename in a plain, uncompressed tar, so the merge job can
read them back by name. :class:`TarStream` produces the tar's bytes on the fly,
reading each member only when its turn comes, so that a bundle goes straight into
a store (``StorageRouter.upload_bundle``) instead of being written to a local file
and read back; :func:`make_bundle` writes the same bytes to a local tar.
Extraction refuses anything that could write outside the destination: absolute
names, ``..`` components, links and special files.
"""

from __future__ import annotations

import copy
import io
import os
import stat
import tarfile
import uuid
from collections.abc import Sequence
from pathlib import Path

from eventservice.errors import StorageError

_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
_READ_CHUNK = 8 << 20


class BundleError(StorageError):
    """A tar bundle cannot be made or holds a member that must not be extracted."""


class TarStream:
    """A readable binary stream: the plain tar of ``paths``, members named by basename.

    Members are checked (regular files, no duplicate basenames) and their headers
    made when the stream is created, so :attr:`size`, the tar's length, is known
    before anything is read. Contents are read only as ``read`` reaches them. A
    member that can no longer be read, or that has shrunk, raises
    :class:`BundleError` from ``read``: the stream never yields a tar that
    disagrees with its own headers. Like a regular file, ``read(n)`` returns fewer
    than ``n`` bytes only at the end.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], label: str = "bundle") -> None:
        self.label = label
        self._members = [_member(label, p if isinstance(p, Path) else Path(p)) for p in paths]
        names = [name for _, name, _, _ in self._members]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise BundleError(f"{label}: duplicate member names {duplicates}")
        self._start()

    def again(self) -> TarStream:
        """A new stream of the same tar from its first byte, for another try.

        The members are not looked at again: their headers, and so the tar's size,
        stay those of the first ``stat``.
        """
        fresh = copy.copy(self)
        fresh._start()
        return fresh

    def _start(self) -> None:
        body = sum(len(header) + _round_up(size, _BLOCK) for _, _, size, header in self._members)
        self.size = _round_up(body + 2 * _BLOCK, _RECORD)
        self._trailer = self.size - body
        self._offset = 0  # bytes handed out so far
        self._next = 0  # index of the next member to start
        self._pending = memoryview(b"")  # header, padding or trailer bytes not yet handed out
        self._handle: io.FileIO | None = None  # the member whose contents are being read
        self._path, self._size = Path(), 0  # that member
        self._left = 0  # its contents still to read
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        """The next ``size`` bytes (all the rest if negative); fewer only at the end."""
        left = self.size - self._offset
        buffer = bytearray(left if size < 0 else min(size, left))
        filled = self.readinto(buffer)
        return bytes(memoryview(buffer)[:filled])

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """Fill ``buffer`` with the next bytes; return how many (less only at the end)."""
        if self.closed:
            raise ValueError(f"{self.label}: read from a closed stream")
        view = memoryview(buffer).cast("B")
        filled, room = 0, len(view)
        while filled < room:
            if self._pending:
                n = min(len(self._pending), room - filled)
                view[filled : filled + n] = self._pending[:n]
                self._pending = self._pending[n:]
            elif self._handle is not None:
                n = self._read_member(view[filled : filled + min(self._left, room - filled)])
            elif self._advance():
                continue
            else:
                break
            filled += n
        self._offset += filled
        return filled

    def readable(self) -> bool:
        """Always true: this is a stream to read from."""
        return True

    def close(self) -> None:
        """Stop; the member file that an unfinished read left open is closed."""
        self.closed = True
        self._close_member()

    def __enter__(self) -> TarStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _advance(self) -> bool:
        """Start the next member (its header, then its contents), or the trailer."""
        if self._next < len(self._members):
            path, _, size, header = self._members[self._next]
            self._next += 1
            self._pending = memoryview(header)
            if size:
                try:
                    self._handle = io.FileIO(path, "rb")
                except OSError as exc:
                    raise BundleError(f"{self.label}: cannot read {path}: {exc.strerror}") from exc
                self._path, self._size, self._left = path, size, size
            return True
        if self._trailer:
            self._pending = memoryview(bytes(self._trailer))
            self._trailer = 0
            return True
        return False

    def _read_member(self, view: memoryview) -> int:
        assert self._handle is not None
        try:
            n = self._handle.readinto(view)
        except OSError as exc:
            raise BundleError(f"{self.label}: cannot read {self._path}: {exc.strerror}") from exc
        if not n:
            raise BundleError(
                f"{self.label}: {self._path} shrank from {self._size} bytes while being bundled"
            )
        self._left -= n
        if not self._left:
            self._close_member()
            if self._size % _BLOCK:
                self._pending = memoryview(bytes(_BLOCK - self._size % _BLOCK))
        return n

    def _close_member(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _member(label: str, path: Path) -> tuple[Path, str, int, bytes]:
    """(path, member name, size, tar header) of one member, from one ``stat``."""
    try:
        status = os.stat(path)
    except OSError as exc:
        raise BundleError(f"{label}: {path} is not a regular file ({exc.strerror})") from exc
    if not stat.S_ISREG(status.st_mode):
        raise BundleError(f"{label}: {path} is not a regular file")
    name, size = path.name, status.st_size
    # Whole seconds: a fractional mtime would cost every member a pax header.
    mode, mtime = stat.S_IMODE(status.st_mode), int(status.st_mtime)
    header = _ustar_header(name, size, mode, mtime)
    if header is None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, mode, mtime
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        header = info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")
    return path, name, size, header


_OCTAL_ZERO = b"0000000\0"
_USTAR_MAGIC = tarfile.POSIX_MAGIC


def _ustar_header(name: str, size: int, mode: int, mtime: int) -> bytes | None:
    """The header ``tarfile`` writes for a plain member owned by 0:0, or None if unusual.

    The bundle's members are hundreds of small files, and ``TarInfo.tobuf`` is
    a noticeable part of bundling them; this does the common case (an ASCII name of
    at most 100 bytes, sizes and times that fit) in a few slice assignments. Names
    or numbers that need a pax header go through ``tarfile``.
    """
    if not name.isascii() or len(name) > 100 or size >= 8**11 or not 0 <= mtime < 8**11:
        return None
    header = bytearray(tarfile.BLOCKSIZE)
    header[0 : len(name)] = name.encode("ascii")
    header[100:108] = b"%07o\0" % mode
    header[108:116] = header[116:124] = _OCTAL_ZERO  # uid, gid
    header[124:136] = b"%011o\0" % size
    header[136:148] = b"%011o\0" % mtime
    header[148:156] = b" " * 8  # the checksum counts its own field as spaces
    header[156:157] = tarfile.REGTYPE
    header[257:265] = _USTAR_MAGIC
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def _round_up(size: int, unit: int) -> int:
    return -(-size // unit) * unit


def make_bundle(paths: Sequence[str | os.PathLike[str]], tar_path: Path) -> Path:
    """Write ``paths`` into the plain tar ``tar_path`` (members named by basename).

    The tar is written under a temporary name and renamed, so a crash never leaves
    a truncated bundle under ``tar_path``. To send a bundle to a store, prefer
    ``StorageRouter.upload_bundle``, which streams the same bytes without a local tar.
    """
    tar_path = Path(tar_path)
    source = TarStream(paths, label=f"bundle {tar_path}")
    temporary = tar_path.with_name(f".{tar_path.name}.{uuid.uuid4().hex}.part")
    try:
        with source, open(temporary, "wb") as target:
            while chunk := source.read(_READ_CHUNK):
                target.write(chunk)
        os.replace(temporary, tar_path)
    except OSError as exc:
        raise BundleError(f"bundle {tar_path}: {exc}") from exc
    finally:
        temporary.unlink(missing_ok=True)
    return tar_path


def extract_bundle(tar_path: Path, dest_dir: Path) -> list[Path]:
    """Extract every member of ``tar_path`` into ``dest_dir``; return the paths, in tar order."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(tar_path, "r:") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(tar_path, member)
            extracted = []
            for member in members:
                source = tar.extractfile(member)
                assert source is not None  # regular files only, checked above
                target = dest_dir / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                with source, open(target, "wb") as out:
                    while chunk := source.read(1 << 20):
                        out.write(chunk)
                extracted.append(target)
    except (OSError, tarfile.TarError) as exc:
        raise BundleError(f"bundle {tar_path}: cannot extract: {exc}") from exc
    return extracted


def _check_member(tar_path: Path, member: tarfile.TarInfo) -> None:
    name = member.name
    if name.startswith("/") or "\\" in name or Path(name).is_absolute():
        raise BundleError(f"bundle {tar_path}: member {name!r} has an absolute path")
    if any(part == ".." for part in name.split("/")):
        raise BundleError(f"bundle {tar_path}: member {name!r} escapes with '..'")
    if not member.isfile():
        raise BundleError(f"bundle {tar_path}: member {name!r} is not a regular file")
