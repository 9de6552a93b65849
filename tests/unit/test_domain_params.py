"""TaskParams and QueueParams: defaults of DESIGN §10 and validation."""

from __future__ import annotations

import pytest

from eventservice.domain.params import JOBSEEDS, QueueParams, TaskParams
from eventservice.errors import InvalidInput


def test_task_defaults_match_design() -> None:
    params = TaskParams()
    assert params.nEventsPerWorker == 1
    assert params.nEsConsumers == 1
    assert params.maxAttempt == 20
    assert params.maxFailure == 10
    assert params.esMaxAttempt == 10
    assert params.esMaxAttemptJob == 100
    assert params.coreCount == 0
    assert params.ramCount == 0
    assert params.mergeEsOnOS == "yes"
    assert params.skipScout == "yes"
    assert 0.0 <= params.esFraction <= 1.0
    assert params.nEventsPerJob >= params.nEventsPerWorker


def test_task_from_mapping_converts_wire_strings() -> None:
    params = TaskParams.from_mapping(
        {"esFraction": "0.5", "nEventsPerJob": "40", "nEventsPerWorker": "4", "nEsConsumers": 3}
    )
    assert params.esFraction == 0.5
    assert params.nEventsPerJob == 40
    assert params.nEventsPerWorker == 4
    assert params.nEsConsumers == 3
    assert params.esMaxAttempt == 10  # untouched default
    assert TaskParams.from_mapping(params.asdict()) == params


def test_task_from_empty_mapping_is_default() -> None:
    assert TaskParams.from_mapping({}) == TaskParams()


@pytest.mark.parametrize(
    "data",
    [
        {"esFraction": 1.5},
        {"esFraction": -0.1},
        {"esFraction": "nan"},
        {"esFraction": True},
        {"nEventsPerJob": 0},
        {"nEventsPerWorker": 0},
        {"nEsConsumers": 0},
        {"maxAttempt": 0},
        {"esMaxAttempt": 0},
        {"esMaxAttemptJob": 0},
        {"maxFailure": -1},
        {"coreCount": -1},
        {"ramCount": -1},
        {"nEventsPerJob": 10, "nEventsPerWorker": 11},
        {"mergeEsOnOS": "maybe"},
        {"skipScout": "true"},
        {"nEventsPerJob": "ten"},
        {"nEventsPerJob": 1.5},
        {"nEventsPerJob": True},
        {"nEventsPerJob": None},
        {"nEventsPerJob": [1]},
        {"prodSourceLabel": ["x"]},
        {"prodSourceLabel": True},
        {"noSuchParameter": 1},
    ],
)
def test_task_invalid(data: dict) -> None:
    with pytest.raises(InvalidInput):
        TaskParams.from_mapping(data)


def test_task_unknown_names_are_listed() -> None:
    with pytest.raises(InvalidInput, match="bogus"):
        TaskParams.from_mapping({"bogus": 1, "nEventsPerJob": 5})


def test_task_not_a_mapping() -> None:
    with pytest.raises(InvalidInput):
        TaskParams.from_mapping(["nEventsPerJob"])  # type: ignore[arg-type]


def test_queue_defaults() -> None:
    queue = QueueParams()
    assert queue.jobseed == "all"
    assert queue.pledgedcpu == 0
    assert not queue.opportunistic
    assert queue.zip_time_gap is None
    assert queue.effective_zip_time_gap == 7200
    assert queue.not_es_to_zip is False
    assert queue.storages == {}
    assert queue.asdict()["effective_zip_time_gap"] == 7200


def test_queue_opportunistic_zip_default() -> None:
    queue = QueueParams(pledgedcpu=-1)
    assert queue.opportunistic
    assert queue.effective_zip_time_gap == 600
    assert QueueParams(pledgedcpu=-1, zip_time_gap=30).effective_zip_time_gap == 30
    assert QueueParams(pledgedcpu=0, zip_time_gap=0).effective_zip_time_gap == 0


@pytest.mark.parametrize("jobseed", JOBSEEDS)
def test_queue_jobseeds(jobseed: str) -> None:
    assert QueueParams.from_mapping({"jobseed": jobseed}).jobseed == jobseed


def test_queue_jobseeds_are_the_designed_ones() -> None:
    assert set(JOBSEEDS) == {"es", "std", "all", "eshigh"}


def test_queue_from_mapping_converts_strings() -> None:
    queue = QueueParams.from_mapping(
        {
            "corecount": "8",
            "pledgedcpu": "-1",
            "not_es_to_zip": "True",
            "zip_time_gap": "60",
            "storages": {"es_events": ["file:///a", "s3://b/c"], "pl": ["file:///logs"]},
        }
    )
    assert queue.corecount == 8
    assert queue.opportunistic
    assert queue.not_es_to_zip is True
    assert queue.zip_time_gap == 60
    assert queue.storages["es_events"] == ["file:///a", "s3://b/c"]
    assert QueueParams.from_mapping({"not_es_to_zip": "no"}).not_es_to_zip is False


@pytest.mark.parametrize(
    "data",
    [
        {"corecount": 0},
        {"jobseed": "sometimes"},
        {"zip_time_gap": -1},
        {"maxtime": -1},
        {"heartbeat": 0},
        {"storages": ["file:///a"]},
        {"storages": {"bogus_activity": ["file:///a"]}},
        {"storages": {"es_events": "file:///a"}},
        {"storages": {"es_events": [""]}},
        {"storages": {"es_events": [3]}},
        {"not_es_to_zip": "perhaps"},
        {"not_es_to_zip": 1.5},
        {"corecount": "many"},
        {"unknown": 1},
    ],
)
def test_queue_invalid(data: dict) -> None:
    with pytest.raises(InvalidInput):
        QueueParams.from_mapping(data)
