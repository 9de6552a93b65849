"""The reference payload: per-range workers on the channel, or one sequential pass.

Both modes run the same per-event simulation, so the merge of per-range outputs
equals the sequential output branch by branch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eventservice.errors import PayloadError
from eventservice.payload.channel import ChannelClient
from eventservice.payload.columns import Columns, write_tree_file
from eventservice.payload.inputs import InputFile
from eventservice.payload.outputs import GUID_KEY, TREE, hits_columns
from eventservice.payload.simulation import EventHits, simulate_event
from eventservice.payload.workers import RangeError, serve_ranges

DEFAULT_CPU_PER_EVENT = 0.002
OUTPUT_SUFFIX = ".HITS.root"


@dataclass
class Simulator:
    """Simulates ranges of inputs; keeps the last input open between ranges."""

    cpu_per_event: float = DEFAULT_CPU_PER_EVENT
    workdir: str = "."
    _input: InputFile | None = field(default=None, repr=False)

    def open_input(self, url: str) -> InputFile:
        """The open input at ``url``, reusing the previous one when it is the same."""
        if self._input is not None and self._input.url == url:
            return self._input
        self.close()
        self._input = InputFile.open(url)
        return self._input

    def close(self) -> None:
        """Close the cached input."""
        if self._input is not None:
            self._input.close()
            self._input = None

    def simulate(self, source: InputFile, first: int, last: int) -> list[EventHits]:
        """Simulate entries ``first..last`` of ``source``."""
        numbers, counts, flat = source.read_flat(first, last)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        return [
            simulate_event(
                source.guid,
                int(number),
                {f: values[bounds[i] : bounds[i + 1]] for f, values in flat.items()},
                self.cpu_per_event,
            )
            for i, number in enumerate(numbers)
        ]

    def process_range(self, event_range: dict[str, Any]) -> tuple[str, float, float]:
        """Simulate one range and write ``<eventRangeID>.HITS.root``; return path, CPU, wall."""
        wall0, cpu0 = time.perf_counter(), time.process_time()
        range_id, url, first, last, guid = parse_range(event_range)
        try:
            source = self.open_input(url)
            if guid and guid != source.guid:
                raise PayloadError(f"{url} has GUID {source.guid}, the range expects {guid}")
            events = self.simulate(source, first, last)
        except PayloadError as exc:
            raise RangeError("ERR_ATHENAMP_PROCESS", str(exc)) from exc
        path = write_tree_file(
            os.path.join(self.workdir, f"{range_id}{OUTPUT_SUFFIX}"),
            TREE,
            hits_columns(events),
            {GUID_KEY: source.guid},
        )
        return path, time.process_time() - cpu0, time.perf_counter() - wall0


def parse_range(event_range: dict[str, Any]) -> tuple[str, str, int, int, str]:
    """``(id, input URL, first, last, GUID)`` of a range dict; PFN wins over LFN."""
    try:
        range_id = str(event_range["eventRangeID"])
        url = str(event_range.get("PFN") or event_range["LFN"])
        first, last = int(event_range["startEvent"]), int(event_range["lastEvent"])
    except KeyError as exc:
        raise RangeError("ERR_ATHENAMP_PARSE", f"range lacks the field {exc.args[0]!r}") from None
    except (TypeError, ValueError):
        raise RangeError("ERR_ATHENAMP_PARSE", "startEvent/lastEvent are not integers") from None
    return range_id, url, first, last, str(event_range.get("GUID") or "")


def simulate_worker(cpu_per_event: float, workdir: str, timeout: float | None) -> None:
    """One worker process: connect to the pilot and simulate ranges until none are left."""
    simulator = Simulator(cpu_per_event, workdir)
    try:
        with ChannelClient.from_environment(timeout) as channel:
            serve_ranges(channel, simulator.process_range)
    finally:
        simulator.close()


def run_sequential(
    input_url: str,
    output: str,
    first: int | None = None,
    last: int | None = None,
    cpu_per_event: float = DEFAULT_CPU_PER_EVENT,
    chunk: int = 1000,
) -> tuple[str, int]:
    """Simulate entries ``first..last`` (default: all) of one input into ``output``.

    Returns the absolute output path and the number of events.
    """
    simulator = Simulator(cpu_per_event)
    source = simulator.open_input(input_url)
    try:
        first = 0 if first is None else first
        last = source.n_events - 1 if last is None else last
        if first < 0 or last < first or last >= source.n_events:
            raise PayloadError(
                f"events {first}-{last} are outside {input_url}, which has entries"
                f" 0-{source.n_events - 1}"
            )

        def chunks() -> Iterator[Columns]:
            for start in range(first, last + 1, chunk):
                yield hits_columns(
                    simulator.simulate(source, start, min(start + chunk, last + 1) - 1)
                )

        path = write_tree_file(output, TREE, chunks(), {GUID_KEY: source.guid})
    finally:
        simulator.close()
    return path, last - first + 1
