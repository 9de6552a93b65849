"""Run any plain command once per event range (``eventservice payload per-range``).

For payloads that cannot speak the channel: each worker asks the pilot for ranges
and runs the command once per range with the range in environment variables:

- ``ES_EVENT_RANGE_ID``, ``ES_GUID``, ``ES_FIRST_EVENT``, ``ES_LAST_EVENT`` (0-based,
  inclusive);
- ``ES_INPUT``: where to read (the PFN when the pilot gave one, else the LFN);
- ``ES_OUTPUT``: the absolute path the command must write, ``<cwd>/<eventRangeID>.out``.

Exit status 0 with the output present reports the range done; anything else
reports ``ERR_ATHENAMP_PROCESS`` with the exit status and the tail of stderr.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eventservice.payload.channel import ChannelClient
from eventservice.payload.workers import RangeError, serve_ranges

OUTPUT_SUFFIX = ".out"
STDERR_TAIL = 500


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class PerRangeRunner:
    """Runs ``command`` for one range at a time in ``workdir``."""

    command: Sequence[str]
    workdir: str = "."

    def environment(self, event_range: dict[str, Any]) -> dict[str, str]:
        """The variables describing ``event_range`` for the command."""
        try:
            range_id = str(event_range["eventRangeID"])
            first, last = int(event_range["startEvent"]), int(event_range["lastEvent"])
            source = str(event_range.get("PFN") or event_range["LFN"])
        except KeyError as exc:
            raise RangeError(
                "ERR_ATHENAMP_PARSE", f"range lacks the field {exc.args[0]!r}"
            ) from None
        except (TypeError, ValueError):
            raise RangeError(
                "ERR_ATHENAMP_PARSE", "startEvent/lastEvent are not integers"
            ) from None
        output = os.path.abspath(os.path.join(self.workdir, f"{range_id}{OUTPUT_SUFFIX}"))
        return {
            "ES_EVENT_RANGE_ID": range_id,
            "ES_INPUT": source,
            "ES_FIRST_EVENT": str(first),
            "ES_LAST_EVENT": str(last),
            "ES_OUTPUT": output,
            "ES_GUID": str(event_range.get("GUID") or ""),
        }

    def process_range(self, event_range: dict[str, Any]) -> tuple[str, float, float]:
        """Run the command for one range; return output path, child CPU and wall time."""
        variables = self.environment(event_range)
        output = variables["ES_OUTPUT"]
        if os.path.exists(output):
            os.unlink(output)  # a leftover must not pass for this run's output
        # Workers run one child at a time, so the RUSAGE_CHILDREN delta is this child's.
        cpu0, wall0 = _children_cpu(), time.perf_counter()
        with tempfile.TemporaryFile() as stderr:
            try:
                status = subprocess.run(
                    list(self.command),
                    cwd=self.workdir,
                    env={**os.environ, **variables},
                    stdin=subprocess.DEVNULL,
                    stderr=stderr,
                    check=False,
                ).returncode
            except OSError as exc:
                raise RangeError(
                    "ERR_ATHENAMP_PROCESS", f"cannot run {self.command[0]}: {exc.strerror or exc}"
                ) from exc
            stderr.seek(0)
            errors = stderr.read().decode(errors="replace")
        cpu, wall = _children_cpu() - cpu0, time.perf_counter() - wall0
        if errors:
            sys.stderr.write(errors)  # keep the command's stderr in the payload log
        if status != 0:
            how = f"killed by signal {-status}" if status < 0 else f"exited with code {status}"
            tail = " ".join(errors[-STDERR_TAIL:].split())
            raise RangeError(
                "ERR_ATHENAMP_PROCESS", f"command {how}" + (f"; stderr: {tail}" if tail else "")
            )
        if not os.path.exists(output):
            raise RangeError("ERR_ATHENAMP_PROCESS", f"command exited 0 but wrote no {output}")
        return output, cpu, wall


def per_range_worker(command: Sequence[str], workdir: str, timeout: float | None) -> None:
    """One worker process: run ``command`` for ranges until there are none left."""
    runner = PerRangeRunner(tuple(command), workdir)
    with ChannelClient.from_environment(timeout) as channel:
        serve_ranges(channel, runner.process_range)
