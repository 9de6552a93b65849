"""What a pilot's fork server costs before its first payload: forked from the pilot, or fresh.

Run: ``python benchmarks/forkserver_start.py [--rounds 8]``

Each round runs in a new process that first imports what the ``eventservice pilot``
command has imported when it forks its standby server, as a pilot would. It then
measures two servers, one after the other:

- *standby* (what the pilot does): :meth:`ForkServer.standby` forks this process; once
  :meth:`ForkServer.prepare` gives it the environment it imports the preload;
- *fresh* (the reference, what a second core count still gets): :meth:`ForkServer.spawn`
  starts ``python -c``, which imports the preload at once.

Each server is then told to end (its stdin closed) and the CPU it used in all is read
from ``wait4``. Printed: both per round, their means and the ratio standby / fresh.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROUND = """
import json, os
import eventservice.cli.main, eventservice.cli.pilot_commands  # what the pilot has imported
import eventservice.client.panda, eventservice.pilot.logs, eventservice.pilot.main
from eventservice.pilot.executors.base import payload_environment
from eventservice.pilot.forkserver import ForkServer

def cpu_to_end(server):
    server.process.stdin.close()
    _, _, usage = os.wait4(server.process.pid, 0)
    return usage.ru_utime + usage.ru_stime

env = payload_environment(None, 1)
standby = ForkServer.standby()  # first: no thread runs yet in this process
standby.prepare(env)
standby_cpu = cpu_to_end(standby)
fresh_cpu = cpu_to_end(ForkServer.spawn(env))
print(json.dumps({"standby": standby_cpu, "fresh": fresh_cpu}))
"""


def one_round() -> dict[str, float]:
    """CPU seconds of a standby and of a fresh server, measured in a new process."""
    out = subprocess.run(
        [sys.executable, "-c", ROUND], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    print(f"{platform.platform()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}")
    rounds = []
    for index in range(args.rounds):
        cpu = one_round()
        rounds.append(cpu)
        print(f"round {index + 1}: standby {cpu['standby']:.3f} s, fresh {cpu['fresh']:.3f} s")
    standby = statistics.fmean(r["standby"] for r in rounds)
    fresh = statistics.fmean(r["fresh"] for r in rounds)
    print(
        f"mean CPU to import the preload: standby {standby:.3f} s, fresh {fresh:.3f} s; "
        f"standby / fresh = {standby / fresh:.2f} (saves {fresh - standby:.3f} s per pilot)"
    )


if __name__ == "__main__":
    main()
