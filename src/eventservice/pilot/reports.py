"""The pending-reports journal: reports live on disk until the dispatcher acknowledges them.

Every report that matters (a range finished, failed or fatal; a job's final state) is
written to ``<workdir>/pending-reports/<sequence>.json`` *before* it is sent and removed
only once the dispatcher answered. A pilot that loses its dispatcher, or is killed and
restarted on the same workdir, sends what is left, in order. Files are written with an
atomic rename, so a crash leaves either the whole report or nothing. The dispatcher
answers ``true`` to a repeated report of a state a range already has, so resending after
a lost answer is safe.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from eventservice.errors import DispatcherUnavailable, EventServiceError

log = logging.getLogger(__name__)

#: Most range reports sent in one ``updateEventRanges`` call.
MAX_BATCH = 500


class ReportSink(Protocol):
    """The part of :class:`~eventservice.client.panda.PandaClient` the journal needs."""

    def update_event_ranges(self, reports: list[dict[str, Any]], version: int = 0) -> Any: ...

    def update_job(self, panda_id: int | str, state: str, **fields: Any) -> str | None: ...


@dataclass
class FlushOutcome:
    """What one :meth:`ReportJournal.flush` achieved."""

    sent: int = 0
    remaining: int = 0
    applied: list[str] = field(default_factory=list)
    refused: list[tuple[str, Any]] = field(default_factory=list)
    commands: dict[str, str | None] = field(default_factory=dict)
    unavailable: bool = False


def _range_ids(entry: dict[str, Any]) -> list[str]:
    """Range IDs of a ranges entry in the order the dispatcher answers them."""
    ids: list[str] = []
    for item in entry["items"]:
        if entry["version"] == 1:
            ids.extend(str(r.get("eventRangeID")) for r in item.get("eventRanges", []))
        else:
            ids.append(str(item.get("eventRangeID")))
    return ids


class ReportJournal:
    """Durable, ordered queue of reports for the dispatcher; thread-safe."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        existing = [int(p.stem) for p in self.directory.glob("*.json") if p.stem.isdigit()]
        self._next = max(existing, default=0) + 1
        self._unsent = bool(existing)

    def _write(self, entry: dict[str, Any]) -> Path:
        with self._lock:
            sequence = self._next
            self._next += 1
        path = self.directory / f"{sequence:012d}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(entry))
        os.replace(tmp, path)
        self._unsent = True
        return path

    @property
    def unsent(self) -> bool:
        """Whether reports were added (or left over) since the last complete flush."""
        return self._unsent

    def add_ranges(self, items: list[dict[str, Any]], version: int = 0) -> Path | None:
        """Journal an ``updateEventRanges`` report (version 0 items or version 1 zips)."""
        if not items:
            return None
        return self._write({"kind": "ranges", "version": version, "items": items})

    def add_job(self, panda_id: int, state: str, fields: dict[str, Any]) -> Path:
        """Journal an ``updateJob`` (a job's final state)."""
        return self._write({"kind": "job", "panda_id": panda_id, "state": state, "fields": fields})

    def pending(self) -> list[tuple[Path, dict[str, Any]]]:
        """Reports not yet acknowledged, oldest first."""
        result = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                result.append((path, json.loads(path.read_text())))
            except (OSError, json.JSONDecodeError) as exc:
                log.error("unreadable pending report %s set aside: %s", path.name, exc)
                path.rename(path.with_suffix(".bad"))
        return result

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("*.json"))

    def flush(
        self,
        sink: ReportSink,
        on_job_command: Callable[[int, str | None], None] | None = None,
    ) -> FlushOutcome:
        """Send every pending report in order; stop at the first unreachable dispatcher."""
        outcome = FlushOutcome()
        with self._flush_lock:
            self._unsent = False
            entries = self.pending()
            index = 0
            while index < len(entries):
                path, entry = entries[index]
                try:
                    if entry.get("kind") == "job":
                        command = sink.update_job(
                            entry["panda_id"], entry["state"], **entry["fields"]
                        )
                        if on_job_command is not None:
                            on_job_command(int(entry["panda_id"]), command)
                        path.unlink(missing_ok=True)
                        outcome.sent += 1
                        index += 1
                        continue
                    batch = [(path, entry)]
                    count = len(entry["items"])
                    seen = set(_range_ids(entry))
                    while index + len(batch) < len(entries):
                        next_path, nxt = entries[index + len(batch)]
                        same = nxt.get("kind") == "ranges" and nxt["version"] == entry["version"]
                        if not same or count + len(nxt["items"]) > MAX_BATCH:
                            break
                        ids = set(_range_ids(nxt))
                        if ids & seen:  # the dispatcher refuses a batch naming a range twice
                            break
                        seen |= ids
                        batch.append((next_path, nxt))
                        count += len(nxt["items"])
                    self._send_ranges(sink, batch, outcome)
                    index += len(batch)
                except DispatcherUnavailable as exc:
                    log.warning(
                        "dispatcher unavailable, %d report(s) kept on disk: %s",
                        len(entries) - index,
                        exc,
                    )
                    outcome.unavailable = True
                    break
                except EventServiceError as exc:
                    # Refused as a whole (malformed?): resending cannot help; keep it aside.
                    log.error("dispatcher refused report %s: %s", path.name, exc)
                    path.rename(path.with_suffix(".refused"))
                    index += 1
            outcome.remaining = len(entries) - index
            if outcome.unavailable:
                self._unsent = True
        return outcome

    def _send_ranges(
        self, sink: ReportSink, batch: list[tuple[Path, dict[str, Any]]], outcome: FlushOutcome
    ) -> None:
        version = batch[0][1]["version"]
        items = [item for _, entry in batch for item in entry["items"]]
        ids = [rid for _, entry in batch for rid in _range_ids(entry)]
        result = sink.update_event_ranges(items, version=version)
        for i, range_id in enumerate(ids):
            ok = result.returns[i] if i < len(result.returns) else None
            if ok is False:
                reason = result.errors[i] if i < len(result.errors) else None
                log.warning("dispatcher refused report: %s", reason, extra={"range": range_id})
                outcome.refused.append((range_id, reason))
            else:
                outcome.applied.append(range_id)
        outcome.commands.update(result.commands)
        for path, _ in batch:
            path.unlink(missing_ok=True)
        outcome.sent += len(batch)
