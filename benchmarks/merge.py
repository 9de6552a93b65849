"""Benchmark: merge N single-event HITS outputs, against uproot writing the same data once.

    /work/venv/bin/python benchmarks/merge.py [--files 10000] [--workdir DIR]

Setup (not timed): simulate N events and write each as its own per-range output
``<eventRangeID>.HITS.root``, in shuffled order so the merge has to sort.

Timed, in the same run:
- merge: ``merge_outputs`` on the N files (read, check, order, write one file);
- reference: the same N per-event arrays already in memory, concatenated
  (numpy / awkward) and written once by uproot with the same tree layout;
- numpy reference (stricter, printed too): the per-event data as flat numpy
  columns, concatenated with numpy and written by the same writer the merge uses.

Printed: events/s and MB/s of both (MB = uncompressed branch data) and the ratio
merge / reference; the issue asks for a ratio >= 0.5.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import tempfile
import time

import awkward as ak
import numpy as np
import uproot

from eventservice.payload.columns import Columns
from eventservice.payload.inputs import InputFile, make_input
from eventservice.payload.merge import merge_outputs
from eventservice.payload.outputs import GUID_KEY, TREE, hits_columns
from eventservice.payload.simulate import Simulator


def _data_bytes(columns: Columns) -> int:
    total = sum(v.nbytes for v in columns.flat.values())
    total += sum(v.nbytes for v in columns.counts.values())
    return total + sum(v.nbytes for g in columns.content.values() for v in g.values())


def setup(workdir: str, n_files: int) -> tuple[list[str], list[Columns], str]:
    """Write ``n_files`` single-event outputs; return paths, their columns and the GUID."""
    evnt = os.path.join(workdir, "evnt.root")
    guid = make_input(evnt, n_files, seed=42, guid="BENCH-GUID")
    with InputFile.open(evnt) as source:
        events = Simulator(cpu_per_event=0.0).simulate(source, 0, n_files - 1)
    order = np.random.default_rng(0).permutation(n_files)
    paths, per_event = [], []
    for k in order:
        columns = hits_columns([events[k]])
        path = os.path.join(workdir, f"1-100-1-{k}-1.HITS.root")
        if not os.path.exists(path):
            with uproot.recreate(path) as out:
                columns.write(out, TREE)
                out[GUID_KEY] = guid
        paths.append(path)
        per_event.append(columns)
    return paths, per_event, guid


def reference(per_event: list[Columns], path: str, guid: str) -> tuple[float, float]:
    """Concatenate in-memory arrays and write once; return (concat s, write s)."""
    t0 = time.perf_counter()
    data = [c.tree_data() for c in per_event]
    merged = {
        key: (
            np.concatenate([d[key] for d in data])
            if isinstance(data[0][key], np.ndarray)
            else ak.concatenate([d[key] for d in data])
        )
        for key in data[0]
    }
    t1 = time.perf_counter()
    with uproot.recreate(path) as out:
        tree = out.mktree(
            TREE,
            {k: (v.type if isinstance(v, ak.Array) else v.dtype) for k, v in merged.items()},
            counter_name=lambda outer: "nhit",
            field_name=lambda outer, inner: inner,
        )
        tree.extend(merged)
        out[GUID_KEY] = guid
    return t1 - t0, time.perf_counter() - t1


def reference_numpy(per_event: list[Columns], path: str, guid: str) -> float:
    """A stronger reference: concatenate flat numpy columns, then the same writer."""
    t0 = time.perf_counter()
    merged = Columns.concatenate(per_event)
    with uproot.recreate(path) as out:
        merged.write(out, TREE)
        out[GUID_KEY] = guid
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--workdir", help="reuse/keep the generated files here")
    args = parser.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="es-merge-bench-")
    os.makedirs(workdir, exist_ok=True)
    try:
        t = time.perf_counter()
        paths, per_event, guid = setup(workdir, args.files)
        print(f"setup: {len(paths)} files in {time.perf_counter() - t:.1f} s (not timed)")
        n_events = len(per_event)
        data_mb = sum(_data_bytes(c) for c in per_event) / 1e6
        file_mb = sum(os.path.getsize(p) for p in paths) / 1e6

        ref_concat, ref_write = reference(per_event, os.path.join(workdir, "ref.root"), guid)
        ref_s = ref_concat + ref_write
        numpy_s = reference_numpy(per_event, os.path.join(workdir, "ref-numpy.root"), guid)
        t = time.perf_counter()
        result = merge_outputs(paths, os.path.join(workdir, "merged.root"))
        merge_s = time.perf_counter() - t
        assert result.n_events == n_events

        print(
            f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cpus,"
            f" Python {platform.python_version()}, uproot {uproot.__version__}"
        )
        print(f"date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
        print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
        print(f"data: {n_events} events, {data_mb:.1f} MB uncompressed, {file_mb:.1f} MB in files")
        print(
            f"reference (concat {ref_concat:.2f} s + write {ref_write:.2f} s): {ref_s:.2f} s,"
            f" {n_events / ref_s:,.0f} events/s, {data_mb / ref_s:.1f} MB/s"
        )
        print(
            f"merge: {merge_s:.2f} s, {n_events / merge_s:,.0f} events/s,"
            f" {data_mb / merge_s:.1f} MB/s ({file_mb / merge_s:.1f} MB/s of input files)"
        )
        print(
            f"numpy reference (flat columns concatenated + written): {numpy_s:.2f} s,"
            f" {n_events / numpy_s:,.0f} events/s, {data_mb / numpy_s:.1f} MB/s"
        )
        print(f"ratio merge/reference: {ref_s / merge_s:.2f} (target >= 0.5)")
        print(f"ratio merge/numpy reference: {numpy_s / merge_s:.2f}")
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
