"""Parsing getJob answers and queue definitions into the pilot's dataclasses."""

from __future__ import annotations

import pytest

from eventservice.errors import InvalidInput
from eventservice.pilot.job import (
    ExecutorKind,
    Job,
    QueueConfig,
    cores_for,
    parse_checksum,
    parse_write_to_file,
    range_events,
)

ES_JOB = {
    "StatusCode": 0,
    "PandaID": "12",
    "jobsetID": "3",
    "taskID": "1",
    "attemptNr": "1",
    "coreCount": "4",
    "maxWalltime": "0",
    "transformation": "run",
    "jobPars": "",
    "inFiles": "a.root,b.root",
    "inFilesURL": "file:///d/a.root,s3://b/b.root",
    "fsize": "10,20",
    "checksum": "ad:0000000a,ad:0000000b",
    "GUID": "g1,g2",
    "outFiles": "out.root",
    "logFile": "1.12.log.tgz",
    "eventService": "True",
}


def test_es_job_fields():
    job = Job.from_fields(ES_JOB)
    assert job.kind is ExecutorKind.EVENTSERVICE
    assert (job.panda_id, job.jobset_id, job.task_id, job.core_count) == (12, 3, 1, 4)
    assert [i.lfn for i in job.inputs] == ["a.root", "b.root"]
    assert job.inputs[1].url == "s3://b/b.root" and job.inputs[1].size == 20
    assert job.inputs[0].adler32 == "0000000a"
    assert job.input_url("b.root") == "s3://b/b.root"
    assert job.input_url("zzz") is None
    assert job.out_files == ("out.root",)


def test_ranges_left_after_a_range_of_the_chunk():
    job = Job.from_fields(
        ES_JOB | {"firstEvent": "100", "lastEvent": "199", "nEventsPerWorker": "10"}
    )
    assert job.ranges_after({"startEvent": 100, "lastEvent": 109}) == 9
    assert job.ranges_after({"startEvent": "180", "lastEvent": "189"}) == 1
    assert job.ranges_after({"startEvent": 190, "lastEvent": 199}) == 0
    # A chunk that does not end on a range boundary: its last range is shorter.
    short = Job.from_fields(ES_JOB | {"lastEvent": "104", "nEventsPerWorker": "10"})
    assert short.ranges_after({"startEvent": 90, "lastEvent": 99}) == 1
    # Without nEventsPerWorker the range's own length stands in.
    bare = Job.from_fields(ES_JOB | {"lastEvent": "20"})
    assert bare.ranges_after({"startEvent": 0, "lastEvent": 4}) == 4
    # A server that does not say where the chunk ends: unknown.
    assert Job.from_fields(ES_JOB).ranges_after({"startEvent": 0, "lastEvent": 4}) is None
    assert job.ranges_after({"startEvent": 0}) is None


def test_merge_and_normal_kinds():
    merge = Job.from_fields(
        {
            "PandaID": 5,
            "eventServiceMerge": "True",
            "eventService": "False",
            "writeToFile": "inputFor_out.root:x.tar,y.tar^inputFor_o2:z",
            "eventRangeIDs": "1-2-3-4-1,1-2-3-5-2",
        }
    )
    assert merge.kind is ExecutorKind.MERGE
    assert merge.write_to_file == {"out.root": ["x.tar", "y.tar"], "o2": ["z"]}
    assert merge.event_range_ids == {"1-2-3-4-1", "1-2-3-5-2"}
    assert Job.from_fields({"PandaID": 6, "eventService": "False"}).kind is ExecutorKind.GENERIC


def test_bad_job_fields_are_refused():
    with pytest.raises(InvalidInput):
        Job.from_fields({"jobsetID": 1})
    with pytest.raises(InvalidInput, match="jobsetID"):
        Job.from_fields({"PandaID": 1, "jobsetID": "x"})


def test_helpers():
    assert parse_checksum("ad:ABCDEF01") == "abcdef01"
    assert parse_checksum("") is None
    assert parse_checksum("md5:xx") is None
    assert parse_write_to_file("") == {}
    assert range_events({"startEvent": 10, "lastEvent": 14}) == 5
    assert range_events({}) == 1


def test_queue_config_and_cores():
    queue = QueueConfig.from_api(
        {
            "name": "Q",
            "corecount": 2,
            "pledgedcpu": -1,
            "zip_time_gap": None,
            "effective_zip_time_gap": 600,
            "not_es_to_zip": False,
            "maxtime": 100,
            "heartbeat": 5,
            "storages": {"es_events": ["file:///a"]},
            "objectStores": {"file:///a": 3},
        }
    )
    assert queue.zip_time_gap == 600 and queue.heartbeat == 5 and queue.maxtime == 100
    assert queue.objstore_id("file:///a") == 3
    assert queue.objstore_id("file:///a/") == 3
    assert queue.objstore_id("file:///b") is None
    job = Job.from_fields(ES_JOB)
    assert cores_for(job, queue, None) == 4
    assert cores_for(job, queue, 8) == 8
    assert cores_for(Job.from_fields({"PandaID": 1}), queue, None) == 2
