"""Reading objects back: direct reads by the payload, and verified downloads.

:func:`open_input` hands the payload a random-access file over fsspec, so a payload
reading a few events of an ``s3://`` or ``root://`` input fetches only the byte
ranges it touches (in ``block_size`` pieces), never the whole file.
:func:`fetch` copies an object to a local file under a temporary name, verifying
size and adler32 before the final name appears.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from eventservice.errors import ChecksumMismatch, StorageError
from eventservice.storage.backends import filesystem
from eventservice.storage.checksum import normalize_adler32
from eventservice.storage.config import Options, load_config_file, options_for
from eventservice.storage.endpoint import DEFAULT_CHUNK, stream, temporary_name
from eventservice.storage.errors import translate
from eventservice.storage.local import local_path
from eventservice.storage.naming import basename, has_scheme, scheme_of

#: Random-access reads fetch this much around what was asked for.
READ_BLOCK = 1 << 20


def open_input(url_or_path: str | os.PathLike[str], mode: str = "rb", **kwargs: Any) -> IO[Any]:
    """Open an input for reading: a local path, ``file://``, ``s3://``, ``root://``, ``http(s)://``.

    Remote files are read lazily in ``block_size`` pieces (default 1 MiB); extra
    keyword arguments go to the filesystem's ``open``. Endpoint options and
    credentials come from the environment and the storage config file.
    """
    url = os.fspath(url_or_path)
    if scheme_of(url) == "file":
        try:
            return open(local_path(url), mode)
        except OSError as exc:
            raise translate(exc, url, "open") from exc
    try:
        fs, path = filesystem(url, options_for(url, load_config_file()))
        kwargs.setdefault("block_size", READ_BLOCK)
        return fs.open(path, mode, **kwargs)
    except Exception as exc:
        raise translate(exc, url, "open") from exc


def fetch(
    url: str,
    dest: Path,
    *,
    size: int | None = None,
    adler32: str | None = None,
    layers: Sequence[Options] | None = None,
) -> Path:
    """Copy ``url`` to ``dest`` (a file path, or an existing directory to put it in).

    Raises :class:`~eventservice.errors.ChecksumMismatch` when the size or adler32
    differs from what was expected, ``ObjectMissing`` when the object is gone.
    ``layers`` are option mappings as in :func:`~eventservice.storage.config.options_for`
    (default: the config file).
    """
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / basename(url)
    expected = normalize_adler32(adler32) if adler32 is not None else None
    temporary = Path(temporary_name(str(dest)))
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        target = open(temporary, "wb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise StorageError(f"download {url}: cannot write {dest}: {exc.strerror}") from exc
    try:
        with target, _open_source(url, layers) as source:
            got_size, got_adler32 = stream(source, target, DEFAULT_CHUNK)
        if size is not None and got_size != size:
            raise ChecksumMismatch(f"{url}: read {got_size} bytes, expected {size}")
        if expected is not None and got_adler32 != expected:
            raise ChecksumMismatch(f"{url}: adler32 is {got_adler32}, expected {expected}")
        os.replace(temporary, dest)
    except Exception as exc:
        _remove_quietly(temporary)
        raise translate(exc, url, "download") from exc
    return dest


def _open_source(url: str, layers: Sequence[Options] | None) -> IO[bytes]:
    if not has_scheme(url) or scheme_of(url) == "file":
        return open(local_path(url), "rb")
    if layers is None:
        layers = [load_config_file()]
    fs, path = filesystem(url, options_for(url, *layers))
    fs.invalidate_cache(path)
    return fs.open(path, "rb", block_size=DEFAULT_CHUNK, cache_type="none")


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
