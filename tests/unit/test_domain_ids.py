"""EventRangeID: ``<taskID>-<PandaID>-<fileID>-<startEvent>-<attemptNr>`` (DESIGN §5)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventservice.domain.ids import EventRangeID
from eventservice.errors import InvalidInput

non_negative = st.integers(min_value=0, max_value=2**63 - 1)
ids = st.builds(
    EventRangeID,
    task_id=non_negative,
    panda_id=non_negative,
    file_id=non_negative,
    start_event=non_negative,
    attempt_nr=st.integers(min_value=1, max_value=2**31),
)


@given(ids)
def test_format_then_parse_round_trip(range_id: EventRangeID) -> None:
    text = str(range_id)
    assert text.count("-") == 4
    assert EventRangeID.parse(text) == range_id


@given(ids)
def test_parse_then_format_round_trip_of_canonical_text(range_id: EventRangeID) -> None:
    text = "-".join(
        str(n)
        for n in (
            range_id.task_id,
            range_id.panda_id,
            range_id.file_id,
            range_id.start_event,
            range_id.attempt_nr,
        )
    )
    assert str(EventRangeID.parse(text)) == text


def test_known_value() -> None:
    parsed = EventRangeID.parse("7-123-4-56-2")
    assert parsed == EventRangeID(7, 123, 4, 56, 2)
    assert (parsed.task_id, parsed.panda_id, parsed.file_id) == (7, 123, 4)
    assert (parsed.start_event, parsed.attempt_nr) == (56, 2)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1-2-3-4",
        "1-2-3-4-5-6",
        "a-2-3-4-5",
        "1-2-3-4-x",
        "1-2-3-4-0",  # attempts start at 1
        "1--2-3-4",
        "1-2-3-4-",
        "1.0-2-3-4-5",
        "-1-2-3-4-5",
    ],
)
def test_malformed_text_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput):
        EventRangeID.parse(text)


@pytest.mark.parametrize(
    "value", [None, 12345, 1.5, ["1-2-3-4-5"], {"id": "1-2-3-4-5"}, b"1-2-3-4-5"]
)
def test_non_string_is_refused(value: object) -> None:
    with pytest.raises(InvalidInput):
        EventRangeID.parse(value)


@given(st.text(max_size=40))
def test_parse_never_raises_anything_but_invalid_input(text: str) -> None:
    try:
        parsed = EventRangeID.parse(text)
    except InvalidInput:
        return
    assert parsed.attempt_nr >= 1
    assert min(parsed.task_id, parsed.panda_id, parsed.file_id, parsed.start_event) >= 0


def test_frozen() -> None:
    range_id = EventRangeID(1, 2, 3, 4, 5)
    with pytest.raises(AttributeError):
        range_id.attempt_nr = 6  # type: ignore[misc]
