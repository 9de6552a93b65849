"""Fixtures for the dispatcher tests: a Dispatcher on each backend with a fake clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from eventservice.dispatcher import Dispatcher, DispatcherSettings, lifecycle, ranges
from eventservice.store import Database

T0 = 1_700_000_000.0
INPUT_URL = "/data/in.root"
INPUT_GUID = "11111111-2222-3333-4444-555555555555"


class Clock:
    """A settable clock: lease tests advance it instead of sleeping."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def _clear_process_caches() -> Iterator[None]:
    # The dispatcher caches task parameters and input files per (database URL, ID) for
    # the life of the process. Every PostgreSQL test reuses the same URL on a freshly
    # reset database, where IDs start again at 1, so the caches must not leak between
    # tests (reported: a database recreated under a live process has the same problem).
    lifecycle._params_cache.clear()
    ranges._file_cache.clear()
    yield
    lifecycle._params_cache.clear()
    ranges._file_cache.clear()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_dispatcher(db_url: str, clock: Clock) -> Iterator[Callable[..., Dispatcher]]:
    """``make_dispatcher(**settings)``: a Dispatcher on a fresh, upgraded database."""
    made: list[Database] = []

    def make(**settings: Any) -> Dispatcher:
        database = Database(db_url)
        database.upgrade()
        made.append(database)
        return Dispatcher(database, DispatcherSettings(**settings), clock=clock)

    yield make
    for database in made:
        database.dispose()


@pytest.fixture
def dispatcher(make_dispatcher: Callable[..., Dispatcher]) -> Dispatcher:
    d = make_dispatcher(lease_seconds=60, merge_max_attempts=2)
    d.add_queue("Q", {"corecount": 4})
    return d


def submit(d: Dispatcher, n_events: int = 4, **params: Any) -> int:
    """A task over one input file of ``n_events`` events; ``params`` are task parameters."""
    spec: dict[str, Any] = {
        "name": "t",
        "inputs": [{"url": INPUT_URL, "nEvents": n_events, "guid": INPUT_GUID}],
    }
    for key in ("normalTransformation", "mergeTransformation", "transformation", "outputName"):
        if key in params:
            spec[key] = params.pop(key)
    spec["params"] = {"nEventsPerJob": n_events, **params}
    return d.submit_task(spec)


def start_consumer(d: Dispatcher, queue: str = "Q", node: str = "node") -> dict[str, Any]:
    """getJob + updateJob running; the job must exist."""
    job = d.get_job(queue, node)
    assert job is not None, "expected a job"
    assert d.update_job(job["PandaID"], "running", {}) == "NULL"
    return job


def ranges_of(d: Dispatcher, task_id: int) -> dict[int, dict[str, Any]]:
    """The task's ranges by startEvent."""
    return {r["startEvent"]: r for r in d.event_ranges(task_id=task_id)}


def finished(range_id: str, path: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "eventRangeID": range_id,
        "eventStatus": "finished",
        "path": path or f"file:///os/{range_id}.out",
        "fsize": 100,
        "adler32": "0a0b0c0d",
        "objstoreID": 1,
        **extra,
    }


def report(d: Dispatcher, *entries: dict[str, Any], version: int = 0) -> dict[str, Any]:
    return d.update_event_ranges(list(entries), version)


def snapshot(d: Dispatcher) -> Any:
    """Everything a refused request must leave unchanged (heartbeats aside)."""
    jobs = [{k: v for k, v in j.items() if k != "heartbeatAt"} for j in d.jobs()]
    return (
        d.event_ranges(),
        jobs,
        [t["state"] for t in d.tasks()],
        len(d.history(limit=10_000)),
        d.stats(),
    )


def drain(d: Dispatcher, job: dict[str, Any], n: int = 100) -> list[dict[str, Any]]:
    """Take and finish every range the consumer can get; return the ranges."""
    got = d.get_event_ranges(job["PandaID"], job["jobsetID"], job["taskID"], n)
    if got:
        result = report(d, *(finished(r["eventRangeID"]) for r in got))
        assert result["Returns"] == [True] * len(got), result
    return got
