"""The stage-out thread: ship finished range outputs, verify, report, delete (DESIGN §6).

Outputs arrive as the payload reports them. Every ``zip_time_gap`` seconds the thread
bundles what it holds into one tar, streamed into the queue's ``es_events`` storage as
it is made (falling back to ``es_failover``), or, with ``not_es_to_zip``, sends each
file on its own. It checks what was stored (a bundle's size against the tar's length
from its members, its adler32 being that of the bytes sent; a single file's size and
adler32 against the local file), journals the ``finished`` report (version 1 with
``zipFile``, or version 0 with ``path``/``fsize``/``adler32``) and deletes the local
copies. After ``max_failures`` consecutive failed shipments it gives up: it reports
what it holds (and whatever arrives later) ``failed`` so other consumers process those
ranges, and tells the executor to take no new ranges.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventservice.errors import ChecksumMismatch, StorageError
from eventservice.pilot import codes
from eventservice.pilot.job import Job, QueueConfig, range_events
from eventservice.pilot.reports import ReportJournal

log = logging.getLogger(__name__)


@dataclass
class Output:
    """One range's output waiting to be shipped."""

    event_range: dict[str, Any]
    path: Path
    cpu: float | None = None
    wall: float | None = None

    @property
    def range_id(self) -> str:
        return str(self.event_range["eventRangeID"])

    def finished_entry(self) -> dict[str, Any]:
        """The range's ``finished`` entry, with the payload's CPU and wall time."""
        entry: dict[str, Any] = {"eventRangeID": self.range_id, "eventStatus": "finished"}
        if self.cpu is not None:
            entry["cpuConsumptionTime"] = round(max(0.0, self.cpu), 6)
        if self.wall is not None:
            entry["wallTime"] = round(max(0.0, self.wall), 6)
        return entry


@dataclass
class Batch:
    """Outputs shipped together; keeps its sequence number across retries."""

    sequence: int
    outputs: list[Output] = field(default_factory=list)


def member_name(range_id: str, path: Path) -> str:
    """``<eventRangeID>.<name>``: how a range's output is named in storage and in tars."""
    return path.name if path.name.startswith(f"{range_id}.") else f"{range_id}.{path.name}"


def verify_stored(stored: Any, local: Path) -> None:
    """Raise :class:`ChecksumMismatch` unless the stored object matches the local file."""
    from eventservice.storage import adler32_file

    size, checksum = local.stat().st_size, adler32_file(local)
    if int(stored.size) != size or str(stored.adler32).lower() != checksum:
        raise ChecksumMismatch(
            f"{stored.url}: stored {stored.size} bytes/{stored.adler32}, "
            f"local {size} bytes/{checksum}"
        )


