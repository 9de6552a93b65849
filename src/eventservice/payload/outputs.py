"""HITS-like output files, written per range by workers and once by sequential runs.

Layout (documented in ``docs/payload.md``): TTree ``hits``, one entry per event:
``eventNumber`` (int64), ``edepTotal`` (float64), the counter ``nhit`` (int32) and
jagged ``hit_layer``, ``hit_particle`` (int32), ``hit_x``, ``hit_y``, ``hit_z``
(cm) and ``hit_edep`` (GeV) (float64); TObjString ``inputGUID``: the GUID of the
input the events came from.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from eventservice.payload.columns import Columns, write_tree_file
from eventservice.payload.simulation import HIT_FIELDS, EventHits

TREE = "hits"
GUID_KEY = "inputGUID"
COUNTER = "nhit"
_DTYPES = {"layer": np.int32, "particle": np.int32}


def hits_columns(events: Sequence[EventHits]) -> Columns:
    """Columns of the ``hits`` tree for simulated events, in the order given."""

    def flat(name: str) -> np.ndarray:
        dtype = _DTYPES.get(name, np.float64)
        parts = [getattr(e, name) for e in events]
        return np.concatenate(parts).astype(dtype) if parts else np.empty(0, dtype)

    return Columns(
        flat={
            "eventNumber": np.array([e.event_number for e in events], dtype=np.int64),
            "edepTotal": np.array([e.total_edep for e in events], dtype=np.float64),
        },
        counts={COUNTER: np.array([len(e.edep) for e in events], dtype=np.int64)},
        content={COUNTER: {f"hit_{name}": flat(name) for name in HIT_FIELDS}},
    )


def write_hits(path: str | os.PathLike[str], events: Sequence[EventHits], input_guid: str) -> str:
    """Write simulated events as a HITS file, atomically; return its absolute path."""
    return write_tree_file(path, TREE, hits_columns(events), {GUID_KEY: input_guid})
