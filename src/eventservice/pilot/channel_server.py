"""The pilot's side of the payload channel (DESIGN §7): serve ranges to payload workers.

One ``AF_UNIX`` ``SOCK_SEQPACKET`` listening socket per pilot, named uniquely (a Linux
abstract name by default, so nothing is left on disk and pilots sharing a node never
collide), any number of worker connections. One thread runs a selector loop: it answers
``Ready for events`` from a local buffer the executor refills, parks workers when the
buffer is empty (and says so: near the end of a job's chunk the executor asks for ranges
only then), and turns every other message into a :class:`ChannelEvent` on a queue the
executor consumes. Malformed messages fail only the range they name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import selectors
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from eventservice.errors import ChannelMessageError
from eventservice.payload.channel import (
    MAX_MESSAGE_BYTES,
    NO_MORE_EVENTS,
    RangeDone,
    RangeFailed,
    ReadyForEvents,
    format_range,
    mentioned_range_id,
    parse_payload_message,
    socket_address,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RangeStarted:
    """A range was handed to a payload worker."""

    event_range: dict[str, Any]


@dataclass(frozen=True)
class WorkerWaiting:
    """A worker asked for a range and the buffer was empty: it is parked until one comes."""


@dataclass(frozen=True)
class RangeOutput:
    """A worker reported a range done; ``output_path`` is the payload's file."""

    event_range: dict[str, Any]
    output_path: str
    cpu: float
    wall: float


@dataclass(frozen=True)
class RangeError:
    """A worker reported an error for a range, or spoke garbage naming it."""

    event_range: dict[str, Any]
    kind: str
    reason: str
    fatal: bool


@dataclass(frozen=True)
class WorkerLost:
    """A worker's connection closed while it held ranges."""

    event_ranges: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Nudge:
    """Not a worker's message: something for the executor to look at now rather than
    on a timer (a report another thread journaled, a command it obeyed, a worker that
    left without ranges)."""


ChannelEvent = RangeStarted | WorkerWaiting | RangeOutput | RangeError | WorkerLost | Nudge

#: Error kind for a message the pilot could not parse but that names a range.
BAD_MESSAGE_KIND = "ERR_PILOT_BAD_MESSAGE"


def unique_channel_name() -> str:
    """An abstract socket name no other pilot on this node uses."""
    return f"@eventservice-pilot-{os.getpid()}-{uuid.uuid4().hex[:12]}"


