"""Running W payload workers, each with its own channel connection (AthenaMP style).

Both the reference payload and the per-range wrapper use this: the parent starts W
processes, waits for all of them and turns their exit codes into its own.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from eventservice.errors import ChannelMessageError, EventServiceError
from eventservice.payload.channel import (
    READY,
    ChannelClient,
    format_error,
    mentioned_range_id,
    parse_pilot_message,
)

ENV_WORKERS = "ATHENA_PROC_NUMBER"

#: Handles one range: returns ``(absolute output path, cpu seconds, wall seconds)``.
RangeHandler = Callable[[dict[str, Any]], tuple[str, float, float]]


class RangeError(EventServiceError):
    """A range could not be processed; ``kind`` is the ``ERR_*`` code to report."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


def worker_count(option: int | None) -> int:
    """Workers to start: the option, else ``ATHENA_PROC_NUMBER``, else 1."""
    if option is not None:
        count = option
    else:
        raw = os.environ.get(ENV_WORKERS, "").strip() or "1"
        try:
            count = int(raw)
        except ValueError:
            raise EventServiceError(f"{ENV_WORKERS} must be an integer, got {raw!r}") from None
    if count < 1:
        raise EventServiceError(f"need at least one worker, got {count}")
    return count


def serve_ranges(channel: ChannelClient, handle: RangeHandler) -> int:
    """Ask for ranges until there are none and report each; return how many were done.

    A range that fails is reported as an error and the loop goes on with the next.
    """
    done = 0
    while True:
        channel.send(READY)
        text = channel.receive()
        if not text:
            return done  # the pilot closed the channel
        try:
            event_range = parse_pilot_message(text)
        except ChannelMessageError as exc:
            channel.send(
                format_error("ERR_ATHENAMP_PARSE", mentioned_range_id(text) or "unknown", str(exc))
            )
            continue
        if event_range is None:
            return done
        range_id = str(event_range["eventRangeID"])
        try:
            path, cpu, wall = handle(event_range)
        except RangeError as exc:
            channel.report_error(exc.kind, range_id, str(exc))
        except Exception as exc:  # any failure of one range must not stop the others
            reason = " ".join(str(exc).split()) or type(exc).__name__
            channel.report_error("ERR_ATHENAMP_PROCESS", range_id, reason)
        else:
            channel.report_done(path, range_id, cpu, wall)
            done += 1


def _guarded(target: Callable[..., None], args: tuple[Any, ...], index: int) -> None:
    try:
        target(*args)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        print(f"payload worker {index} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)


def run_workers(count: int, target: Callable[..., None], args: tuple[Any, ...]) -> list[int]:
    """Run ``target(*args)`` in ``count`` processes; return their exit codes.

    With one worker the target runs in this process (no start-up cost).
    ``target`` must be a module-level function, as workers are spawned.
    """
    if count == 1:
        try:
            _guarded(target, args, 0)
        except SystemExit as exc:
            return [int(exc.code or 0)]
        return [0]
    # spawn, not fork: workers must not inherit sockets or locks of the parent.
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_guarded, args=(target, args, i), name=f"payload-worker-{i}")
        for i in range(count)
    ]

    def stop(signum: int, frame: FrameType | None) -> None:
        for process in processes:
            if process.is_alive():
                process.terminate()

    # Only the main thread may install handlers (tests may call this from others).
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop) if main else None
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.join()
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
    return [process.exitcode if process.exitcode is not None else 1 for process in processes]
