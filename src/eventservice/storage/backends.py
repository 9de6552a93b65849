"""From a URL to a filesystem and an endpoint; optional drivers imported lazily.

s3fs and fsspec-xrootd are extras (``pip install eventservice[s3]`` /
``eventservice[xrootd]``): they are imported only when a URL needs them, and a
missing one is a :class:`StorageConfigError` that says what to install. fsspec
itself is imported on first use too: ``file://`` storage, what most pilots and
merges use, never needs it, and importing it costs a starting pilot 0.12 s of CPU.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

from eventservice.storage.endpoint import Endpoint, FsspecEndpoint, ReadOnlyEndpoint
from eventservice.storage.errors import StorageConfigError
from eventservice.storage.naming import has_scheme, scheme_of

if TYPE_CHECKING:
    from fsspec.spec import AbstractFileSystem

_EXTRAS = {
    "s3": ("s3fs", "pip install eventservice[s3]"),
    "root": ("fsspec_xrootd", "pip install eventservice[xrootd]"),
    "http": ("aiohttp", "pip install aiohttp"),
    "https": ("aiohttp", "pip install aiohttp"),
}
#: XRootD client settings (XRD_* environment names) that make a dead server fail in
#: seconds instead of the client's default two minutes of reconnecting.
_XRD_DEFAULTS = {"ConnectionWindow": 5, "ConnectionRetry": 1, "RequestTimeout": 120}
_xrd_configured = False


def require(scheme: str) -> None:
    """Import the optional driver for ``scheme`` or raise with the install hint."""
    if scheme not in _EXTRAS:
        return
    module, hint = _EXTRAS[scheme]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise StorageConfigError(f"{scheme}:// URLs need the {module} package: {hint}") from exc
    if scheme == "root":
        _configure_xrootd()


def _configure_xrootd() -> None:
    global _xrd_configured
    if _xrd_configured:
        return
    from XRootD.client import EnvPutInt

    for name, value in _XRD_DEFAULTS.items():
        if "XRD_" + name.upper() not in os.environ:
            EnvPutInt(name, value)
    _xrd_configured = True


def filesystem(url: str, options: dict[str, Any]) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem for ``url`` with ``options``, and the path inside it."""
    import fsspec

    if not has_scheme(url):
        url = "file://" + os.path.abspath(url)
    scheme = scheme_of(url)
    require(scheme)
    fs_options = {k: v for k, v in options.items() if k not in _OWN_OPTIONS}
    try:
        fs, path = fsspec.core.url_to_fs(url, **fs_options)
    except ValueError as exc:
        raise StorageConfigError(f"unusable storage URL {url!r}: {exc}") from exc
    if scheme == "s3":
        # The router retries with backoff and fallback; s3fs's own retries would only
        # delay the move to the next endpoint.
        fs.retries = int(options.get("s3fs_retries", 2))
    return fs, path


_OWN_OPTIONS = frozenset(
    {"fsync", "part_size", "chunk_size", "concurrency", "s3fs_retries", "verify_checksum"}
)


def make_endpoint(base: str, options: dict[str, Any]) -> Endpoint:
    """The endpoint implementation for a storage base URL."""
    scheme = scheme_of(base)
    if scheme == "file":
        from eventservice.storage.local import LocalEndpoint

        return LocalEndpoint(base, options)
    if scheme == "s3":
        from eventservice.storage.s3 import S3Endpoint

        return S3Endpoint(base, options)
    if scheme == "root":
        from eventservice.storage.xrootd import XRootDEndpoint

        return XRootDEndpoint(base, options)
    if scheme in ("http", "https"):
        return ReadOnlyEndpoint(base, options)
    import fsspec

    try:
        fsspec.get_filesystem_class(scheme)
    except (ImportError, ValueError) as exc:
        raise StorageConfigError(f"unsupported storage URL scheme {scheme!r} in {base!r}") from exc
    return FsspecEndpoint(base, options)
