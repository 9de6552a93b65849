"""32 consumers draining a 20,000-range task over loopback: no range twice, none lost."""

from __future__ import annotations

import json
import threading
from collections import Counter, defaultdict
from typing import Any

import httpx
import pytest

from .http_server import running_server

N_RANGES = 20_000
N_CONSUMERS = 32
BATCH = 16
JSON = {"Accept": "application/json"}


def _consume(base: str, handed: list[str], errors: list[str]) -> None:
    try:
        with httpx.Client(base_url=base, timeout=120, headers=JSON) as client:

            def call(method: str, data: dict[str, Any]) -> dict[str, Any]:
                answer = client.post(f"/server/panda/{method}", data=data)
                assert answer.status_code == 200, answer.text
                body = answer.json()
                assert body["StatusCode"] == 0, body
                return body

            job = call("getJob", {"siteName": "Q", "node": threading.current_thread().name})
            pid = str(job["PandaID"])
            call("updateJob", {"jobId": pid, "state": "running"})
            while True:
                got = call("getEventRanges", {"pandaID": pid, "nRanges": str(BATCH)})
                ranges = got["eventRanges"]
                if not ranges:
                    break
                ids = [r["eventRangeID"] for r in ranges]
                handed.extend(ids)
                entries = [
                    {
                        "eventRangeID": i,
                        "eventStatus": "finished",
                        "path": f"file:///os/{i}.out",
                        "fsize": 10,
                        "adler32": "00000001",
                        "objstoreID": 1,
                    }
                    for i in ids
                ]
                answer = call("updateEventRanges", {"eventRanges": json.dumps(entries)})
                assert answer["Returns"] == [True] * len(ids), answer["Errors"]
            call("updateJob", {"jobId": pid, "state": "finished"})
    except BaseException as exc:  # collected and asserted by the test
        errors.append(repr(exc))


@pytest.mark.slow
def test_32_consumers_drain_20000_ranges(db_url: str, tmp_path) -> None:
    # a long lease: this test is about concurrency, not about a loaded machine's hiccups
    with (
        running_server(db_url, 3600, tmp_path / "server.log") as base,
        httpx.Client(base_url=base, timeout=120) as client,
    ):
        assert client.post("/api/v1/queues", json={"name": "Q"}).status_code == 201
        task = client.post(
            "/api/v1/tasks",
            json={
                "inputs": [{"url": "/data/big.root", "nEvents": N_RANGES, "guid": "G"}],
                "params": {
                    "nEventsPerWorker": 1,
                    "nEventsPerJob": N_RANGES,
                    "nEsConsumers": N_CONSUMERS,
                },
            },
        )
        assert task.status_code == 201, task.text
        task_id = task.json()["taskID"]
        assert task.json()["ranges"] == {"ready": N_RANGES}
        assert task.json()["jobs"] == {"activated": N_CONSUMERS}

        handed: list[str] = []  # list.extend is atomic under the GIL
        errors: list[str] = []
        threads = [
            threading.Thread(target=_consume, args=(base, handed, errors), name=f"c{i}")
            for i in range(N_CONSUMERS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []

        # no range dispatched twice within one attempt, every range handed out once
        assert len(handed) == N_RANGES
        assert len(set(handed)) == N_RANGES
        positions = Counter(i.split("-")[3] for i in handed)
        assert set(positions) == {str(n) for n in range(N_RANGES)}
        assert all(i.endswith("-1") for i in handed)
        per_consumer = Counter(i.split("-")[1] for i in handed)
        assert sum(per_consumer.values()) == N_RANGES
        assert len(per_consumer) <= N_CONSUMERS

        summary = client.get(f"/api/v1/tasks/{task_id}").json()
        assert summary["ranges"] == {"done": N_RANGES}
        assert summary["events"] == {"done": N_RANGES}
        assert summary["rangesRedispatched"] == 0
        assert summary["state"] == "merging"
        jobs = Counter(
            (j["eventService"], j["state"])
            for j in client.get("/api/v1/jobs", params={"task_id": task_id}).json()
        )
        assert jobs == {(1, "finished"): N_CONSUMERS, (2, "activated"): 1}

        # history: per range exactly ready->sent, sent->finished, finished->done
        per_range: dict[int, list[tuple[str, str, int]]] = defaultdict(list)
        after = 0
        while True:
            page = client.get(
                "/api/v1/history",
                params={"entity": "range", "after": after, "limit": 10_000},
            ).json()
            if not page:
                break
            for row in page:
                per_range[row["entityID"]].append((row["from"], row["to"], row["attemptNr"]))
            after = page[-1]["id"]
        assert len(per_range) == N_RANGES
        expected = [("ready", "sent", 1), ("sent", "finished", 1), ("finished", "done", 1)]
        wrong = {k: v for k, v in per_range.items() if v != expected}
        assert wrong == {}
