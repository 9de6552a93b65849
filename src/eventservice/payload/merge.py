"""Merge per-range outputs (plain ROOT files or tars of them) into one ordered file.

Events are identified by the ``eventNumber`` stored in each file and written in
ascending order. Anything doubtful stops the merge with a :class:`MergeError`
naming the file: a checksum mismatch, a truncated or corrupt file, a schema that
differs, an event present twice, an expected event that is missing. The output is
written under a temporary name and renamed, so a failed merge leaves no output.
"""

from __future__ import annotations

import io
import os
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from eventservice.errors import MergeError
from eventservice.payload.columns import Columns, Schema, write_tree_file
from eventservice.payload.outputs import GUID_KEY
from eventservice.payload.rootfile import RootFormatError, check_complete, read_single_basket_tree

EVENT_NUMBER = "eventNumber"


@dataclass(frozen=True)
class MergeResult:
    """What a successful merge wrote."""

    path: str
    n_events: int
    n_files: int
    first_event: int | None
    last_event: int | None


def adler32_hex(data: bytes) -> str:
    """Adler-32 as 8 lowercase hex digits, the project's checksum format."""
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


def _expected_checksum(path: str, checksums: dict[str, str]) -> str | None:
    for key in (path, os.path.abspath(path), os.path.basename(path)):
        if key in checksums:
            return checksums[key].lower().removeprefix("ad:")
    return None


def _range_id(filename: str) -> str:
    # Outputs are named `<eventRangeID>.<name>` and range IDs never contain a dot.
    return os.path.basename(filename).split(".", 1)[0]


def _sources(
    path: str, data: bytes, range_ids: set[str] | None
) -> Iterator[tuple[str, str, bytes]]:
    """``(label, file name, bytes)`` of every ROOT file in an input (itself, or tar members)."""
    if data[:4] == b"root":
        if range_ids is None or _range_id(path) in range_ids:
            yield path, path, data
        return
    try:
        bundle = tarfile.open(fileobj=io.BytesIO(data), mode="r:")  # noqa: SIM115 - closed below
    except tarfile.TarError:
        raise MergeError(f"{path} is neither a ROOT file nor a tar") from None
    with bundle:
        members = [m for m in bundle if m.isfile()]
        if not members:
            raise MergeError(f"{path} is neither a ROOT file nor a tar of files")
        for member in members:
            if range_ids is not None and _range_id(member.name) not in range_ids:
                continue
            label = f"{path}[{member.name}]"
            handle = bundle.extractfile(member)
            content = handle.read() if handle else b""
            if content[:4] != b"root":
                raise MergeError(f"{label} is not a ROOT file")
            yield label, member.name, content


def _read_uproot(data: bytes, tree: str, label: str) -> tuple[Schema, Columns, str | None]:
    import uproot

    try:
        with uproot.open(io.BytesIO(data)) as handle:
            if tree not in handle:
                raise MergeError(f"{label} has no tree {tree!r}")
            schema = Schema.of_tree(handle[tree])
            columns = Columns.from_arrays(handle[tree].arrays(), schema)
            guid = str(handle[GUID_KEY]) if GUID_KEY in handle else None
    except MergeError:
        raise
    except Exception as exc:  # uproot raises many kinds for damaged files
        raise MergeError(f"{label} cannot be read: {type(exc).__name__}: {exc}") from exc
    if EVENT_NUMBER not in schema.flat:
        raise MergeError(f"{label} has no {EVENT_NUMBER!r} branch")
    return schema, columns, guid


def _read(
    data: bytes, tree: str, label: str, schema: Schema | None
) -> tuple[Schema, Columns, str | None]:
    try:
        check_complete(data, label)
        if schema is not None:
            fast = read_single_basket_tree(data, tree, schema, label)
            if fast is not None:
                return schema, fast, None
    except RootFormatError as exc:
        raise MergeError(str(exc)) from exc
    found, columns, guid = _read_uproot(data, tree, label)
    if schema is not None and found != schema:
        raise MergeError(f"{label} has branches {found.describe()}, expected {schema.describe()}")
    return found, columns, guid


