"""Pilot overhead: the pilot's own CPU time per range, and ranges/s one pilot turns over.

Run: ``python benchmarks/pilot_overhead.py [--ranges 4000] [--workers 8]``

A real dispatcher (SQLite) runs in a subprocess on loopback; the pilot runs *in this
process*, so ``time.process_time()`` counts exactly the pilot's threads (communication,
channel, stage-out, heartbeat) and not the dispatcher or the payload workers, which are
other processes. The payload does no work: each worker writes a tiny file per range and
reports it. Outputs are bundled (``zip_time_gap`` 1 s) and shipped to a local directory
acting as the object store, so adler32, tar and copy costs are included.

Reference, measured in the same run: the dispatcher alone, driven by a bare loop that
fetches ``2 x workers`` ranges and reports them finished (no payload, no storage, no
pilot) — the ceiling the dispatcher puts on any pilot. Targets: < 1 ms pilot CPU per
range, >= 500 ranges/s per pilot.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from eventservice.demo.processes import free_port

PAYLOAD = """
import multiprocessing, os, sys
from eventservice.payload.channel import ChannelClient

def work():
    with ChannelClient.from_environment() as channel:
        for r in channel.ranges():
            path = os.path.abspath(r["eventRangeID"] + ".out")
            with open(path, "w") as f:
                f.write(r["eventRangeID"])
            channel.report_done(path, r["eventRangeID"], 0.0, 0.0)

procs = [multiprocessing.Process(target=work)
         for _ in range(int(os.environ["ATHENA_PROC_NUMBER"]))]
for p in procs:
    p.start()
for p in procs:
    p.join()
sys.exit(max(p.exitcode or 0 for p in procs))
"""


def start_dispatcher(tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "eventservice.cli.main",
            "server",
            "--db",
            f"sqlite:///{tmp / 'bench.sqlite'}",
            "--port",
            str(port),
            "--lease-seconds",
            "600",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        try:
            httpx.post(f"{url}/server/panda/getStatus", timeout=2)
            return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("dispatcher did not start")


def submit(url: str, tmp: Path, n_ranges: int, workers: int, payload: Path, name: str) -> int:
    store = tmp / f"store-{name}"
    store.mkdir()
    base = f"file://{store}"
    httpx.post(
        f"{url}/api/v1/queues",
        json={
            "name": name,
            "corecount": workers,
            "zip_time_gap": 1,
            "heartbeat": 60,
            "pledgedcpu": -1,
            "storages": {
                a: [base] for a in ("es_events", "es_failover", "es_events_read", "pw", "pl")
            },
        },
    ).raise_for_status()
    dummy = tmp / f"input-{name}.dat"
    dummy.write_bytes(b"x" * 1024)
    answer = httpx.post(
        f"{url}/api/v1/tasks",
        json={
            "name": name,
            "inputs": [{"url": str(dummy), "nEvents": n_ranges}],
            "transformation": f"{sys.executable} {payload}",
            "params": {"nEventsPerJob": n_ranges, "nEventsPerWorker": 1, "esFraction": 1.0},
        },
        timeout=120,
    )
    answer.raise_for_status()
    return int(answer.json()["taskID"])


def reference(url: str, queue: str, batch: int) -> tuple[int, float]:
    """The dispatcher alone: fetch ranges and report them finished, no pilot work."""
    from eventservice.client.panda import PandaClient

    with PandaClient(url) as client:
        job = client.get_job(queue)
        assert job is not None
        client.update_job(job["PandaID"], "running")
        done = 0
        start = time.perf_counter()
        while ranges := client.get_event_ranges(
            job["PandaID"], job["jobsetID"], job["taskID"], batch
        ):
            client.update_event_ranges(
                [{"eventRangeID": r["eventRangeID"], "eventStatus": "running"} for r in ranges]
            )
            result = client.update_event_ranges(
                [
                    {
                        "eventRangeID": r["eventRangeID"],
                        "eventStatus": "finished",
                        "path": f"file:///nowhere/{r['eventRangeID']}.out",
                        "fsize": 1,
                        "adler32": "00000001",
                        "objstoreID": 1,
                    }
                    for r in ranges
                ]
            )
            assert all(result.returns), result.errors
            done += len(ranges)
        elapsed = time.perf_counter() - start
        client.update_job(job["PandaID"], "finished")
    return done, elapsed


def run_pilot(url: str, queue: str, workers: int, workdir: Path) -> tuple[int, float, float]:
    from eventservice.client.panda import PandaClient
    from eventservice.pilot.executors.base import PilotOptions
    from eventservice.pilot.main import Pilot

    with PandaClient(url) as client:
        pilot = Pilot(client, queue, workdir, options=PilotOptions(cores=workers), max_jobs=1)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        summary = pilot.run()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    assert summary.jobs and summary.jobs[0][1] == "finished", summary
    return summary.jobs[0][0], cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ranges", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pilot-bench-") as name:
        tmp = Path(name)
        payload = tmp / "noop_payload.py"
        payload.write_text(PAYLOAD)
        process, url = start_dispatcher(tmp)
        try:
            ref_task = submit(url, tmp, args.ranges, args.workers, payload, "REF")
            ref_done, ref_wall = reference(url, "REF", 2 * args.workers)
            task = submit(url, tmp, args.ranges, args.workers, payload, "BENCH")
            _, cpu, wall = run_pilot(url, "BENCH", args.workers, tmp / "work")
            summary = httpx.get(f"{url}/api/v1/tasks/{task}").json()
            finished = sum(
                v for k, v in summary["ranges"].items() if k in ("finished", "done", "merged")
            )
        finally:
            process.terminate()
            process.wait()
    assert ref_task and finished == args.ranges, summary["ranges"]
    cpu_ms = 1000 * cpu / finished
    rate = finished / wall
    ref_rate = ref_done / ref_wall
    result = {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "ranges": finished,
        "payload_workers": args.workers,
        "pilot_cpu_ms_per_range": round(cpu_ms, 3),
        "pilot_ranges_per_s": round(rate, 1),
        "reference_dispatcher_only_ranges_per_s": round(ref_rate, 1),
        "pilot_vs_reference": round(rate / ref_rate, 3),
        "target_cpu_ms_per_range": 1.0,
        "target_ranges_per_s": 500,
    }
    print(json.dumps(result, indent=2))
    print(
        f"pilot CPU per range: {cpu_ms:.3f} ms (target < 1 ms: "
        f"{'met' if cpu_ms < 1 else 'NOT met'})"
    )
    print(
        f"ranges/s one pilot:  {rate:.0f} (target >= 500: {'met' if rate >= 500 else 'NOT met'}); "
        f"dispatcher alone: {ref_rate:.0f}/s; pilot/reference = {rate / ref_rate:.2f}"
    )


if __name__ == "__main__":
    main()
