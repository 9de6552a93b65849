"""The channel grammar the payload relies on: what it formats, the pilot parses back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventservice.errors import ChannelMessageError
from eventservice.payload.channel import (
    NO_MORE_EVENTS,
    RangeDone,
    RangeFailed,
    format_done,
    format_error,
    format_range,
    parse_payload_message,
    parse_pilot_message,
)

range_ids = st.builds(
    lambda *n: "-".join(map(str, n)),
    *(st.integers(0, 10**9) for _ in range(4)),
    st.integers(1, 100),
)


@given(range_ids, st.floats(0, 1e6), st.floats(0, 1e6))
def test_done_round_trips(range_id: str, cpu: float, wall: float) -> None:
    message = parse_payload_message(format_done(f"/work/{range_id}.HITS.root", range_id, cpu, wall))
    assert isinstance(message, RangeDone)
    assert message.range_id == range_id and message.output_path == f"/work/{range_id}.HITS.root"
    assert message.cpu == pytest.approx(cpu, abs=1e-6) and message.wall == pytest.approx(
        wall, abs=1e-6
    )


@given(range_ids, st.text(min_size=1, max_size=300).filter(lambda t: t.strip()))
def test_error_round_trips_with_whitespace_collapsed(range_id: str, reason: str) -> None:
    message = parse_payload_message(format_error("ERR_ATHENAMP_PROCESS", range_id, reason))
    assert isinstance(message, RangeFailed)
    assert (message.kind, message.range_id) == ("ERR_ATHENAMP_PROCESS", range_id)
    assert message.reason == " ".join(reason.split())
    assert not message.fatal


def test_parse_errors_are_fatal() -> None:
    assert parse_payload_message(format_error("ERR_ATHENAMP_PARSE", "unknown", "x")).fatal


def test_pilot_messages() -> None:
    event_range = {"eventRangeID": "1-2-3-4-1", "startEvent": 4, "lastEvent": 5}
    assert parse_pilot_message(format_range(event_range)) == event_range
    assert parse_pilot_message(NO_MORE_EVENTS) is None
    with pytest.raises(ChannelMessageError):
        parse_pilot_message('[{"startEvent": 1}]')
