"""The pilot ⇄ payload channel (DESIGN §7), AthenaMP-compatible grammar.

One message per datagram over ``AF_UNIX`` ``SOCK_SEQPACKET``; the socket name is in
``PILOT_EVENTRANGECHANNEL``. A name starting with ``@`` is a Linux abstract socket.

payload → pilot::

    Ready for events
    <absolute output path>,ID:<eventRangeID>,CPU:<seconds>,WALL:<seconds>
    ERR_<KIND> <eventRangeID>: <reason>

pilot → payload: a JSON list holding one range dict, or ``No more events``.

This module is both the grammar (used by the pilot's channel server) and a small
client for payload authors::

    with ChannelClient.from_environment() as channel:
        for event_range in channel.ranges():
            ...
            channel.report_done(output_path, event_range["eventRangeID"], cpu, wall)
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from eventservice.errors import ChannelMessageError

ENV_CHANNEL = "PILOT_EVENTRANGECHANNEL"
READY = "Ready for events"
NO_MORE_EVENTS = "No more events"
MAX_MESSAGE_BYTES = 1 << 16

#: Error kinds after which a range is not worth retrying anywhere.
FATAL_ERROR_KINDS = frozenset({"ERR_TE_FATAL", "ERR_ATHENAMP_PARSE", "ERR_ES_FATAL"})

_DONE = re.compile(
    r"^(?P<path>/[^,]*),ID:(?P<id>[^,]+),CPU:(?P<cpu>[0-9.eE+-]+),WALL:(?P<wall>[0-9.eE+-]+)$"
)
_ERROR = re.compile(r"^(?P<kind>ERR_[A-Z0-9_]+) (?P<id>[^:\s]+): ?(?P<reason>.*)$", re.DOTALL)


@dataclass(frozen=True)
class ReadyForEvents:
    """A payload worker asks for one range."""


@dataclass(frozen=True)
class RangeDone:
    """A payload worker finished a range and wrote ``output_path``."""

    output_path: str
    range_id: str
    cpu: float
    wall: float


@dataclass(frozen=True)
class RangeFailed:
    """A payload worker could not process a range."""

    kind: str
    range_id: str
    reason: str

    @property
    def fatal(self) -> bool:
        """Whether this kind of error makes retrying the range pointless."""
        return self.kind in FATAL_ERROR_KINDS


PayloadMessage = ReadyForEvents | RangeDone | RangeFailed


def parse_payload_message(text: str) -> PayloadMessage:
    """Parse one payload → pilot message; raise :class:`ChannelMessageError` if malformed."""
    text = text.strip()
    if text == READY:
        return ReadyForEvents()
    if text.startswith("ERR_"):
        match = _ERROR.match(text)
        if not match:
            raise ChannelMessageError(f"malformed error message: {text[:200]!r}")
        return RangeFailed(match["kind"], match["id"], match["reason"].strip())
    match = _DONE.match(text)
    if not match:
        raise ChannelMessageError(f"unrecognised payload message: {text[:200]!r}")
    try:
        cpu, wall = float(match["cpu"]), float(match["wall"])
    except ValueError:
        raise ChannelMessageError(f"bad CPU/WALL numbers in {text[:200]!r}") from None
    return RangeDone(match["path"], match["id"], cpu, wall)


def mentioned_range_id(text: str) -> str | None:
    """Best-effort range ID named by a malformed message, so only that range fails."""
    match = re.search(r"ID:([^,\s]+)", text) or re.search(r"\b(\d+-\d+-\d+-\d+-\d+)\b", text)
    return match.group(1) if match else None


def format_done(output_path: str, range_id: str, cpu: float, wall: float) -> str:
    """The success message for a range."""
    return f"{output_path},ID:{range_id},CPU:{cpu:.6f},WALL:{wall:.6f}"


def format_error(kind: str, range_id: str, reason: str) -> str:
    """The error message for a range; ``kind`` must start with ``ERR_``."""
    if not re.fullmatch(r"ERR_[A-Z0-9_]+", kind):
        raise ValueError(f"error kind must look like ERR_SOMETHING, got {kind!r}")
    return f"{kind} {range_id}: {' '.join(reason.split())}"


def format_range(event_range: dict[str, Any]) -> str:
    """The pilot's message carrying one range."""
    return json.dumps([event_range])


def parse_pilot_message(text: str) -> dict[str, Any] | None:
    """Parse a pilot → payload message: a range dict, or ``None`` for no more events."""
    text = text.strip()
    if text == NO_MORE_EVENTS:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise ChannelMessageError(f"pilot sent neither a range nor {NO_MORE_EVENTS!r}") from None
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0]
    if not isinstance(value, dict) or "eventRangeID" not in value:
        raise ChannelMessageError("pilot message is not a list holding one event range")
    return value


def socket_address(name: str) -> str | bytes:
    """Translate a channel name into an ``AF_UNIX`` address (``@x`` = abstract)."""
    return b"\0" + name[1:].encode() if name.startswith("@") else name


class ChannelClient:
    """A payload worker's connection to its pilot. One per worker process."""

    def __init__(self, name: str, timeout: float | None = None) -> None:
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._socket.settimeout(timeout)
        self._socket.connect(socket_address(name))

    @classmethod
    def from_environment(cls, timeout: float | None = None) -> ChannelClient:
        """Connect to the channel named in ``PILOT_EVENTRANGECHANNEL``."""
        name = os.environ.get(ENV_CHANNEL)
        if not name:
            raise ChannelMessageError(f"{ENV_CHANNEL} is not set: not running under a pilot?")
        return cls(name, timeout)

    def send(self, text: str) -> None:
        """Send one raw message (one datagram)."""
        self._socket.sendall(text.encode())

    def receive(self) -> str:
        """Receive one raw message; an empty string means the pilot closed the channel."""
        return self._socket.recv(MAX_MESSAGE_BYTES).decode()

    def next_range(self) -> dict[str, Any] | None:
        """Ask for a range; ``None`` when there are no more events."""
        self.send(READY)
        reply = self.receive()
        if not reply:
            return None
        return parse_pilot_message(reply)

    def ranges(self) -> Iterator[dict[str, Any]]:
        """Yield ranges until the pilot says there are no more events."""
        while (event_range := self.next_range()) is not None:
            yield event_range

    def report_done(self, output_path: str, range_id: str, cpu: float, wall: float) -> None:
        """Report a finished range; ``output_path`` must be absolute."""
        self.send(format_done(os.path.abspath(output_path), range_id, cpu, wall))

    def report_error(self, kind: str, range_id: str, reason: str) -> None:
        """Report a failed range with an ``ERR_<KIND>`` code."""
        self.send(format_error(kind, range_id, reason))

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> ChannelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
