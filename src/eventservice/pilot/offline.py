"""Offline mode: run one job with ranges from files, no dispatcher (DESIGN §6).

``job.json`` holds the ``getJob`` fields (optionally a ``"queue"`` object shaped like
``GET /api/v1/queues/{name}``); ``ranges.json`` a list of range dicts as
``getEventRanges`` returns them. :class:`OfflineClient` plays the dispatcher: it hands
out the job once and the ranges in order, and records every report. Storages default
to ``<workdir>/offline-store`` so a payload can be tried on a laptop.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from eventservice.client.panda import RangeUpdateResult
from eventservice.errors import InvalidInput

log = logging.getLogger(__name__)

OFFLINE_QUEUE = "OFFLINE"
REPORT_FILE = "offline-report.json"
FINAL_RANGE_STATUSES = frozenset({"finished", "failed", "fatal"})


def _load_json(path: Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"cannot read {what} {path}: {exc}") from None


class OfflineClient:
    """A stand-in dispatcher fed from files; same methods as ``PandaClient``."""

    def __init__(
        self,
        job: dict[str, Any],
        ranges: list[dict[str, Any]],
        workdir: Path,
        queue: dict[str, Any] | None = None,
    ) -> None:
        self._job: dict[str, Any] | None = dict(job)
        self._ranges = list(ranges)
        self._lock = threading.Lock()
        self.workdir = Path(workdir)
        self.range_status: dict[str, dict[str, Any]] = {}
        self.job_updates: list[dict[str, Any]] = []
        store = (self.workdir / "offline-store").resolve()
        self.queue = {
            "name": OFFLINE_QUEUE,
            "corecount": int(job.get("coreCount") or 1) or 1,
            "zip_time_gap": 0,
            "effective_zip_time_gap": 0,
            "not_es_to_zip": False,
            "maxtime": 0,
            "heartbeat": 60,
            "storages": {
                a: [f"file://{store}"]
                for a in ("es_events", "es_failover", "es_events_read", "pw", "pl")
            },
            "objectStores": {f"file://{store}": 1},
        } | (queue or {})

    @classmethod
    def from_files(cls, job_file: Path, ranges_file: Path | None, workdir: Path) -> OfflineClient:
        """Read ``job.json`` and, for ES jobs, ``ranges.json``."""
        job = _load_json(job_file, "job file")
        if not isinstance(job, dict) or "PandaID" not in job:
            raise InvalidInput(f"{job_file}: a job must be a JSON object with PandaID")
        queue = job.pop("queue", None)
        ranges: Any = []
        if ranges_file is not None:
            ranges = _load_json(ranges_file, "ranges file")
            if isinstance(ranges, dict):
                ranges = ranges.get("eventRanges", [])
            if not isinstance(ranges, list) or not all(
                isinstance(r, dict) and "eventRangeID" in r for r in ranges
            ):
                raise InvalidInput(f"{ranges_file}: expected a list of ranges with eventRangeID")
        elif str(job.get("eventService", "")).lower() == "true":
            raise InvalidInput("an event-service job needs --ranges-file")
        return cls(job, ranges, workdir, queue)

    def get_queue(self, name: str) -> dict[str, Any]:
        return dict(self.queue)

    def get_job(self, site_name: str, **fields: Any) -> dict[str, Any] | None:
        with self._lock:
            job, self._job = self._job, None
        return job

    def get_event_ranges(
        self, panda_id: Any, jobset_id: Any, task_id: Any, n_ranges: int
    ) -> list[dict[str, Any]]:
        with self._lock:
            batch, self._ranges = self._ranges[:n_ranges], self._ranges[n_ranges:]
        return [dict(r) for r in batch]

    def update_event_ranges(
        self, reports: list[dict[str, Any]], version: int = 0
    ) -> RangeUpdateResult:
        entries = []
        for item in reports:
            if version == 1:
                zip_file = item.get("zipFile") or {}
                entries += [dict(r, zipFile=zip_file.get("path")) for r in item["eventRanges"]]
            else:
                entries.append(dict(item))
        with self._lock:
            for entry in entries:
                current = self.range_status.get(entry["eventRangeID"], {})
                if current.get("eventStatus") in FINAL_RANGE_STATUSES:
                    continue
                self.range_status[entry["eventRangeID"]] = entry
            self._save()
        return RangeUpdateResult(returns=[True] * len(entries))

    def update_job(self, panda_id: Any, state: str, **fields: Any) -> str | None:
        with self._lock:
            self.job_updates.append({"PandaID": panda_id, "state": state, **fields})
            self._save()
        return None

    def check_events_availability(self, *args: Any) -> int:
        return len(self._ranges)

    def final_state(self) -> str | None:
        """The job's last reported state."""
        return self.job_updates[-1]["state"] if self.job_updates else None

    def counts(self) -> dict[str, int]:
        """How many ranges ended in each status."""
        result: dict[str, int] = {}
        for entry in self.range_status.values():
            result[entry["eventStatus"]] = result.get(entry["eventStatus"], 0) + 1
        return result

    def _save(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        report = {
            "job": self.job_updates[-1] if self.job_updates else None,
            "counts": self.counts(),
            "ranges": self.range_status,
        }
        (self.workdir / REPORT_FILE).write_text(json.dumps(report, indent=1, default=str))
