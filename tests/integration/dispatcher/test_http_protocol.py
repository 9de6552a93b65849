"""The PanDA protocol over real HTTP against ``eventservice server`` (DESIGN §5)."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from .http_server import running_server

JSON = {"Accept": "application/json"}
GUID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


@pytest.fixture
def server(db_url: str, tmp_path) -> Iterator[str]:
    with running_server(db_url, 2, tmp_path / "server.log") as base:
        yield base


def api(client: httpx.Client, method: str, path: str, **kw: Any) -> Any:
    answer = client.request(method, f"/api/v1{path}", **kw)
    assert answer.status_code < 300, answer.text
    return answer.json()


def panda(client: httpx.Client, method: str, data: dict[str, Any]) -> dict[str, Any]:
    """Form-encoded request, JSON answer."""
    answer = client.post(f"/server/panda/{method}", data=data, headers=JSON)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    return answer.json()


def _setup(client: httpx.Client, n_events: int = 3, **params: Any) -> int:
    api(client, "POST", "/queues", json={"name": "Q", "corecount": 2, "maxtime": 3600})
    task = api(
        client,
        "POST",
        "/tasks",
        json={
            "name": "replay",
            "inputs": [
                {
                    "url": "root://eos/in.root",
                    "lfn": "in.root",
                    "scope": "mc",
                    "guid": GUID,
                    "nEvents": n_events,
                    "fsize": 1234,
                    "checksum": "ad:0000abcd",
                }
            ],
            "transformation": "run-es-payload",
            "params": {"nEventsPerJob": n_events, **params},
        },
    )
    return task["taskID"]


def test_protocol_replay(server: str) -> None:
    with httpx.Client(base_url=server, timeout=30) as client:
        task_id = _setup(client)
        # getJob: form body, no Accept: application/json -> urlencoded answer
        raw = client.post(
            "/server/panda/getJob",
            data={
                "siteName": "Q",
                "computingElement": "ce1",
                "prodSourceLabel": "managed",
                "node": "wn01",
                "mem": "2000",
                "diskSpace": "10000",
                "cpu": "2000",
            },
        )
        assert raw.status_code == 200
        assert raw.headers["content-type"].startswith("application/x-www-form-urlencoded")
        job = {k: v[0] for k, v in parse_qs(raw.text, keep_blank_values=True).items()}
        jobs = api(client, "GET", f"/jobs?task_id={task_id}")
        assert len(jobs) == 1
        pid = jobs[0]["PandaID"]
        jobset = jobs[0]["jobsetID"]
        assert job == {
            "StatusCode": "0",
            "PandaID": str(pid),
            "jobsetID": str(jobset),
            "taskID": str(task_id),
            "attemptNr": "1",
            "coreCount": "2",
            "maxWalltime": "3600",
            "jobPars": "",
            "prodSourceLabel": "managed",
            "outFiles": f"HITS.{task_id}._{jobset:06d}.root",
            "scopeOut": "mc",
            "scopeLog": "mc",
            "logFile": f"{task_id}.{pid}.log.tgz",
            "destinationSE": "Q",
            "eventService": "True",
            "cloneJob": "",
            "nEventsPerWorker": "1",
            "firstEvent": "0",
            "lastEvent": "2",
            "inFiles": "in.root",
            "inFilesURL": "root://eos/in.root",
            "GUID": GUID,
            "scopeIn": "mc",
            "fsize": "1234",
            "checksum": "ad:0000abcd",
            "realDatasetsIn": "",
            "transformation": "run-es-payload",
        }
        assert jobs[0]["state"] == "sent" and jobs[0]["node"] == "wn01"
        # no other job for this queue
        assert panda(client, "getJob", {"siteName": "Q", "node": "wn02"}) == {"StatusCode": 20}

        ok = {"StatusCode": 0, "command": "NULL"}
        assert panda(client, "updateJob", {"jobId": str(pid), "state": "starting"}) == ok
        assert panda(client, "updateJob", {"jobId": str(pid), "state": "running"}) == ok
        file_id = api(client, "GET", f"/events?task_id={task_id}")[0]["fileID"]

        def rng(start: int, attempt: int) -> dict[str, Any]:
            return {
                "eventRangeID": f"{task_id}-{pid}-{file_id}-{start}-{attempt}",
                "startEvent": start,
                "lastEvent": start,
                "LFN": "in.root",
                "GUID": GUID,
                "scope": "mc",
            }

        ids = {"pandaID": str(pid), "jobsetID": str(jobset), "taskID": str(task_id)}
        assert panda(client, "getEventRanges", {**ids, "nRanges": "2"}) == {
            "StatusCode": 0,
            "eventRanges": [rng(0, 1), rng(1, 1)],
        }
        assert panda(client, "checkEventsAvailability", ids) == {
            "StatusCode": 0,
            "nEventRanges": 1,
        }
        failed = [
            {
                "eventRangeID": rng(0, 1)["eventRangeID"],
                "eventStatus": "failed",
                "errorCode": 1234,
                "errorDiag": "payload crashed",
            }
        ]
        assert panda(
            client, "updateEventRanges", {"eventRanges": json.dumps(failed), "version": "0"}
        ) == {"StatusCode": 0, "Returns": [True], "Errors": [None], "Command": {str(pid): None}}
        assert panda(client, "getEventRanges", {**ids, "nRanges": "5"}) == {
            "StatusCode": 0,
            "eventRanges": [rng(0, 2), rng(2, 1)],
        }
        bundle = [
            {
                "zipFile": {
                    "lfn": f"{pid}.0.tar",
                    "objstoreID": 1,
                    "fsize": 3000,
                    "adler32": "1a2b3c4d",
                    "numEvents": 3,
                    "pathConvention": 1000,
                    "path": f"file:///os/{task_id}/{jobset}/{pid}.0.tar",
                },
                "eventRanges": [
                    {"eventRangeID": rng(s, a)["eventRangeID"], "eventStatus": "finished"}
                    for s, a in ((0, 2), (1, 1), (2, 1))
                ],
            }
        ]
        assert panda(
            client, "updateEventRanges", {"eventRanges": json.dumps(bundle), "version": "1"}
        ) == {
            "StatusCode": 0,
            "Returns": [True, True, True],
            "Errors": [None, None, None],
            "Command": {str(pid): None},
        }
        assert panda(client, "getEventRanges", {**ids, "nRanges": "5"}) == {
            "StatusCode": 0,
            "eventRanges": [],
        }
        assert panda(client, "updateJob", {"jobId": str(pid), "state": "finished"}) == ok
        summary = api(client, "GET", f"/tasks/{task_id}")
        assert summary["state"] == "merging"
        assert summary["ranges"] == {"done": 3}
        merge = panda(client, "getJob", {"siteName": "Q", "node": "m"})
        assert merge["StatusCode"] == 0
        assert merge["eventServiceMerge"] == "True"
        assert merge["inFiles"] == f"{pid}.0.tar"
        assert merge["inFilesURL"] == f"file:///os/{task_id}/{jobset}/{pid}.0.tar"
        assert merge["eventRangeIDs"] == ",".join(
            rng(s, a)["eventRangeID"] for s, a in ((0, 2), (1, 1), (2, 1))
        )


def test_json_and_gzip_json_bodies(server: str) -> None:
    with httpx.Client(base_url=server, timeout=30) as client:
        task_id = _setup(client, 4)
        job = client.post(
            "/server/panda/getJob", json={"siteName": "Q", "node": "n"}, headers=JSON
        ).json()
        assert job["StatusCode"] == 0 and job["taskID"] == task_id
        pid = job["PandaID"]
        body = gzip.compress(json.dumps({"jobId": pid, "state": "running"}).encode())
        answer = client.post(
            "/server/panda/updateJob",
            content=body,
            headers={**JSON, "Content-Type": "application/json"},
        )
        assert answer.json() == {"StatusCode": 0, "command": "NULL"}
        assert api(client, "GET", f"/jobs/{pid}")["state"] == "running"
        body = gzip.compress(json.dumps({"pandaID": pid, "nRanges": 2}).encode())
        answer = client.post(
            "/server/panda/getEventRanges",
            content=body,
            headers={**JSON, "Content-Type": "application/json"},
        ).json()
        assert answer["StatusCode"] == 0
        got = answer["eventRanges"]
        assert [r["startEvent"] for r in got] == [0, 1]
        # updateEventRanges with eventRanges as a JSON list (not a string) in a JSON body
        body = gzip.compress(
            json.dumps(
                {
                    "eventRanges": [
                        {
                            "eventRangeID": r["eventRangeID"],
                            "eventStatus": "finished",
                            "path": f"file:///os/{r['eventRangeID']}",
                            "fsize": 5,
                            "adler32": "00000001",
                        }
                        for r in got
                    ],
                    "version": 0,
                }
            ).encode()
        )
        answer = client.post(
            "/server/panda/updateEventRanges",
            content=body,
            headers={**JSON, "Content-Type": "application/json"},
        ).json()
        assert answer["Returns"] == [True, True]
        # a plain JSON body answered urlencoded when JSON is not accepted
        raw = client.post("/server/panda/checkEventsAvailability", json={"pandaID": pid})
        assert parse_qs(raw.text) == {"StatusCode": ["0"], "nEventRanges": ["2"]}
        # single-range form
        answer = panda(
            client,
            "updateEventRange",
            {"eventRangeID": got[0]["eventRangeID"], "eventStatus": "finished"},
        )
        assert answer["Returns"] == [True]  # repeat of the state it has
        ranges = api(client, "GET", f"/events?task_id={task_id}")
        assert [r["state"] for r in ranges] == ["finished", "finished", "ready", "ready"]


def test_lease_redispatch_over_http(server: str) -> None:
    with httpx.Client(base_url=server, timeout=30) as client:
        task_id = _setup(client, 3, esMaxAttempt=5)
        silent = panda(client, "getJob", {"siteName": "Q", "node": "silent"})
        got = panda(client, "getEventRanges", {"pandaID": silent["PandaID"], "nRanges": "3"})
        old_ids = [r["eventRangeID"] for r in got["eventRanges"]]
        assert len(old_ids) == 3
        # the silent consumer never calls again; a replacement appears once the lease
        # (2 s) expires and the reaper runs
        deadline = time.monotonic() + 60
        while True:
            other = panda(client, "getJob", {"siteName": "Q", "node": "other"})
            if other["StatusCode"] == 0:
                break
            assert other == {"StatusCode": 20}
            assert time.monotonic() < deadline, "ranges were not re-dispatched"
            time.sleep(0.25)
        assert other["PandaID"] != silent["PandaID"]
        assert api(client, "GET", f"/jobs/{silent['PandaID']}")["state"] == "failed"
        panda(client, "updateJob", {"jobId": other["PandaID"], "state": "running"})
        new = panda(client, "getEventRanges", {"pandaID": other["PandaID"], "nRanges": "3"})
        new_ids = [r["eventRangeID"] for r in new["eventRanges"]]
        assert [i.split("-")[3:] for i in new_ids] == [["0", "2"], ["1", "2"], ["2", "2"]]
        assert all(i.split("-")[1] == str(other["PandaID"]) for i in new_ids)
        late = panda(
            client,
            "updateEventRanges",
            {
                "eventRanges": json.dumps(
                    [
                        {"eventRangeID": i, "eventStatus": "finished", "path": "file:///late"}
                        for i in old_ids
                    ]
                )
            },
        )
        assert late["StatusCode"] == 0
        assert late["Returns"] == [False, False, False]
        assert all("stale attempt 1" in e for e in late["Errors"])
        ranges = api(client, "GET", f"/events?task_id={task_id}")
        assert [(r["state"], r["attemptNr"], r["PandaID"]) for r in ranges] == [
            ("sent", 2, other["PandaID"])
        ] * 3


def test_every_panda_answer_says_how_long_the_dispatcher_took(server: str) -> None:
    """``Server-Timing: dispatch;dur=<ms>`` on answers, refusals included."""
    with httpx.Client(base_url=server, timeout=30) as client:
        for method, data in (
            ("getStatus", {}),
            ("getEventRanges", {"pandaID": "999999", "jobsetID": "1", "nRanges": "2"}),
            ("updateEventRanges", {"eventRanges": "not json"}),
        ):
            answer = client.post(f"/server/panda/{method}", data=data, headers=JSON)
            name, _, duration = answer.headers["server-timing"].partition(";dur=")
            assert name == "dispatch"
            assert 0.0 <= float(duration) < 30_000.0