def _spans(numbers: Sequence[int]) -> str:
    """``1, 4-7, 9`` for a sorted list of numbers (capped, for messages)."""
    parts: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(parts[:20]) + (", ..." if len(parts) > 20 else "")


def merge_outputs(
    inputs: Sequence[str],
    output: str,
    *,
    tree: str = "hits",
    checksums: dict[str, str] | None = None,
    expect: tuple[int, int] | None = None,
    range_ids: set[str] | None = None,
) -> MergeResult:
    """Merge ``inputs`` into ``output`` ordered by event number; see the module doc."""
    if not inputs:
        raise MergeError("nothing to merge: no inputs given")
    schema: Schema | None = None
    guid: str | None = None
    parts: list[Columns] = []
    labels: list[str] = []
    found_ids: set[str] = set()
    for path in inputs:
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise MergeError(f"cannot read {path}: {exc.strerror or exc}") from exc
        expected = _expected_checksum(path, checksums or {})
        if expected is not None and adler32_hex(data) != expected:
            raise MergeError(f"{path} has adler32 {adler32_hex(data)}, expected {expected}")
        for label, name, content in _sources(path, data, range_ids):
            found_ids.add(_range_id(name))
            schema_found, columns, file_guid = _read(content, tree, label, schema)
            schema, guid = schema or schema_found, guid or file_guid
            parts.append(columns)
            labels.append(label)
    if range_ids is not None:
        missing_ids = range_ids - found_ids
        if missing_ids:
            raise MergeError(f"no output found for ranges {', '.join(sorted(missing_ids))}")
    if not parts:
        raise MergeError("the inputs hold no ROOT file to merge")
    merged = Columns.concatenate(parts)
    numbers = merged.flat[EVENT_NUMBER]
    order = np.argsort(numbers, kind="stable")
    ordered = numbers[order]
    _check_unique(ordered, order, parts, labels)
    if expect is not None:
        _check_expected(ordered, *expect)
    strings = {GUID_KEY: guid} if guid else {}
    path = write_tree_file(output, tree, merged.take(order), strings)
    return MergeResult(
        path,
        len(ordered),
        len(parts),
        int(ordered[0]) if len(ordered) else None,
        int(ordered[-1]) if len(ordered) else None,
    )


def _check_unique(
    ordered: np.ndarray, order: np.ndarray, parts: list[Columns], labels: list[str]
) -> None:
    repeated = np.flatnonzero(ordered[1:] == ordered[:-1])
    if not len(repeated):
        return
    owner = np.repeat(np.arange(len(parts)), [len(p) for p in parts])[order]
    lines = [
        f"event {ordered[i]} is in both {labels[owner[i]]} and {labels[owner[i + 1]]}"
        for i in repeated[:5]
    ]
    more = f" (and {len(repeated) - 5} more)" if len(repeated) > 5 else ""
    raise MergeError(f"duplicate events: {'; '.join(lines)}{more}")


def _check_expected(ordered: np.ndarray, first: int, last: int) -> None:
    wanted = np.arange(first, last + 1, dtype=np.int64)
    missing = np.setdiff1d(wanted, ordered)
    extra = ordered[(ordered < first) | (ordered > last)]
    problems: list[str] = []
    if len(missing):
        problems.append(f"missing {len(missing)} events: {_spans(missing.tolist())}")
    if len(extra):
        problems.append(f"{len(extra)} events outside {first}-{last}: {_spans(extra.tolist())}")
    if problems:
        raise MergeError("; ".join(problems))


def load_checksums(path: str) -> dict[str, Any]:
    """Read a ``{path: adler32}`` JSON file."""
    import json

    try:
        with open(path) as handle:
            value = json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        raise MergeError(f"cannot read checksums from {path}: {exc}") from exc
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise MergeError(f"{path} must hold a JSON object {{path: adler32}}")
    return value
