"""A tiny ES payload for the pilot's tests, speaking the channel (DESIGN §7).

``python es_payload.py MODE``; ``ATHENA_PROC_NUMBER`` worker processes, each holding
its own connection. Modes:

- ``ok``: write ``<eventRangeID>.out`` (range ID, events, PFN) per range and report it;
- ``sleep``: the same after sleeping ``PAYLOAD_SLEEP`` seconds per range;
- ``errors``: per range by ``startEvent % 4``: 0 retryable ``ERR_``, 1 garbage naming
  the range, 2 fatal ``ERR_TE_FATAL``, 3 ok; plus one message naming nothing;
- ``crash``: the first worker exits with code 3 while holding its third range; the
  payload then exits 3.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time

from eventservice.payload.channel import ChannelClient

MODE = sys.argv[1] if len(sys.argv) > 1 else "ok"


def work(index: int) -> None:
    with ChannelClient.from_environment() as channel:
        if MODE == "errors" and index == 0:
            channel.send("utter garbage that names no range")
        count = 0
        for event_range in channel.ranges():
            count += 1
            rid = event_range["eventRangeID"]
            start = time.time()
            if MODE == "crash" and index == 0 and count == 3:
                os._exit(3)
            if MODE == "sleep":
                time.sleep(float(os.environ.get("PAYLOAD_SLEEP", "0.5")))
            if MODE == "errors":
                kind = int(event_range["startEvent"]) % 4
                if kind == 0:
                    channel.report_error("ERR_ATHENAMP_PROCESS", rid, "simulated failure")
                    continue
                if kind == 1:
                    channel.send(f"what is this? ID:{rid} CPU:x")
                    continue
                if kind == 2:
                    channel.report_error("ERR_TE_FATAL", rid, "corrupt input")
                    continue
            path = os.path.abspath(f"{rid}.out")
            with open(path, "w") as handle:
                handle.write(
                    f"{rid} {event_range['startEvent']} {event_range['lastEvent']} "
                    f"{event_range.get('PFN', '')}\n"
                )
            channel.report_done(path, rid, time.process_time(), time.time() - start)


def main() -> int:
    workers = int(os.environ.get("ATHENA_PROC_NUMBER", "1"))
    processes = [multiprocessing.Process(target=work, args=(i,)) for i in range(workers)]
    for process in processes:
        process.start()
    code = 0
    for process in processes:
        process.join()
        if process.exitcode and not code:
            code = process.exitcode
            for other in processes:
                if other.is_alive():
                    other.terminate()
    return code


if __name__ == "__main__":
    sys.exit(main())