class StageOut:
    """Ships outputs in a background thread; see the module docstring."""

    def __init__(
        self,
        job: Job,
        queue_config: QueueConfig,
        router: Any,
        journal: ReportJournal,
        work_dir: Path,
        *,
        max_failures: int = 3,
        retry_delay: float = 5.0,
        on_give_up: Callable[[], None] = lambda: None,
        on_report: Callable[[], None] = lambda: None,
    ) -> None:
        self.job = job
        self.queue_config = queue_config
        self.router = router
        self.journal = journal
        self.work_dir = work_dir
        self.zip_time_gap = max(0.0, queue_config.zip_time_gap)
        self.zip = not queue_config.not_es_to_zip
        self.max_failures = max(1, max_failures)
        self.retry_delay = retry_delay
        self.on_give_up = on_give_up
        #: Called after each report is journaled, so the executor sends it at once.
        self.on_report = on_report
        self.given_up = False
        self.shipped_ranges = 0
        self.shipped_events = 0
        self.failed_ranges = 0
        #: ``None`` is no output: :meth:`finish` puts it to wake the thread at once.
        self._incoming: queue.Queue[Output | None] = queue.Queue()
        self._batches: list[Batch] = []
        self._collected: list[Output] = []
        self._sequence = 0
        self._failures = 0
        self._next_ship = time.monotonic() + self.zip_time_gap
        self._finishing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stageout", daemon=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        """Start the background thread."""
        self._thread.start()

    def put(
        self,
        event_range: dict[str, Any],
        path: str | Path,
        cpu: float | None = None,
        wall: float | None = None,
    ) -> None:
        """Hand over one finished range's output (with the payload's CPU/wall seconds)."""
        self._incoming.put(Output(event_range, Path(path), cpu, wall))

    def finish(self, timeout: float | None = None) -> None:
        """Ship everything now (no waiting for ``zip_time_gap``) and stop the thread."""
        self._finishing.set()
        self._incoming.put(None)  # else the thread sees the flag only after its 0.2 s wait
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("stage-out did not finish within %s s", timeout)

    # -- thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            finishing = self._finishing.is_set()
            self._drain_incoming(self._wait_time(finishing))
            if self.given_up:
                self._fail_all("storage gave up earlier")
            elif self._due(finishing):
                self._ship_due()
            if finishing and self._incoming.empty() and not self._collected and not self._batches:
                return

    def _wait_time(self, finishing: bool) -> float | None:
        """How long to wait for the next output; ``None``: until one comes.

        Only a bundle being collected or a transfer to retry has a time of its own;
        otherwise the thread sleeps until :meth:`put` or :meth:`finish` wakes it (a
        wake-up costs CPU the payload could use).
        """
        if finishing:
            return 0.0
        if self._collected or self._batches:
            return max(0.0, self._next_ship - time.monotonic())
        return None

    def _drain_incoming(self, timeout: float | None) -> None:
        try:
            if timeout == 0:
                item = self._incoming.get_nowait()
            else:
                item = self._incoming.get(timeout=timeout)
            while True:
                if item is not None:
                    self._collected.append(item)
                item = self._incoming.get_nowait()
        except queue.Empty:
            return

    def _due(self, finishing: bool) -> bool:
        if not self._collected and not self._batches:
            return False
        now = time.monotonic()
        if self._failures and now < self._next_ship and not finishing:
            return False
        if self._failures and finishing and now < self._next_ship:
            time.sleep(min(self.retry_delay, max(0.0, self._next_ship - now)))
        return finishing or self._failures > 0 or not self.zip or now >= self._next_ship

    def _ship_due(self) -> None:
        if self._collected:
            self._sequence += 1
            self._batches.append(Batch(self._sequence, self._collected))
            self._collected = []
        while self._batches:
            batch = self._batches[0]
            try:
                self._ship(batch)
            except (StorageError, OSError) as exc:
                self._failures += 1
                self._next_ship = time.monotonic() + self.retry_delay
                log.warning("stage-out failed (%d/%d): %s", self._failures, self.max_failures, exc)
                if self._failures >= self.max_failures:
                    self.given_up = True
                    log.error("giving up on storage after %d failures", self._failures)
                    self._fail_all(f"stage-out failed {self._failures} times: {exc}")
                    self.on_give_up()
                return
            self._failures = 0
            self._batches.pop(0)
        self._next_ship = time.monotonic() + self.zip_time_gap

    def _ship(self, batch: Batch) -> None:
        missing = [o for o in batch.outputs if not o.path.is_file()]
        for output in missing:
            self._report_failed([output], codes.OUTPUT_MISSING, f"output {output.path} is missing")
            batch.outputs.remove(output)
        if not batch.outputs:
            return
        if self.zip:
            self._ship_bundle(batch)
        else:
            while batch.outputs:
                self._ship_file(batch.outputs[0])
                batch.outputs.pop(0)

    def _upload(self, path: Path, name: str) -> tuple[Any, int | None]:
        stored = self.router.upload(path, name, activity="es_events", fallback=("es_failover",))
        verify_stored(stored, path)
        return stored, self._objstore_id(stored)

    def _objstore_id(self, stored: Any) -> int | None:
        objstore_id = self.queue_config.objstore_id(stored.endpoint)
        if objstore_id is None:
            objstore_id = getattr(self.router, "object_store_ids", {}).get(stored.endpoint)
        return objstore_id

    def _ship_file(self, output: Output) -> None:
        from eventservice.storage import object_name

        name = member_name(output.range_id, output.path)
        stored, objstore_id = self._upload(
            output.path,
            object_name(
                self.job.task_id,
                self.job.jobset_id,
                output.range_id,
                name[len(output.range_id) + 1 :],
            ),
        )
        self._journal(
            [
                {
                    **output.finished_entry(),
                    "objstoreID": objstore_id,
                    "path": stored.url,
                    "fsize": int(stored.size),
                    "adler32": str(stored.adler32).lower(),
                }
            ],
            version=0,
        )
        self._count_shipped([output])
        output.path.unlink(missing_ok=True)
        log.info("shipped %s", stored.url, extra={"range": output.range_id})

    def _ship_bundle(self, batch: Batch) -> None:
        from eventservice.storage import TarStream, bundle_name

        paths = []
        for output in batch.outputs:
            wanted = output.path.with_name(member_name(output.range_id, output.path))
            if wanted != output.path:
                os.replace(output.path, wanted)
                output.path = wanted
            paths.append(wanted)
        name = bundle_name(self.job.task_id, self.job.jobset_id, self.job.panda_id, batch.sequence)
        # Streamed: the tar is made straight into the store, never written locally.
        stored = self.router.upload_bundle(
            paths, name, activity="es_events", fallback=("es_failover",)
        )
        expected = TarStream(paths).size
        if int(stored.size) != expected:
            raise ChecksumMismatch(
                f"{stored.url}: stored {stored.size} bytes, the bundle of {len(paths)} "
                f"output(s) is {expected}"
            )
        objstore_id = self._objstore_id(stored)
        self._journal(
            [
                {
                    "zipFile": {
                        "lfn": name.rsplit("/", 1)[-1],
                        "path": stored.url,
                        "objstoreID": objstore_id,
                        "fsize": int(stored.size),
                        "adler32": str(stored.adler32).lower(),
                        "numEvents": sum(range_events(o.event_range) for o in batch.outputs),
                        "pathConvention": 1000,
                    },
                    "eventRanges": [o.finished_entry() for o in batch.outputs],
                }
            ],
            version=1,
        )
        self._count_shipped(batch.outputs)
        for path in paths:
            path.unlink(missing_ok=True)
        log.info("shipped bundle %s with %d range(s)", stored.url, len(paths))

    def _journal(self, items: list[dict[str, Any]], version: int = 0) -> None:
        self.journal.add_ranges(items, version=version)
        self.on_report()

    def _count_shipped(self, outputs: list[Output]) -> None:
        self.shipped_ranges += len(outputs)
        self.shipped_events += sum(range_events(o.event_range) for o in outputs)

    def _fail_all(self, reason: str) -> None:
        outputs = [o for b in self._batches for o in b.outputs] + self._collected
        self._batches, self._collected = [], []
        if outputs:
            self._report_failed(outputs, codes.STAGEOUT_FAILED, reason)

    def _report_failed(self, outputs: list[Output], code: int, reason: str) -> None:
        self._journal(
            [
                {
                    "eventRangeID": o.range_id,
                    "eventStatus": "failed",
                    "errorCode": code,
                    "errorDiag": reason[:500],
                }
                for o in outputs
            ]
        )
        self.failed_ranges += len(outputs)
        for output in outputs:
            output.path.unlink(missing_ok=True)
            log.warning("output not shipped: %s", reason, extra={"range": output.range_id})
