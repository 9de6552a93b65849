"""Malformed input: StatusCode 50/80 on PanDA paths, 4xx on /api/v1, and nothing changes."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from eventservice.dispatcher import Dispatcher
from eventservice.server.app import create_app

from .conftest import finished, start_consumer, submit

JSON = {"Accept": "application/json"}


@pytest.fixture
def setup(make_dispatcher) -> Iterator[tuple[TestClient, Dispatcher, dict[str, Any]]]:
    d = make_dispatcher(lease_seconds=60, max_batch=5)
    d.add_queue("Q", {})
    task_id = submit(d, 6, nEsConsumers=2)
    job = start_consumer(d)
    got = d.get_event_ranges(job["PandaID"], None, None, 3)
    with TestClient(create_app(d, reaper=False)) as client:
        yield client, d, {"task": task_id, "job": job, "ranges": got}


def state(client: TestClient) -> Any:
    stats = client.get("/api/v1/stats").json()
    events = client.get("/api/v1/events").json()
    jobs = [
        {k: v for k, v in j.items() if k != "heartbeatAt"}
        for j in client.get("/api/v1/jobs").json()
    ]
    history = len(client.get("/api/v1/history", params={"limit": 10_000}).json())
    return stats, events, jobs, history


def call(client: TestClient, method: str, **kw: Any) -> dict[str, Any]:
    answer = client.post(f"/server/panda/{method}", headers=JSON, **kw)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _ranges(entries: Any, version: int = 0) -> dict[str, Any]:
    return {"data": {"eventRanges": json.dumps(entries), "version": str(version)}}


def _bad_requests(ctx: dict[str, Any]) -> list[tuple[str, dict[str, Any], int]]:
    pid = ctx["job"]["PandaID"]
    rid = ctx["ranges"][0]["eventRangeID"]
    rid2 = ctx["ranges"][1]["eventRangeID"]
    ok_entry = finished(rid)
    return [
        # missing keys -> 80
        ("getJob", {"data": {"node": "n"}}, 80),
        ("updateJob", {"data": {"state": "running"}}, 80),
        ("updateJob", {"data": {"jobId": str(pid)}}, 80),
        ("getEventRanges", {"data": {"nRanges": "2"}}, 80),
        ("updateEventRanges", {"data": {"version": "0"}}, 80),
        ("updateEventRange", {"data": {"eventStatus": "finished"}}, 80),
        ("checkEventsAvailability", {"data": {}}, 80),
        # wrong types / values -> 50
        ("updateJob", {"data": {"jobId": "abc", "state": "running"}}, 50),
        ("updateJob", {"json": {"jobId": [pid], "state": "running"}}, 50),
        ("updateJob", {"json": {"jobId": pid, "state": {"x": 1}}}, 50),
        ("updateJob", {"json": {"jobId": 1.5, "state": "running"}}, 50),
        ("updateJob", {"json": {"jobId": True, "state": "running"}}, 50),
        ("updateJob", {"data": {"jobId": str(pid), "state": "exploded"}}, 50),
        ("updateJob", {"data": {"jobId": str(pid), "state": "finished", "outputFiles": "[1]"}}, 50),
        ("updateJob", {"data": {"jobId": "999999", "state": "running"}}, 50),  # unknown PandaID
        ("getJob", {"data": {"siteName": "NOPE"}}, 50),  # unknown queue
        ("getJob", {"data": {"siteName": "Q", "nJobs": "0"}}, 50),
        ("getJob", {"data": {"siteName": "Q", "nJobs": "101"}}, 50),
        ("getEventRanges", {"data": {"pandaID": "999999"}}, 50),
        ("getEventRanges", {"data": {"pandaID": str(pid), "nRanges": "0"}}, 50),
        ("getEventRanges", {"data": {"pandaID": str(pid), "nRanges": "-3"}}, 50),
        ("getEventRanges", {"data": {"pandaID": str(pid), "nRanges": "1001"}}, 50),
        ("getEventRanges", {"data": {"pandaID": str(pid), "nRanges": "two"}}, 50),
        ("getEventRanges", {"data": {"pandaID": str(pid), "jobsetID": "424242"}}, 50),
        ("getEventRanges", {"data": {"pandaID": str(pid), "taskID": "424242"}}, 50),
        ("checkEventsAvailability", {"data": {"pandaID": "x"}}, 50),
        ("updateEventRanges", {"data": {"eventRanges": "[not json"}}, 50),
        ("updateEventRanges", _ranges({"eventRangeID": rid}), 50),
        ("updateEventRanges", _ranges([ok_entry], version=2), 50),
        ("updateEventRanges", _ranges([ok_entry, {"eventStatus": "finished"}]), 50),
        ("updateEventRanges", _ranges([ok_entry, {"eventRangeID": rid2}]), 50),
        (
            "updateEventRanges",
            _ranges([ok_entry, {"eventRangeID": "x-y", "eventStatus": "finished"}]),
            50,
        ),
        (
            "updateEventRanges",
            _ranges([ok_entry, {"eventRangeID": rid2, "eventStatus": "done"}]),
            50,
        ),
        (
            "updateEventRanges",
            _ranges([ok_entry, {"eventRangeID": rid2, "eventStatus": ["failed"]}]),
            50,
        ),
        (
            "updateEventRanges",
            _ranges([ok_entry, {"eventRangeID": rid2, "eventStatus": "failed", "errorCode": "E"}]),
            50,
        ),
        ("updateEventRanges", _ranges([{**ok_entry, "adler32": "xyz"}]), 50),
        ("updateEventRanges", _ranges([{**ok_entry, "fsize": -1}]), 50),
        ("updateEventRanges", _ranges([{**ok_entry, "path": 3}]), 50),
        ("updateEventRanges", _ranges([ok_entry, "x"]), 50),
        ("updateEventRanges", _ranges([ok_entry, finished(rid)]), 50),  # duplicate ID
        (
            "updateEventRanges",
            _ranges([finished(r["eventRangeID"]) for r in ctx["ranges"]] * 2),
            50,
        ),
        (
            "updateEventRanges",
            _ranges([{"eventRangeID": f"1-1-1-{i}-1", "eventStatus": "running"} for i in range(6)]),
            50,
        ),  # over max_batch 5
        (
            "updateEventRanges",
            _ranges(
                [
                    {
                        "zipFile": {"lfn": "z"},
                        "eventRanges": [{"eventRangeID": rid, "eventStatus": "finished"}],
                    }
                ],
                version=1,
            ),
            50,
        ),
        (
            "updateEventRanges",
            _ranges([{"eventRangeID": rid, "eventStatus": "finished"}], version=1),
            50,
        ),
        (
            "updateEventRanges",
            _ranges(
                [
                    {
                        "zipFile": [1],
                        "eventRanges": [{"eventRangeID": rid, "eventStatus": "finished"}],
                    }
                ],
                version=1,
            ),
            50,
        ),
        # malformed bodies
        (
            "updateJob",
            {"content": b"{not json", "headers": {**JSON, "Content-Type": "application/json"}},
            50,
        ),
        (
            "updateJob",
            {"content": b"[1, 2]", "headers": {**JSON, "Content-Type": "application/json"}},
            50,
        ),
        ("updateJob", {"content": b"\x1f\x8b\x08garbage", "headers": JSON}, 50),
        ("updateJob", {"content": gzip.compress(b"\xff\xfe"), "headers": JSON}, 50),
        ("updateJob", {"content": b"jobId=%FF%FE&state=\xff", "headers": JSON}, 50),
    ]


def test_bad_panda_requests_change_nothing(setup) -> None:
    client, _d, ctx = setup
    before = state(client)
    for method, kw, code in _bad_requests(ctx):
        answer = client.post(f"/server/panda/{method}", **({"headers": JSON} | kw))
        assert answer.status_code == 200, (method, kw, answer.text)
        body = answer.json()
        assert body["StatusCode"] == code, (method, kw, body)
        assert isinstance(body["errorDialog"], str) and body["errorDialog"], body
        assert state(client) == before, (method, kw)


def test_bad_panda_request_urlencoded_answer(setup) -> None:
    client, _d, _ctx = setup
    answer = client.post("/server/panda/getEventRanges", data={"nRanges": "1"})
    assert answer.status_code == 200
    assert answer.text.startswith("StatusCode=80&errorDialog=")


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/api/v1/tasks", {}, 400),
        ("POST", "/api/v1/tasks", {"inputs": [{"url": "/x", "nEvents": 0}]}, 400),
        ("POST", "/api/v1/tasks", {"inputs": ["/x"], "bogus": 1}, 400),
        ("POST", "/api/v1/tasks", {"inputs": ["/nonexistent/file.root"]}, 400),  # unreadable
        ("POST", "/api/v1/tasks", {"inputs": [{"url": "/x", "nEvents": 5}], "esFraction": 3}, 400),
        ("POST", "/api/v1/tasks", {"inputs": [{"url": "/x", "nEvents": 5}], "params": [1]}, 400),
        (
            "POST",
            "/api/v1/tasks",
            {"inputs": [{"url": "/x", "nEvents": 5}], "nEsConsumers": None},
            400,
        ),
        ("POST", "/api/v1/tasks", [1, 2], 422),
        ("POST", "/api/v1/queues", {"corecount": 1}, 400),
        ("POST", "/api/v1/queues", {"name": 5}, 400),
        ("POST", "/api/v1/queues", {"name": ""}, 400),
        ("POST", "/api/v1/queues", {"name": "a/b"}, 400),
        ("POST", "/api/v1/queues", {"name": "x" * 101}, 400),
        ("POST", "/api/v1/queues", {"name": "Q"}, 409),  # exists
        ("POST", "/api/v1/queues", {"name": "N", "jobseed": "x"}, 400),
        ("POST", "/api/v1/queues", {"name": "N", "storages": {"nope": ["file:///a"]}}, 400),
        ("POST", "/api/v1/queues", {"name": "N", "corecount": None}, 400),
        ("GET", "/api/v1/tasks/424242", None, 404),
        ("GET", "/api/v1/tasks/abc", None, 422),
        ("GET", "/api/v1/jobs/424242", None, 404),
        ("GET", "/api/v1/queues/NOPE", None, 404),
        ("GET", "/api/v1/jobs?limit=0", None, 400),
        ("GET", "/api/v1/events?offset=-1", None, 400),
        ("GET", "/api/v1/history?limit=100000", None, 400),
        ("POST", "/api/v1/jobs/424242/command", {"command": "tobekilled"}, 404),
        ("POST", "/api/v1/jobs/1/command", {"command": "explode"}, 400),
        ("POST", "/api/v1/jobs/1/command", {}, 422),
    ],
)
def test_bad_api_requests(setup, method: str, path: str, body: Any, status: int) -> None:
    client, _d, _ctx = setup
    before = state(client)
    answer = client.request(method, path, json=body)
    assert answer.status_code == status, answer.text
    assert answer.json()["detail"]
    assert state(client) == before


def test_api_malformed_json_body(setup) -> None:
    client, _d, _ctx = setup
    before = state(client)
    answer = client.post(
        "/api/v1/tasks", content=b"{oops", headers={"Content-Type": "application/json"}
    )
    assert 400 <= answer.status_code < 500
    assert state(client) == before


def _long_and_nul_values(ctx: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Values within what the validators let through but outside the column types."""
    rid = ctx["ranges"][0]["eventRangeID"]
    pid = ctx["job"]["PandaID"]
    return [
        ("updateEventRanges", _ranges([{**finished(rid), "objstoreID": "o" * 500}])),
        (
            "updateEventRanges",
            _ranges([{"eventRangeID": rid, "eventStatus": "failed", "errorCode": 2**40}]),
        ),
        (
            "updateEventRanges",
            _ranges([{"eventRangeID": rid, "eventStatus": "failed", "errorDiag": "a\x00b"}]),
        ),
        ("updateEventRanges", _ranges([{**finished(rid), "fsize": 2**70}])),
        (
            "updateEventRanges",
            _ranges(
                [
                    {
                        "zipFile": {"lfn": "z" * 1000, "fsize": 1, "adler32": "1"},
                        "eventRanges": [{"eventRangeID": rid, "eventStatus": "finished"}],
                    }
                ],
                version=1,
            ),
        ),
        (
            "updateEventRanges",
            _ranges([{"eventRangeID": f"{2**70}-1-1-1-1", "eventStatus": "running"}]),
        ),
        ("updateJob", {"data": {"jobId": str(2**70), "state": "running"}}),
        (
            "updateJob",
            {"data": {"jobId": str(pid), "state": "running", "pilotErrorCode": str(2**40)}},
        ),
        ("getEventRanges", {"data": {"pandaID": str(2**70)}}),
        ("getJob", {"data": {"siteName": "Q\x00"}}),
    ]


