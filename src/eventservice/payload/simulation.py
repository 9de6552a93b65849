"""A toy detector simulation: particles cross cylindrical layers and deposit energy.

Physics is deliberately crude; what matters is that it is *deterministic*: every
random number comes from a generator seeded by ``(input GUID, event number)``, so
an event's hits are identical whichever worker, attempt or range processed it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from eventservice.payload.inputs import event_rng

#: Radii (cm) of the layers: 5 tracker layers, 2 electromagnetic, 1 hadronic calorimeter.
LAYER_RADII = np.array([3.0, 7.0, 12.0, 30.0, 50.0, 120.0, 140.0, 200.0])
TRACKER_LAYERS = 5
HALF_LENGTH = 300.0  # cm; particles leaving through the end caps make no more hits
HEAVY_FRACTION = 0.05
HEAVY_FACTOR = 10.0

_NEUTRAL = {22, 2112, 130, -2112}
_ELECTROMAGNETIC = {22, 11, -11}
_MUONS = {13, -13}

HIT_FIELDS = ("layer", "particle", "x", "y", "z", "edep")


@dataclass(frozen=True)
class EventHits:
    """The hits one event left in the detector."""

    event_number: int
    layer: np.ndarray  # int32
    particle: np.ndarray  # int32, index of the particle in the event
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    edep: np.ndarray  # GeV

    @property
    def total_edep(self) -> float:
        """Energy deposited in the whole detector."""
        return float(self.edep.sum())


def cost_factor(guid: str, event_number: int) -> float:
    """CPU cost multiplier of an event: 10 for about 5% of events, else 1."""
    heavy = event_rng(f"cost-{guid}", event_number).random() < HEAVY_FRACTION
    return HEAVY_FACTOR if heavy else 1.0


def burn_cpu(seconds: float) -> None:
    """Spend ``seconds`` of this process's CPU time (the tunable cost of an event)."""
    if seconds <= 0:
        return
    end = time.process_time() + seconds
    x = 1.0
    while time.process_time() < end:
        for _ in range(200):
            x = x * 1.000001 + 1e-9


def _layer_crossing(
    vx: np.ndarray, vy: np.ndarray, ux: np.ndarray, uy: np.ndarray, radius: float
) -> np.ndarray:
    """Transverse path length from the vertex to the cylinder of ``radius``."""
    b = vx * ux + vy * uy
    c = vx * vx + vy * vy - radius * radius
    return -b + np.sqrt(np.maximum(b * b - c, 0.0))


def simulate_event(
    guid: str, event_number: int, particles: dict[str, np.ndarray], cpu_per_event: float = 0.0
) -> EventHits:
    """Propagate one event's particles through the layers and collect the hits."""
    burn_cpu(cpu_per_event * cost_factor(guid, event_number))
    rng = event_rng(f"sim-{guid}", event_number)
    pdg = particles["pdgId"]
    px, py, pz = particles["px"], particles["py"], particles["pz"]
    pt = np.maximum(np.hypot(px, py), 1e-9)
    p = np.sqrt(pt * pt + pz * pz)
    ux, uy, cot = px / pt, py / pt, pz / pt
    remaining = particles["E"].astype(np.float64).copy()
    neutral = np.isin(pdg, list(_NEUTRAL))
    electromagnetic = np.isin(pdg, list(_ELECTROMAGNETIC))
    muon = np.isin(pdg, list(_MUONS))
    alive = np.ones(len(pdg), dtype=bool)
    columns: dict[str, list[np.ndarray]] = {f: [] for f in HIT_FIELDS}
    for layer, radius in enumerate(LAYER_RADII):
        t = _layer_crossing(particles["vx"], particles["vy"], ux, uy, radius)
        # Multiple scattering: smear more for soft particles and outer layers.
        sigma = 0.001 * radius / p
        x = particles["vx"] + t * ux + rng.normal(0.0, 1.0, len(pdg)) * sigma
        y = particles["vy"] + t * uy + rng.normal(0.0, 1.0, len(pdg)) * sigma
        z = particles["vz"] + t * cot + rng.normal(0.0, 1.0, len(pdg)) * sigma
        alive &= np.abs(z) < HALF_LENGTH
        if layer < TRACKER_LAYERS:
            # Landau-like ionisation loss, only for charged particles.
            edep = np.where(neutral, 0.0, 1e-4 * (1.0 + rng.exponential(0.5, len(pdg))))
        elif layer < len(LAYER_RADII) - 1:
            share = np.where(electromagnetic, 0.6, np.where(muon, 0.002, 0.1))
            edep = remaining * share * rng.uniform(0.8, 1.0, len(pdg))
        else:
            share = np.where(electromagnetic | muon, 0.01, 0.8)
            edep = remaining * share * rng.uniform(0.7, 1.0, len(pdg))
        edep = np.minimum(edep, remaining)
        made = alive & (edep > 0)
        remaining = remaining - np.where(made, edep, 0.0)
        index = np.flatnonzero(made)
        columns["layer"].append(np.full(len(index), layer, dtype=np.int32))
        columns["particle"].append(index.astype(np.int32))
        for name, values in (("x", x), ("y", y), ("z", z), ("edep", edep)):
            columns[name].append(values[index])
    merged = {name: np.concatenate(parts) for name, parts in columns.items()}
    return EventHits(event_number=event_number, **merged)
