"""EVNT-like input files: writing them (``make-input``) and reading event ranges.

Layout of an input file (documented in ``docs/payload.md``):

- TTree ``events``, one entry per event: ``eventNumber`` (int64), the counter
  ``nparticle`` (int32) and jagged ``particle_pdgId`` (int32), ``particle_px``,
  ``particle_py``, ``particle_pz``, ``particle_E`` (GeV), ``particle_vx``,
  ``particle_vy``, ``particle_vz`` (cm), all float64;
- TObjString ``guid``: the file's GUID.

Entry numbers are 0-based; a range ``[first, last]`` is read with uproot's
``entry_start=first, entry_stop=last + 1``. A compressed basket can only be decoded
whole, so :meth:`InputFile.read_flat` decodes the clusters a range falls in once and
keeps them for the ranges that follow, as ROOT's TTreeCache does.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import awkward as ak
import numpy as np

from eventservice.errors import PayloadError
from eventservice.payload.columns import jagged_parts

TREE = "events"
GUID_KEY = "guid"
PARTICLE_FIELDS = ("pdgId", "px", "py", "pz", "E", "vx", "vy", "vz")
#: Most entries :meth:`InputFile.read_flat` keeps decoded (about 9 MB of this layout's
#: data); a range in larger clusters is read alone. ``make_input`` writes clusters of
#: this size.
MAX_CACHED_ENTRIES = 10_000

# Species a toy generator emits, with masses (GeV) and relative abundances.
_SPECIES = np.array([211, -211, 321, -321, 2212, -2212, 22, 11, -11, 13, -13, 2112, 130])
_MASSES = np.array(
    [
        *(0.1396, 0.1396, 0.4937, 0.4937, 0.9383, 0.9383, 0.0),
        *(0.000511, 0.000511, 0.1057, 0.1057, 0.9396, 0.4976),
    ]
)
_WEIGHTS = np.array([20, 20, 5, 5, 3, 2, 25, 3, 3, 2, 2, 5, 5], dtype=float)
_WEIGHTS /= _WEIGHTS.sum()


def event_rng(label: str, event_number: int) -> np.random.Generator:
    """A random generator that depends only on ``(label, event_number)``.

    Seeding per event is what makes results independent of which worker, attempt or
    range boundaries processed an event.
    """
    digest = hashlib.sha256(f"{label}:{event_number}".encode()).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "little")))


def generate_event(seed: int, event_number: int) -> dict[str, np.ndarray]:
    """Generate one event's particles, deterministically from ``(seed, event_number)``."""
    rng = event_rng(f"evgen-{seed}", event_number)
    n = int(rng.poisson(12)) + 2
    kind = rng.choice(len(_SPECIES), size=n, p=_WEIGHTS)
    pt = rng.exponential(2.0, n) + 0.2
    eta = rng.uniform(-2.5, 2.5, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    energy = np.sqrt(px**2 + py**2 + pz**2 + _MASSES[kind] ** 2)
    return {
        "pdgId": _SPECIES[kind].astype(np.int32),
        "px": px,
        "py": py,
        "pz": pz,
        "E": energy,
        "vx": rng.normal(0.0, 0.01, n),
        "vy": rng.normal(0.0, 0.01, n),
        "vz": np.full(n, rng.normal(0.0, 5.0)),
    }


def make_input(
    path: str | os.PathLike[str],
    n_events: int,
    seed: int = 0,
    guid: str | None = None,
    first_event_number: int = 0,
    chunk: int = 10_000,
) -> str:
    """Write an EVNT-like file of ``n_events`` events and return its GUID.

    Particles depend only on ``seed`` and the event number; the GUID is a fresh
    UUID unless given, as every file needs its own identity.
    """
    import uproot

    if n_events < 1:
        raise PayloadError(f"an input needs at least one event, got {n_events}")
    guid = guid or str(uuid.uuid4()).upper()
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with uproot.recreate(tmp) as out:
            tree = None
            for start in range(0, n_events, chunk):
                numbers = np.arange(start, min(start + chunk, n_events)) + first_event_number
                events = [generate_event(seed, int(k)) for k in numbers]
                counts = [len(e["pdgId"]) for e in events]
                particle = ak.unflatten(
                    ak.zip({f: np.concatenate([e[f] for e in events]) for f in PARTICLE_FIELDS}),
                    counts,
                )
                data = {"eventNumber": numbers.astype(np.int64), "particle": particle}
                if tree is None:
                    tree = out.mktree(TREE, {"eventNumber": np.int64, "particle": particle.type})
                tree.extend(data)
            out[GUID_KEY] = guid
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return guid


def _open(url_or_path: str) -> Any:
    """Open a ROOT file from a path or any URL uproot/fsspec understands."""
    import uproot

    try:
        return uproot.open(url_or_path)
    except FileNotFoundError:
        raise PayloadError(f"cannot read input {url_or_path}: no such file") from None
    except Exception as exc:  # uproot raises many kinds for unreadable/corrupt files
        raise PayloadError(f"cannot open input {url_or_path}: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:300]}"


@dataclass(frozen=True)
class _Decoded:
    """Entries ``start..stop-1`` of an input, decoded: what :meth:`InputFile.read_flat`
    returns, for a whole span of clusters."""

    start: int
    numbers: np.ndarray
    counts: np.ndarray
    offsets: np.ndarray  # where each entry's particles begin in ``flat``; one more at the end
    flat: dict[str, np.ndarray]

    @classmethod
    def of(
        cls, start: int, numbers: np.ndarray, counts: np.ndarray, flat: dict[str, np.ndarray]
    ) -> _Decoded:
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        for array in (numbers, counts, *flat.values()):
            array.flags.writeable = False  # ranges get views: none may change the next's
        return cls(start, numbers, counts, offsets, flat)

    @property
    def stop(self) -> int:
        return self.start + len(self.numbers)

    def covers(self, first: int, last: int) -> bool:
        return self.start <= first and last < self.stop

    def entries(
        self, first: int, last: int
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        begin, end = first - self.start, last + 1 - self.start
        lo, hi = self.offsets[begin], self.offsets[end]
        return (
            self.numbers[begin:end],
            self.counts[begin:end],
            {name: values[lo:hi] for name, values in self.flat.items()},
        )


@dataclass
class InputFile:
    """An open input file: its GUID, size in events and the ``events`` tree."""

    url: str
    guid: str
    n_events: int
    tree: Any
    _file: Any
    _clusters: np.ndarray | None = field(default=None, repr=False)
    _decoded: _Decoded | None = field(default=None, repr=False)

    @classmethod
    def open(cls, url_or_path: str) -> InputFile:
        """Open an input and check it has the expected layout."""
        handle = _open(url_or_path)
        try:
            if TREE not in handle or GUID_KEY not in handle:
                raise PayloadError(
                    f"{url_or_path} is not an EVNT input: needs a {TREE!r} tree and a"
                    f" {GUID_KEY!r} string, has {sorted(handle.keys(cycle=False))}"
                )
            tree, guid = handle[TREE], str(handle[GUID_KEY])
        except PayloadError:
            handle.close()
            raise
        except Exception as exc:
            handle.close()
            raise PayloadError(f"corrupt input {url_or_path}: {_describe(exc)}") from exc
        return cls(url_or_path, guid, int(tree.num_entries), tree, handle)

    def read_range(self, first: int, last: int) -> tuple[np.ndarray, ak.Array]:
        """Event numbers and particles of entries ``first..last`` (inclusive)."""
        arrays = self._read(first, last)
        particles = ak.zip({f: arrays[f"particle_{f}"] for f in PARTICLE_FIELDS})
        return ak.to_numpy(arrays["eventNumber"]).astype(np.int64), particles

    def read_flat(
        self, first: int, last: int
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Entries ``first..last`` as numpy: event numbers, particles per event, and
        each particle field flattened over the events.

        The same data as :meth:`read_range` without building awkward records, which
        costs more than the read itself for a range of a few events. The clusters the
        range falls in are decoded whole and kept, so the next range in them costs no
        decompression; the arrays returned are read-only views of them.
        """
        self._check(first, last)
        if self._decoded is None or not self._decoded.covers(first, last):
            start, stop = self._cluster_span(first, last)
            if stop - start > MAX_CACHED_ENTRIES:
                return self._decode(first, last).entries(first, last)
            self._decoded = self._decode(start, stop - 1)
        return self._decoded.entries(first, last)

    def _cluster_span(self, first: int, last: int) -> tuple[int, int]:
        """The entries of the clusters holding ``first..last``: whole baskets of every branch."""
        if self._clusters is None:
            try:
                self._clusters = np.asarray(self.tree.common_entry_offsets(), dtype=np.int64)
            except Exception as exc:
                raise PayloadError(f"corrupt input {self.url}: {_describe(exc)}") from exc
        clusters = self._clusters
        begin = int(np.searchsorted(clusters, first, side="right")) - 1
        end = int(np.searchsorted(clusters, last, side="right"))
        if begin < 0 or end >= len(clusters):  # offsets that do not span the tree
            return first, last + 1
        return int(clusters[begin]), int(clusters[end])

    def _decode(self, first: int, last: int) -> _Decoded:
        arrays = self._read(first, last)
        parts = {name: jagged_parts(arrays[f"particle_{name}"]) for name in PARTICLE_FIELDS}
        counts = parts[PARTICLE_FIELDS[0]][0]
        flat = {name: values for name, (_, values) in parts.items()}
        numbers = ak.to_numpy(arrays["eventNumber"]).astype(np.int64)
        return _Decoded.of(first, numbers, counts, flat)

    def _check(self, first: int, last: int) -> None:
        if first < 0 or last < first or last >= self.n_events:
            raise PayloadError(
                f"range {first}-{last} is outside {self.url}, which has entries"
                f" 0-{self.n_events - 1}"
            )

    def _read(self, first: int, last: int) -> dict[str, ak.Array]:
        self._check(first, last)
        branches = ["eventNumber", *(f"particle_{f}" for f in PARTICLE_FIELDS)]
        try:
            arrays: dict[str, ak.Array] = self.tree.arrays(
                branches, entry_start=first, entry_stop=last + 1, how=dict
            )
        except Exception as exc:
            raise PayloadError(
                f"corrupt input {self.url}: cannot read entries {first}-{last}: {_describe(exc)}"
            ) from exc
        return arrays

    def close(self) -> None:
        """Release the underlying file and the entries kept decoded."""
        self._decoded = None
        self._file.close()

    def __enter__(self) -> InputFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_input_metadata(url_or_path: str) -> tuple[str, int]:
    """The GUID and the number of events of an input (local path or fsspec URL)."""
    with InputFile.open(url_or_path) as handle:
        return handle.guid, handle.n_events
