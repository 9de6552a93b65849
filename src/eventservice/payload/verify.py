"""Compare two ROOT files branch by branch and event by event (``eventservice verify``).

Values are compared as bytes, so ``-0.0`` differs from ``0.0`` and equal NaNs are
equal: "the same" here means what a byte-for-byte reproducible payload promises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import awkward as ak
import numpy as np

from eventservice.errors import EventServiceError

MAX_SHOWN = 5


class VerifyError(EventServiceError):
    """A file to compare cannot be opened or has no tree to compare."""


@dataclass
class VerifyReport:
    """The outcome of a comparison: empty ``differences`` means identical."""

    tree: str
    n_events: int
    branches: list[str]
    differences: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        """Whether every branch of every event is equal."""
        return not self.differences

    def summary(self) -> str:
        """A readable multi-line summary."""
        if self.identical:
            return (
                f"identical: tree {self.tree!r}, {self.n_events} events,"
                f" {len(self.branches)} branches"
            )
        head = f"DIFFERENT: tree {self.tree!r}, {len(self.differences)} problems"
        return "\n".join([head, *(f"  - {line}" for line in self.differences)])


def _as_bytes(values: np.ndarray) -> np.ndarray:
    values = np.ascontiguousarray(values)
    if values.dtype.kind not in "iufb":
        raise VerifyError(f"cannot compare values of type {values.dtype}")
    return values.view(f"u{values.dtype.itemsize}") if values.dtype.itemsize > 1 else values


def _unequal_events(a: ak.Array, b: ak.Array) -> np.ndarray:
    """Entry indices where two equally long branches differ."""
    if a.ndim == 1:
        x, y = ak.to_numpy(a), ak.to_numpy(b)
        if x.dtype != y.dtype:
            return np.arange(len(x))
        return np.flatnonzero(_as_bytes(x) != _as_bytes(y))
    counts_a, counts_b = ak.to_numpy(ak.num(a, axis=1)), ak.to_numpy(ak.num(b, axis=1))
    same_length = counts_a == counts_b
    flat_a = ak.to_numpy(ak.flatten(a[same_length], axis=None))
    flat_b = ak.to_numpy(ak.flatten(b[same_length], axis=None))
    if flat_a.dtype != flat_b.dtype:
        return np.arange(len(a))
    item_differs = _as_bytes(flat_a) != _as_bytes(flat_b)
    entries = np.flatnonzero(same_length)
    owner = np.repeat(entries, counts_a[same_length])
    differs = ~same_length
    differs[np.unique(owner[item_differs])] = True
    return np.flatnonzero(differs)


def _show(values: Any) -> str:
    text = str(values.tolist() if hasattr(values, "tolist") else values)
    return text if len(text) <= 80 else text[:77] + "..."


def _open_tree(path: str, tree: str | None) -> tuple[Any, Any, str]:
    import uproot

    try:
        handle = uproot.open(path)
    except Exception as exc:
        raise VerifyError(f"cannot open {path}: {type(exc).__name__}: {exc}") from exc
    names = [k for k, c in handle.classnames(cycle=False).items() if c == "TTree"]
    name = tree or ("hits" if "hits" in names else (names[0] if names else None))
    if name is None or name not in names:
        handle.close()
        raise VerifyError(f"{path} has no tree {name or ''!r}; trees: {names}")
    return handle, handle[name], name


def verify_files(candidate: str, reference: str, tree: str | None = None) -> VerifyReport:
    """Compare every branch of every event of ``candidate`` with ``reference``."""
    ref_file, ref_tree, name = _open_tree(reference, tree)
    try:
        cand_file, cand_tree, _ = _open_tree(candidate, name)
    except VerifyError:
        ref_file.close()
        raise
    with ref_file, cand_file:
        try:
            ref, cand = ref_tree.arrays(), cand_tree.arrays()
        except Exception as exc:
            raise VerifyError(f"cannot read tree {name!r}: {type(exc).__name__}: {exc}") from exc
    report = VerifyReport(name, len(ref), list(ref.fields))
    missing = [f for f in ref.fields if f not in cand.fields]
    extra = [f for f in cand.fields if f not in ref.fields]
    if missing:
        report.differences.append(f"branches missing from {candidate}: {', '.join(missing)}")
    if extra:
        report.differences.append(f"branches only in {candidate}: {', '.join(extra)}")
    if len(cand) != len(ref):
        report.differences.append(f"{len(cand)} events in {candidate}, {len(ref)} in {reference}")
        if "eventNumber" in ref.fields and "eventNumber" in cand.fields:
            ref_numbers = set(ak.to_list(ref["eventNumber"]))
            cand_numbers = set(ak.to_list(cand["eventNumber"]))
            for label, numbers in (
                ("missing", sorted(ref_numbers - cand_numbers)),
                ("extra", sorted(cand_numbers - ref_numbers)),
            ):
                if numbers:
                    shown = ", ".join(map(str, numbers[:20])) + (
                        " ..." if len(numbers) > 20 else ""
                    )
                    report.differences.append(f"{label} eventNumbers: {shown}")
        return report
    labels = ak.to_numpy(ref["eventNumber"]) if "eventNumber" in ref.fields else None
    for branch in (f for f in ref.fields if f in cand.fields):
        a, b = ref[branch], cand[branch]
        type_a, type_b = str(a.type.content), str(b.type.content)
        if type_a != type_b:
            report.differences.append(f"branch {branch}: type {type_b} vs reference {type_a}")
            continue
        bad = _unequal_events(a, b)
        if not len(bad):
            continue
        first = int(bad[0])
        where = (
            f"eventNumber {labels[first]} (entry {first})"
            if labels is not None
            else f"entry {first}"
        )
        report.differences.append(
            f"branch {branch}: {len(bad)} of {len(ref)} events differ; first at {where}:"
            f" {_show(b[first])} vs reference {_show(a[first])}"
        )
    return report
