"""One storage endpoint: a base URL and the way to put objects under it.

:class:`Endpoint` is the small interface every backend implements; its ``put``
streams a local file to ``<base>/<name>`` so that a half-written object is never
visible under its final name, computes adler32 on the way, and verifies what the
store then holds; ``put_stream`` does the same with bytes made on the fly.
:class:`FsspecEndpoint` does this for any fsspec filesystem with a rename (write
``.<name>.<random>.part`` beside the target, then ``mv``); ``local``, ``s3`` and
``xrootd`` specialise it.
"""

from __future__ import annotations

import contextlib
import posixpath
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from eventservice.errors import ChecksumMismatch
from eventservice.storage.checksum import Adler32
from eventservice.storage.errors import SourceUnreadable, StorageConfigError, translate
from eventservice.storage.naming import join_url

DEFAULT_CHUNK = 8 << 20


class Source(Protocol):
    """What an upload reads from: an open local file, or a tar made on the fly."""

    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class StoredObject:
    """An object that is really stored: its full URL, size, adler32 and the base URL used."""

    url: str
    size: int
    adler32: str
    endpoint: str


class Endpoint(ABC):
    """A storage base URL; objects live at ``<base>/<name>``."""

    writable = True

    def __init__(self, base: str, options: dict[str, Any]) -> None:
        self.base = base
        self.options = dict(options)
        self.chunk_size = int(self.options.pop("chunk_size", DEFAULT_CHUNK))

    def url(self, name: str) -> str:
        """The full URL of object ``name``."""
        return join_url(self.base, name)

    def put(self, local: Path, name: str) -> StoredObject:
        """Store ``local`` as ``name``: temporary name, commit, verify; raise StorageError."""
        self._check_writable()
        try:
            source = open(local, "rb")  # noqa: SIM115 - closed by _store
        except OSError as exc:
            raise SourceUnreadable(f"cannot read local file {local}: {exc.strerror}") from exc
        return self._store(source, name)

    def put_stream(self, source: Source, name: str) -> StoredObject:
        """Store the bytes read from ``source`` (e.g. a :class:`TarStream`) as ``name``.

        The same guarantees as :meth:`put`: the bytes are written under a temporary
        name while their size and adler32 are counted, then committed and verified.
        ``source`` is closed afterwards; an error it raises (a bundle member that
        cannot be read: :class:`BundleError`) passes through unchanged.
        """
        self._check_writable()
        return self._store(source, name)

    def _check_writable(self) -> None:
        if not self.writable:
            raise StorageConfigError(f"{self.base} is read-only: cannot upload to it")

    def _store(self, source: Source, name: str) -> StoredObject:
        url = self.url(name)
        try:
            size, adler32 = self._put(source, url)
        except Exception as exc:
            raise translate(exc, url, "upload to") from exc
        finally:
            source.close()
        return StoredObject(url=url, size=size, adler32=adler32, endpoint=self.base)

    @abstractmethod
    def _put(self, source: Source, url: str) -> tuple[int, str]:
        """Store ``source`` at ``url``; return (size, adler32) of what was verified stored."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base!r})"


class FsspecEndpoint(Endpoint):
    """Any fsspec filesystem with ``mv``: write a hidden temporary object, rename, verify."""

    def __init__(self, base: str, options: dict[str, Any]) -> None:
        super().__init__(base, options)
        from eventservice.storage.backends import filesystem

        self.fs, self.root = filesystem(base, self.options)

    def path(self, url: str) -> str:
        return self.fs._strip_protocol(url)

    def _put(self, source: Source, url: str) -> tuple[int, str]:
        final = self.path(url)
        temporary = temporary_name(final)
        self._prepare_parent(final)
        try:
            target = self._open_write(temporary)
            try:
                size, adler32 = stream(source, target, self.chunk_size)
            finally:
                target.close()
            self._verify(temporary, url, size, adler32)
            self._commit(temporary, final)
        except BaseException:
            self._remove_quietly(temporary)
            raise
        stored = self._size(final)
        if stored != size:
            raise ChecksumMismatch(f"{url}: stored size {stored} differs from {size} sent")
        return size, adler32

    def _prepare_parent(self, final: str) -> None:
        self.fs.makedirs(posixpath.dirname(final), exist_ok=True)

    def _open_write(self, path: str) -> IO[bytes]:
        return self.fs.open(path, "wb", block_size=self.chunk_size)

    def _verify(self, path: str, url: str, size: int, adler32: str) -> None:
        """Check the temporary object before it is committed: size, and checksum if offered."""
        stored = self._size(path)
        if stored != size:
            raise ChecksumMismatch(f"{url}: wrote {size} bytes but the store holds {stored}")

    def _commit(self, temporary: str, final: str) -> None:
        self.fs.mv(temporary, final)

    def _size(self, path: str) -> int:
        self.fs.invalidate_cache(path)
        return int(self.fs.info(path)["size"])

    def _remove_quietly(self, path: str) -> None:
        # Cleanup of a failed attempt must not hide why it failed.
        with contextlib.suppress(Exception):
            self.fs.rm_file(path)


class ReadOnlyEndpoint(FsspecEndpoint):
    """http(s):// and other stores that are only read from."""

    writable = False

    def _put(self, source: Source, url: str) -> tuple[int, str]:  # pragma: no cover
        raise StorageConfigError(f"{self.base} is read-only")


def temporary_name(final: str) -> str:
    """A hidden sibling of ``final``, unique per attempt, that no reader lists as an object."""
    head, tail = posixpath.split(final)
    return posixpath.join(head, f".{tail}.{uuid.uuid4().hex[:12]}.part")


def stream(source: Source, target: IO[bytes], chunk_size: int) -> tuple[int, str]:
    """Copy ``source`` to ``target`` in chunks; return (bytes copied, adler32)."""
    running = Adler32()
    while chunk := source.read(chunk_size):
        running.update(chunk)
        written = target.write(chunk)
        if written is not None and written < len(chunk):
            write_rest(target, memoryview(chunk)[written:])
    return running.size, running.hexdigest()


def write_rest(target: IO[bytes], view: memoryview) -> None:
    # Unbuffered files may write less than asked (a filling disk): go on until the
    # OS says why it cannot.
    while view:
        written = target.write(view)
        if not written:
            raise OSError("write made no progress")
        view = view[written:]
