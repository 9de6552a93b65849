"""Where endpoint options and credentials come from: the environment and a config file.

Never from a task: a task names URLs only. Options for one URL are merged, later
winning, from

1. built-in defaults per scheme (short connect timeouts, so a dead endpoint fails fast);
2. the environment: ``FSSPEC_S3_ENDPOINT_URL``, else ``AWS_ENDPOINT_URL_S3``, else
   ``AWS_ENDPOINT_URL`` gives the S3 endpoint (for loopback or on-premise servers);
   keys come from the standard AWS variables and files, read by botocore itself;
3. the JSON file named by ``EVENTSERVICE_STORAGE_CONFIG`` (default
   ``~/.config/eventservice/storage.json`` when it exists): an object mapping a URL
   prefix to fsspec storage options; every matching prefix applies, longest last;
4. options handed to :class:`~eventservice.storage.StorageRouter` the same way.

Example file::

    {"s3://": {"endpoint_url": "http://127.0.0.1:9000"},
     "s3://es-bucket": {"key": "AKIA...", "secret": "..."},
     "root://": {"timeout": 60}}

Options that are not fsspec's, read by this package: ``fsync`` (file://, default
true), ``part_size`` (s3://, bytes per multipart part, default 8 MiB),
``chunk_size`` (bytes per write on every backend).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eventservice.storage.errors import StorageConfigError
from eventservice.storage.naming import scheme_of

ENV_CONFIG = "EVENTSERVICE_STORAGE_CONFIG"
DEFAULT_CONFIG = Path("~/.config/eventservice/storage.json")
_S3_ENDPOINT_ENV = ("FSSPEC_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")

#: Built-in defaults per scheme. botocore's own retries are kept low: the router retries.
DEFAULTS: dict[str, dict[str, Any]] = {
    "s3": {
        "config_kwargs": {
            "connect_timeout": 5,
            "read_timeout": 60,
            "retries": {"max_attempts": 2, "mode": "standard"},
        },
    },
    "root": {"timeout": 60},
    "http": {},
    "https": {},
    "file": {},
}

Options = Mapping[str, Mapping[str, Any]]


def load_config_file(path: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """Read the JSON options file (``path``, ``$EVENTSERVICE_STORAGE_CONFIG`` or the default)."""
    explicit = path is not None or ENV_CONFIG in os.environ
    chosen = Path(path if path is not None else os.environ.get(ENV_CONFIG, DEFAULT_CONFIG))
    chosen = chosen.expanduser()
    if not chosen.exists():
        if explicit:
            raise StorageConfigError(f"storage config file {chosen} does not exist")
        return {}
    try:
        data = json.loads(chosen.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StorageConfigError(f"storage config file {chosen}: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise StorageConfigError(
            f"storage config file {chosen} must map URL prefixes to objects of options"
        )
    return data


def options_for(url: str, *layers: Options) -> dict[str, Any]:
    """The merged storage options for ``url``: defaults, environment, then ``layers``."""
    scheme = scheme_of(url)
    merged: dict[str, Any] = _deep_copy(DEFAULTS.get(scheme, {}))
    if scheme == "s3":
        for name in _S3_ENDPOINT_ENV:
            if os.environ.get(name):
                merged["endpoint_url"] = os.environ[name]
                break
    for layer in layers:
        for prefix in sorted((p for p in layer if url.startswith(p)), key=len):
            _deep_merge(merged, layer[prefix])
    return merged


def _deep_copy(value: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in value.items()}


def _deep_merge(target: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        else:
            target[key] = _deep_copy(dict(value)) if isinstance(value, Mapping) else value
