"""Storage errors, and the one place where driver exceptions become them.

Every backend (local disk, s3fs, fsspec-xrootd) raises its own exception types;
:func:`translate` turns them into :class:`EndpointError` subclasses that say what
went wrong in words and whether trying the same endpoint again can help.
"""

from __future__ import annotations

import errno
import re

from eventservice.errors import ChecksumMismatch, StorageError

__all__ = [
    "AllEndpointsFailed",
    "ChecksumMismatch",
    "EndpointError",
    "ObjectMissing",
    "SourceUnreadable",
    "StorageConfigError",
    "StorageError",
    "translate",
]


class StorageConfigError(StorageError):
    """A storage URL, activity or option is unusable (unknown scheme, read-only, missing extra)."""


class SourceUnreadable(StorageError):
    """The local file to upload cannot be read; no endpoint is to blame, so none is tried."""


class EndpointError(StorageError):
    """One endpoint failed one operation; ``retryable`` says whether a retry there may help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class ObjectMissing(EndpointError):
    """The object (or its bucket or directory) does not exist on the store."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class AllEndpointsFailed(StorageError):
    """Every endpoint of the activity and its fallbacks failed; ``failures`` lists why."""

    def __init__(self, what: str, failures: list[tuple[str, str]]) -> None:
        lines = "; ".join(f"{base}: {reason}" for base, reason in failures)
        super().__init__(f"{what} failed on every endpoint: {lines}")
        self.failures = failures


# XRootD server error codes (XProtocol.hh) after which retrying the same server is useless.
_XRD_PERMANENT = {
    3009: "no space left on the server",
    3010: "not authorized",
    3011: "no such file or directory",
    3013: "operation not supported",
    3015: "not a file",
    3016: "is a directory",
    3021: "quota exceeded",
    3025: "file system is read-only",
    3030: "authentication failed",
}
_XRD_CODE = re.compile(r"\[(\d{4})\]")
_OS_PERMANENT = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a path component is not a directory",
    errno.EISDIR: "is a directory",
}


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", " ") or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def translate(exc: BaseException, url: str, action: str) -> StorageError:
    """Turn a driver exception raised while doing ``action`` on ``url`` into a storage error.

    Storage errors pass through unchanged. ``action`` is a verb phrase such as
    ``"upload to"`` or ``"read"``; it starts the message.
    """
    if isinstance(exc, StorageError):
        return exc
    reason = _reason(exc)
    where = f"{action} {url}"
    if isinstance(exc, FileNotFoundError):
        if action.startswith("upload"):
            return EndpointError(
                f"{where}: destination does not exist, missing bucket or directory? ({reason})",
                retryable=False,
            )
        return ObjectMissing(f"{where}: not found ({reason})")
    if isinstance(exc, PermissionError):
        return EndpointError(
            f"{where}: permission denied, wrong credentials or no write access? ({reason})",
            retryable=False,
        )
    if isinstance(exc, OSError):
        code = _XRD_CODE.search(reason)
        if code and int(code.group(1)) == 3011:
            return ObjectMissing(f"{where}: not found ({reason})")
        if code and int(code.group(1)) in _XRD_PERMANENT:
            what = _XRD_PERMANENT[int(code.group(1))]
            return EndpointError(f"{where}: {what} ({reason})", retryable=False)
        if exc.errno in _OS_PERMANENT:
            return EndpointError(f"{where}: {_OS_PERMANENT[exc.errno]} ({reason})", retryable=False)
        if "Connection error" in reason or "Operation expired" in reason:
            return EndpointError(f"{where}: endpoint unreachable ({reason})", retryable=True)
    name = type(exc).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return EndpointError(
            f"{where}: no credentials found; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
            f"or the storage config file ({reason})",
            retryable=False,
        )
    if "Connect" in name or "Timeout" in name:
        return EndpointError(f"{where}: endpoint unreachable ({name}: {reason})", retryable=True)
    return EndpointError(f"{where}: {name}: {reason}", retryable=True)
