"""Task splitting: jobsets of nEventsPerJob, ranges of nEventsPerWorker, the ES share."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventservice.domain.task_spec import TaskSpec, is_event_service_jobset, split
from eventservice.errors import InvalidInput, MissingKey


def test_split_exact_and_remainder() -> None:
    assert split(0, 9, 5) == [(0, 4), (5, 9)]
    assert split(0, 9, 4) == [(0, 3), (4, 7), (8, 9)]
    assert split(0, 0, 1) == [(0, 0)]
    assert split(10, 12, 1) == [(10, 10), (11, 11), (12, 12)]
    assert split(0, 2, 100) == [(0, 2)]


@given(
    first=st.integers(min_value=0, max_value=10_000),
    length=st.integers(min_value=1, max_value=2_000),
    size=st.integers(min_value=1, max_value=500),
)
def test_split_covers_span_once_in_order(first: int, length: int, size: int) -> None:
    last = first + length - 1
    chunks = split(first, last, size)
    assert chunks[0][0] == first
    assert chunks[-1][1] == last
    for (a, b), (c, _d) in itertools.pairwise(chunks):
        assert c == b + 1
        assert b - a + 1 == size  # only the last chunk may be short
    assert all(1 <= b - a + 1 <= size for a, b in chunks)
    assert sum(b - a + 1 for a, b in chunks) == length
    assert len(chunks) == -(-length // size)


def _es_share(fraction: float, n: int) -> list[bool]:
    return [is_event_service_jobset(i, fraction) for i in range(n)]


def test_es_fraction_zero_is_never_es() -> None:
    assert not any(_es_share(0.0, 50))


def test_es_fraction_one_is_always_es() -> None:
    assert all(_es_share(1.0, 50))


def test_es_fraction_half_alternates() -> None:
    share = _es_share(0.5, 10)
    assert sum(share) == 5
    # evenly spread: never two of the same kind in a row
    assert all(a != b for a, b in itertools.pairwise(share))


@given(
    fraction=st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
    n=st.integers(min_value=1, max_value=300),
)
def test_es_fraction_share_is_respected(fraction: float, n: int) -> None:
    count = sum(_es_share(fraction, n))
    assert abs(count - n * fraction) <= 1 + 1e-6


def test_task_spec_minimal_and_defaults() -> None:
    spec = TaskSpec.from_mapping({"inputs": [{"url": "/data/a.root", "nEvents": 5}]})
    assert spec.name == "task"
    assert spec.inputs[0].lfn == "a.root"
    assert spec.inputs[0].scope == "user"
    assert spec.inputs[0].n_events == 5
    assert spec.params.nEventsPerWorker == 1
    assert "{taskID}" in spec.output_name


def test_task_spec_params_top_level_or_nested() -> None:
    spec = TaskSpec.from_mapping(
        {"inputs": ["/a.root"], "nEventsPerJob": 7, "params": {"nEsConsumers": 2}}
    )
    assert spec.params.nEventsPerJob == 7
    assert spec.params.nEsConsumers == 2
    assert spec.inputs[0].url == "/a.root"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({}, MissingKey),
        ({"inputs": []}, MissingKey),
        ({"inputs": "x"}, MissingKey),
        ({"inputs": [{"lfn": "x"}]}, MissingKey),
        ({"inputs": [3]}, InvalidInput),
        ({"inputs": [{"url": "/a", "nEvents": 0}]}, InvalidInput),
        ({"inputs": [{"url": "/a", "nEvents": True}]}, InvalidInput),
        ({"inputs": [{"url": "/a", "fsize": -1}]}, InvalidInput),
        ({"inputs": [{"url": "/a", "guid": 5}]}, InvalidInput),
        ({"inputs": [{"url": "/a", "bogus": 5}]}, InvalidInput),
        ({"inputs": ["/a"], "outputName": "{nope}"}, InvalidInput),
        ({"inputs": ["/a"], "name": ""}, InvalidInput),
        ({"inputs": ["/a"], "transformation": 3}, InvalidInput),
        ({"inputs": ["/a"], "params": "x"}, InvalidInput),
        ({"inputs": ["/a"], "whatever": 1}, InvalidInput),
        ({"inputs": ["/a"], "esFraction": 2}, InvalidInput),
        (["/a"], InvalidInput),
    ],
)
def test_task_spec_invalid(data: object, error: type) -> None:
    with pytest.raises(error):
        TaskSpec.from_mapping(data)
