"""Deterministic object names (DESIGN §8, docs/protocol.md "Storage objects").

A retried upload of the same range attempt writes the same name, so it overwrites
its own object and never another's: the attempt number is part of the range ID.
"""

from __future__ import annotations

import posixpath
import re

from eventservice.errors import InvalidInput

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def object_name(task_id: int, jobset_id: int, event_range_id: str, filename: str) -> str:
    """Name of one range's output: ``<taskID>/<jobsetID>/<eventRangeID>.<filename>``."""
    _check_part("event_range_id", event_range_id)
    _check_part("filename", filename)
    return f"{int(task_id)}/{int(jobset_id)}/{event_range_id}.{filename}"


def bundle_name(task_id: int, jobset_id: int, panda_id: int, sequence: int) -> str:
    """Name of a tar bundle of range outputs: ``<taskID>/<jobsetID>/<PandaID>.<seq>.tar``."""
    return f"{int(task_id)}/{int(jobset_id)}/{int(panda_id)}.{int(sequence)}.tar"


def check_object_name(name: str) -> str:
    """Refuse names that could escape the endpoint's prefix or are not plain relative paths."""
    if not isinstance(name, str) or not name or name.startswith("/") or "\\" in name:
        raise InvalidInput(f"object name {name!r} must be a non-empty relative path")
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidInput(f"object name {name!r} has an empty, '.' or '..' component")
    return name


def join_url(base: str, name: str) -> str:
    """``<base>/<name>``: storage URLs are prefixes, objects live beneath them."""
    return base.rstrip("/") + "/" + check_object_name(name)


def has_scheme(url: str) -> bool:
    return bool(_SCHEME.match(url))


def scheme_of(url: str) -> str:
    """The URL's scheme in lower case; a plain path counts as ``file``."""
    return url.split("://", 1)[0].lower() if has_scheme(url) else "file"


def basename(url: str) -> str:
    return posixpath.basename(url.rstrip("/"))


def _check_part(what: str, value: str) -> None:
    if not value or "/" in value or value in (".", ".."):
        raise InvalidInput(f"{what} {value!r} must be a non-empty name without '/'")