def test_out_of_range_values_are_not_5xx(setup) -> None:
    """Validated-looking values the columns cannot hold must be refused, not 500/503."""
    client, _d, ctx = setup
    problems = []
    for method, kw in _long_and_nul_values(ctx):
        answer = client.post(f"/server/panda/{method}", **({"headers": JSON} | kw))
        if answer.status_code >= 500:
            problems.append((method, str(kw)[:120], answer.status_code))
    assert problems == []


def test_api_out_of_range_values_are_not_5xx(setup) -> None:
    client, _d, _ctx = setup
    problems = []
    for method, path, body in [
        ("GET", f"/api/v1/tasks/{2**70}", None),
        ("GET", f"/api/v1/jobs/{2**70}", None),
        ("POST", "/api/v1/queues", {"name": "bad\x00name"}),
        (
            "POST",
            "/api/v1/tasks",
            {"name": "n\x00", "inputs": [{"url": "/x", "nEvents": 1, "guid": "g"}]},
        ),
        ("POST", "/api/v1/tasks", {"inputs": [{"url": "/x", "nEvents": 1, "guid": "g" * 100}]}),
    ]:
        answer = client.request(method, path, json=body)
        if answer.status_code >= 500:
            problems.append((path, str(body)[:80], answer.status_code))
    assert problems == []
