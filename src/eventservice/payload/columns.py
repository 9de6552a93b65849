"""Flat numpy columns of a TTree: the in-memory form that outputs, merge and verify share.

A tree here has *flat* branches (one number per entry) and *jagged* branches of
numbers grouped by the counter branch that gives their lengths (``nhit`` for
``hit_x``, ``hit_edep``, ...), which is how uproot writes an awkward record of lists.
Keeping one counts array per group plus flat contents makes concatenating and
reordering thousands of small trees cheap numpy work.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import awkward as ak
import numpy as np


@dataclass(frozen=True)
class Schema:
    """Branch names and types: flat branches, and jagged branches per counter."""

    flat: dict[str, np.dtype[Any]]
    jagged: dict[str, dict[str, np.dtype[Any]]]  # counter -> {branch: dtype}

    @classmethod
    def of_tree(cls, tree: Any) -> Schema:
        """Read the schema of an uproot TTree; refuse branches we cannot merge."""
        flat: dict[str, np.dtype[Any]] = {}
        jagged: dict[str, dict[str, np.dtype[Any]]] = {}
        counters = {b.count_branch.name for b in tree.branches if b.count_branch is not None}
        for branch in tree.branches:
            interp = branch.interpretation
            if branch.count_branch is not None and hasattr(interp, "content"):
                dtype = getattr(interp.content, "to_dtype", None)
                group = jagged.setdefault(branch.count_branch.name, {})
                group[branch.name] = _native(dtype)
            elif branch.name not in counters and hasattr(interp, "to_dtype"):
                flat[branch.name] = _native(interp.to_dtype)
            elif branch.name not in counters:
                raise ValueError(f"branch {branch.name!r} has unsupported type {interp}")
        return cls(flat, jagged)

    def describe(self) -> str:
        """A one-line summary, for error messages."""
        parts = [f"{n}:{d}" for n, d in self.flat.items()]
        for counter, group in self.jagged.items():
            parts += [f"{n}[{counter}]:{d}" for n, d in group.items()]
        return ", ".join(parts)


def _native(dtype: Any) -> np.dtype[Any]:
    if dtype is None:
        raise ValueError("jagged branch of non-numeric content")
    return np.dtype(dtype).newbyteorder("=")


@dataclass
class Columns:
    """Entries of a tree as flat arrays: ``flat[name]``, ``counts[counter]``, ``content``."""

    flat: dict[str, np.ndarray]
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    content: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def __len__(self) -> int:
        for values in (*self.flat.values(), *self.counts.values()):
            return len(values)
        return 0

    @classmethod
    def from_arrays(cls, arrays: ak.Array, schema: Schema) -> Columns:
        """Columns from the awkward arrays uproot's ``tree.arrays()`` returns."""
        flat = {n: ak.to_numpy(arrays[n]).astype(d) for n, d in schema.flat.items()}
        counts: dict[str, np.ndarray] = {}
        content: dict[str, dict[str, np.ndarray]] = {}
        for counter, group in schema.jagged.items():
            parts = {n: jagged_parts(arrays[n]) for n in group}
            counts[counter] = parts[next(iter(group))][0].astype(np.int64)
            content[counter] = {n: parts[n][1].astype(d) for n, d in group.items()}
        return cls(flat, counts, content)

    @classmethod
    def concatenate(cls, parts: Sequence[Columns]) -> Columns:
        """All entries of ``parts``, one after the other."""
        first = parts[0]
        return cls(
            {n: np.concatenate([p.flat[n] for p in parts]) for n in first.flat},
            {c: np.concatenate([p.counts[c] for p in parts]) for c in first.counts},
            {
                c: {n: np.concatenate([p.content[c][n] for p in parts]) for n in group}
                for c, group in first.content.items()
            },
        )

    def take(self, order: np.ndarray) -> Columns:
        """The entries at positions ``order`` (a permutation or selection)."""
        counts: dict[str, np.ndarray] = {}
        content: dict[str, dict[str, np.ndarray]] = {}
        for counter, group in self.content.items():
            lengths = self.counts[counter]
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
            new_lengths = lengths[order]
            # Index of every content item in the new order, built without a Python loop.
            offsets = np.repeat(starts[order] - np.cumsum(new_lengths) + new_lengths, new_lengths)
            index = offsets + np.arange(int(new_lengths.sum()), dtype=np.int64)
            counts[counter] = new_lengths
            content[counter] = {n: values[index] for n, values in group.items()}
        return Columns({n: v[order] for n, v in self.flat.items()}, counts, content)

    def tree_data(self) -> dict[str, Any]:
        """The branch dict for uproot ``extend``; jagged groups go in as records."""
        data: dict[str, Any] = dict(self.flat)
        for i, (counter, group) in enumerate(self.content.items()):
            data[f"_group{i}"] = _jagged_records(group, self.counts[counter])
        return data

    def write(self, out: Any, name: str, chunk: int = 500_000) -> None:
        """Write as TTree ``name`` into the open uproot file ``out``."""
        counters = {f"_group{i}": c for i, c in enumerate(self.content)}
        data = self.tree_data()
        types = {k: (v.type if isinstance(v, ak.Array) else v.dtype) for k, v in data.items()}
        tree = out.mktree(
            name,
            types,
            # Names exactly as in the inputs: counter `nhit`, fields `hit_x`, ...
            counter_name=lambda outer: counters[outer],
            field_name=lambda outer, inner: inner,
        )
        for start in range(0, len(self), chunk):
            tree.extend({k: v[start : start + chunk] for k, v in data.items()})


def jagged_parts(array: ak.Array) -> tuple[np.ndarray, np.ndarray]:
    """Lengths per entry and flat contents of a jagged numeric array."""
    layout = array.layout
    if isinstance(layout, ak.contents.ListOffsetArray) and isinstance(
        layout.content, ak.contents.NumpyArray
    ):
        offsets = np.asarray(layout.offsets.data)
        return np.diff(offsets), np.asarray(layout.content.data)[offsets[0] : offsets[-1]]
    return ak.to_numpy(ak.num(array, axis=1)), ak.to_numpy(ak.flatten(array, axis=1))


def _jagged_records(group: dict[str, np.ndarray], counts: np.ndarray) -> ak.Array:
    """``ak.unflatten(ak.zip(group), counts)``, built straight from the numpy arrays.

    The awkward operations cost about a millisecond per call, which is most of the
    work for a per-range output of a few events.
    """
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    record = ak.contents.RecordArray(
        [ak.contents.NumpyArray(np.ascontiguousarray(v)) for v in group.values()],
        list(group),
        length=int(offsets[-1]),
    )
    return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), record))


#: Outputs, merged files and sequential runs are compressed with ZSTD at this level
#: (uproot's default is ZLIB level 1). Per-range outputs are written once and read once,
#: by the merge; ZSTD writes and reads them several times faster, into files no larger.
ZSTD_LEVEL = 1


def write_tree_file(
    path: str | os.PathLike[str],
    tree: str,
    columns: Iterable[Columns] | Columns,
    strings: dict[str, str] | None = None,
) -> str:
    """Write ``columns`` as ``tree`` (plus TObjStrings) atomically; return the path.

    The file appears under its final name only once complete.
    """
    import uproot

    path = os.path.abspath(os.fspath(path))
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with uproot.recreate(tmp, compression=uproot.ZSTD(ZSTD_LEVEL)) as out:
            whole = columns if isinstance(columns, Columns) else Columns.concatenate(list(columns))
            whole.write(out, tree)
            for key, value in (strings or {}).items():
                out[key] = value
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
