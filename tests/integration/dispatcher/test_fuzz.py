"""Property test: random bodies for every PanDA method and the /api/v1 POSTs never get a 5xx.

In-process (TestClient), SQLite; one dispatcher per test so examples share a database
that already holds a task, a queue, a running consumer and some sent ranges.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventservice.dispatcher import Dispatcher, DispatcherSettings
from eventservice.server.app import create_app
from eventservice.store import Database

from .conftest import submit

EXAMPLES = 200
JSON_TYPE = {"Content-Type": "application/json"}
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)

PANDA_METHODS = [
    "getJob",
    "updateJob",
    "getEventRanges",
    "updateEventRanges",
    "updateEventRange",
    "checkEventsAvailability",
    "getStatus",
]
KEYS = [
    "siteName", "node", "nJobs", "jobId", "state", "pandaID", "jobsetID", "taskID", "nRanges",
    "eventRanges", "version", "eventRangeID", "eventStatus", "errorCode", "errorDiag", "path",
    "fsize", "adler32", "objstoreID", "outputFiles", "nEvents", "pilotErrorCode", "zipFile",
    "lfn", "numEvents", "cpuConsumptionTime", "wallTime", "name", "inputs", "params", "url",
    "nEventsPerJob", "nEventsPerWorker", "esFraction", "nEsConsumers", "corecount", "jobseed",
    "pledgedcpu", "storages", "es_events", "zip_time_gap", "guid", "outputName", "command",
]  # fmt: skip
WORDS = [
    "Q", "running", "finished", "failed", "fatal", "starting", "1", "0", "-1", "1-1-1-0-1",
    "1-1-1-1-1", "1-2-1-0-1", "True", "", "null", "es", "all", "file:///x", "abc", "ad:1",
    "0a0b0c0d", "[]", "{}", "1e400", "NaN", "9" * 30,
]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(WORDS)
    | st.text(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=12,
)
json_bodies = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), values, max_size=8)
form_bodies = st.dictionaries(
    st.sampled_from(KEYS), st.sampled_from(WORDS) | st.text(max_size=30), max_size=8
)


def _report_entry() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "eventRangeID": st.sampled_from(["1-1-1-0-1", "1-1-1-1-1", "1-1-1-2-1", "1-2-1-3-1"])
            | st.text(max_size=12),
            "eventStatus": st.sampled_from(["running", "finished", "failed", "fatal", "x"])
            | values,
        },
        optional={k: values for k in ("errorCode", "path", "fsize", "adler32", "objstoreID")},
    )


report_batches = st.lists(_report_entry(), max_size=6) | st.lists(
    st.fixed_dictionaries(
        {"eventRanges": st.lists(_report_entry(), max_size=3)},
        optional={"zipFile": st.dictionaries(st.sampled_from(KEYS), values, max_size=6) | values},
    ),
    max_size=3,
)


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> TestClient:
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.sqlite"
    database = Database(f"sqlite:///{path}")
    database.upgrade()
    d = Dispatcher(database, DispatcherSettings(lease_seconds=3600, max_batch=50))
    d.add_queue("Q", {})
    submit(d, 50, nEsConsumers=3)
    job = d.get_job("Q", "n")
    d.update_job(job["PandaID"], "running", {})
    d.get_event_ranges(job["PandaID"], None, None, 3)
    with TestClient(create_app(d, reaper=False), raise_server_exceptions=False) as c:
        yield c
    database.dispose()


def _send(client: TestClient, path: str, encoding: str, body: Any, accept: bool) -> None:
    headers = {"Accept": "application/json"} if accept else {}
    if encoding == "form":
        answer = client.post(path, data=body, headers=headers)
    else:
        raw = json.dumps(body).encode()
        if encoding == "gzip":
            raw = gzip.compress(raw)
        answer = client.post(
            path, content=raw, headers={**headers, "Content-Type": "application/json"}
        )
    assert answer.status_code < 500, (path, body, answer.status_code, answer.text[:300])


@pytest.mark.parametrize("method", PANDA_METHODS)
@FUZZ
@given(
    data=st.data(),
    encoding=st.sampled_from(["form", "json", "gzip"]),
    accept=st.booleans(),
)
def test_panda_methods_never_5xx(client, method: str, data, encoding: str, accept: bool) -> None:
    if encoding == "form":
        body = data.draw(form_bodies)
        if method == "updateEventRanges" and data.draw(st.booleans()):
            body["eventRanges"] = json.dumps(data.draw(report_batches))
    else:
        body = data.draw(json_bodies)
        if method == "updateEventRanges" and data.draw(st.booleans()):
            batch = data.draw(report_batches)
            body["eventRanges"] = batch if data.draw(st.booleans()) else json.dumps(batch)
    _send(client, f"/server/panda/{method}", encoding, body, accept)


# A task's inputs must not name anything the reader would go and fetch over the network.
local_url = st.text(max_size=20).filter(lambda u: "://" not in u and ":" not in u)
inputs = st.lists(
    st.fixed_dictionaries(
        {"url": local_url, "nEvents": st.integers(min_value=-2, max_value=30) | values},
        optional={"guid": values, "lfn": values, "scope": values, "fsize": values},
    )
    | local_url,
    max_size=3,
)
task_bodies = st.fixed_dictionaries(
    {},
    optional={
        "inputs": inputs | values,
        "name": values,
        "params": st.dictionaries(st.sampled_from(KEYS), values, max_size=4) | values,
        "nEventsPerJob": st.integers(min_value=-1, max_value=40) | values,
        "nEventsPerWorker": st.integers(min_value=-1, max_value=10) | values,
        "esFraction": values,
        "nEsConsumers": st.integers(min_value=-1, max_value=5) | values,
        "outputName": st.sampled_from(["{taskID}.{jobsetID}", "{x}", "{", "o"]) | values,
        "transformation": values,
    },
)
queue_bodies = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=12) | values,
        "corecount": values,
        "jobseed": st.sampled_from(["es", "std", "all", "eshigh", "x"]) | values,
        "pledgedcpu": values,
        "zip_time_gap": values,
        "storages": st.dictionaries(
            st.sampled_from(["es_events", "pw", "pl", "x"]), values, max_size=3
        )
        | values,
        "heartbeat": values,
        "bogus": values,
    },
)


@FUZZ
@given(body=task_bodies)
def test_post_tasks_never_5xx(client, body: dict[str, Any]) -> None:
    answer = client.post("/api/v1/tasks", content=json.dumps(body), headers=JSON_TYPE)
    assert answer.status_code < 500, (body, answer.status_code, answer.text[:300])
    assert answer.status_code in (201, 400, 404, 409, 422), answer.text


@FUZZ
@given(body=queue_bodies, replace=st.booleans())
def test_post_queues_never_5xx(client, body: dict[str, Any], replace: bool) -> None:
    answer = client.post(
        "/api/v1/queues",
        content=json.dumps(body),
        headers=JSON_TYPE,
        params={"replace": str(replace).lower()},
    )
    assert answer.status_code < 500, (body, answer.status_code, answer.text[:300])
    assert answer.status_code in (201, 400, 404, 409, 422), answer.text