class ChannelServer:
    """Serves event ranges to payload workers; thread-safe towards the executor."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or unique_channel_name()
        self.events: queue.Queue[ChannelEvent] = queue.Queue()
        self._lock = threading.Lock()
        self._buffer: deque[dict[str, Any]] = deque()
        self._waiting: deque[socket.socket] = deque()
        self._in_flight: dict[str, tuple[dict[str, Any], int]] = {}
        self._no_more = False
        self._stopping = threading.Event()
        self._selector = selectors.DefaultSelector()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._listener.bind(socket_address(self.name))
        self._listener.listen(256)
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._selector.register(self._listener, selectors.EVENT_READ, "listen")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._connections: dict[int, socket.socket] = {}
        self._thread = threading.Thread(target=self._loop, name="channel", daemon=True)
        self.served = 0

    # -- executor side -------------------------------------------------------------

    def start(self) -> None:
        """Start serving in a background thread."""
        self._thread.start()

    def add_ranges(self, ranges: list[dict[str, Any]]) -> None:
        """Append ranges to the local buffer and serve any worker waiting for one."""
        with self._lock:
            self._buffer.extend(ranges)
        self._wake()

    def nudge(self) -> None:
        """Wake the consumer of :attr:`events` with a :class:`Nudge`."""
        self.events.put(Nudge())

    def set_no_more(self) -> None:
        """From now on answer ``No more events`` once the buffer is empty."""
        with self._lock:
            self._no_more = True
        self._wake()

    def take_buffer(self) -> list[dict[str, Any]]:
        """Remove and return every range not yet handed to a worker."""
        with self._lock:
            ranges = list(self._buffer)
            self._buffer.clear()
        return ranges

    def take_in_flight(self) -> list[dict[str, Any]]:
        """Forget and return every range a worker holds (the payload is gone)."""
        with self._lock:
            ranges = [r for r, _ in self._in_flight.values()]
            self._in_flight.clear()
        return ranges

    @property
    def buffered(self) -> int:
        """Ranges in the local buffer."""
        return len(self._buffer)

    @property
    def waiting(self) -> int:
        """Workers parked until ranges arrive."""
        return len(self._waiting)

    @property
    def in_flight(self) -> int:
        """Ranges held by workers."""
        return len(self._in_flight)

    @property
    def connected(self) -> int:
        """Worker connections open now."""
        return len(self._connections)

    @property
    def idle(self) -> bool:
        """Workers are connected, and every one waits for a range: none holds one.

        Such a payload can be kept for the next job: answering its workers later
        costs nothing (they wait on the channel), starting another does.
        """
        with self._lock:
            connected = len(self._connections)
            return (
                connected > 0
                and not self._buffer
                and not self._in_flight
                and len(self._waiting) == connected
            )

    def wait_disconnected(self, timeout: float) -> bool:
        """Wait until every worker has closed its connection (its last messages read)."""
        deadline = time.monotonic() + timeout
        while self._connections and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._connections

    def stop(self) -> None:
        """Close every connection and the socket; workers see the channel close."""
        self._stopping.set()
        self._wake()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for conn in list(self._connections.values()):
            conn.close()
        self._connections.clear()
        self._selector.close()
        self._listener.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # -- channel thread ----------------------------------------------------------------

    def _wake(self) -> None:
        # BlockingIOError: a wake-up is already pending; OSError: we are closing.
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    def _loop(self) -> None:
        while not self._stopping.is_set():
            for key, _ in self._selector.select(timeout=1.0):
                if key.data == "listen":
                    self._accept()
                elif key.data == "wake":
                    try:
                        while os.read(self._wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                    self._serve_waiting()
                else:
                    self._receive(key.fileobj)  # type: ignore[arg-type]

    def _accept(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except BlockingIOError:
            return
        conn.setblocking(True)
        self._connections[conn.fileno()] = conn
        self._selector.register(conn, selectors.EVENT_READ, "conn")

    def _close(self, conn: socket.socket) -> None:
        fd = conn.fileno()
        self._selector.unregister(conn)
        self._connections.pop(fd, None)
        with self._lock:
            lost = tuple(r for r, owner in self._in_flight.values() if owner == fd)
            for event_range in lost:
                del self._in_flight[event_range["eventRangeID"]]
            if conn in self._waiting:
                self._waiting.remove(conn)
        conn.close()
        # Either way the executor should look at the payload: it may be ending.
        self.events.put(WorkerLost(lost) if lost else Nudge())

    def _receive(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(MAX_MESSAGE_BYTES)
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        text = data.decode("utf-8", errors="replace")
        try:
            message = parse_payload_message(text)
        except ChannelMessageError as exc:
            self._garbage(text, str(exc))
            return
        if isinstance(message, ReadyForEvents):
            self._ready(conn)
        elif isinstance(message, RangeDone):
            event_range = self._finish(message.range_id)
            if event_range is not None:
                self.events.put(
                    RangeOutput(event_range, message.output_path, message.cpu, message.wall)
                )
        elif isinstance(message, RangeFailed):
            event_range = self._finish(message.range_id)
            if event_range is not None:
                self.events.put(
                    RangeError(event_range, message.kind, message.reason, message.fatal)
                )

    def _finish(self, range_id: str) -> dict[str, Any] | None:
        with self._lock:
            held = self._in_flight.pop(range_id, None)
        if held is None:
            log.warning("payload reported a range it does not hold", extra={"range": range_id})
            return None
        return held[0]

    def _garbage(self, text: str, problem: str) -> None:
        range_id = mentioned_range_id(text)
        event_range = self._finish(range_id) if range_id else None
        if event_range is None:
            log.error("payload sent a malformed message naming no held range: %s", problem)
            return
        log.error("payload sent a malformed message: %s", problem, extra={"range": range_id})
        self.events.put(RangeError(event_range, BAD_MESSAGE_KIND, problem, fatal=False))

    def _ready(self, conn: socket.socket) -> None:
        with self._lock:
            if self._buffer:
                self._hand_out(conn, self._buffer.popleft())
            elif self._no_more:
                self._send(conn, NO_MORE_EVENTS)
            elif conn not in self._waiting:
                self._waiting.append(conn)
                self.events.put(WorkerWaiting())

    def _serve_waiting(self) -> None:
        with self._lock:
            while self._waiting and (self._buffer or self._no_more):
                conn = self._waiting.popleft()
                if self._buffer:
                    self._hand_out(conn, self._buffer.popleft())
                else:
                    self._send(conn, NO_MORE_EVENTS)

    def _hand_out(self, conn: socket.socket, event_range: dict[str, Any]) -> None:
        """Send one range (lock held)."""
        range_id = str(event_range["eventRangeID"])
        if not self._send(conn, format_range(event_range)):
            self._buffer.appendleft(event_range)
            return
        self._in_flight[range_id] = (event_range, conn.fileno())
        self.served += 1
        self.events.put(RangeStarted(event_range))

    def _send(self, conn: socket.socket, text: str) -> bool:
        try:
            conn.sendall(text.encode())
            return True
        except OSError as exc:
            log.warning("could not write to a payload worker: %s", exc)
            return False
