"""Storage: fsspec transfers to file://, s3:// and root:// with activity fallback (DESIGN §8).

The pilot stages outputs out through a :class:`StorageRouter` built from its queue's
``storages``; the payload reads inputs with :func:`open_input`. See docs/storage.md.
"""

from __future__ import annotations

from eventservice.errors import ChecksumMismatch, StorageError
from eventservice.storage.bundle import BundleError, TarStream, extract_bundle, make_bundle
from eventservice.storage.checksum import adler32_bytes, adler32_file, normalize_adler32
from eventservice.storage.endpoint import StoredObject
from eventservice.storage.errors import (
    AllEndpointsFailed,
    EndpointError,
    ObjectMissing,
    SourceUnreadable,
    StorageConfigError,
)
from eventservice.storage.naming import bundle_name, join_url, object_name
from eventservice.storage.reading import fetch, open_input
from eventservice.storage.router import StorageRouter

__all__ = [
    "AllEndpointsFailed",
    "BundleError",
    "ChecksumMismatch",
    "EndpointError",
    "ObjectMissing",
    "SourceUnreadable",
    "StorageConfigError",
    "StorageError",
    "StorageRouter",
    "StoredObject",
    "TarStream",
    "adler32_bytes",
    "adler32_file",
    "bundle_name",
    "extract_bundle",
    "fetch",
    "join_url",
    "make_bundle",
    "normalize_adler32",
    "object_name",
    "open_input",
]
