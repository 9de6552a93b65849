"""Stage-out with a real StorageRouter on local directories, and merge input selection."""

from __future__ import annotations

import dataclasses
import tarfile
import time
from pathlib import Path

from eventservice.pilot.executors.merge import collect_inputs, range_id_of
from eventservice.pilot.job import Job, QueueConfig
from eventservice.pilot.reports import ReportJournal
from eventservice.pilot.stageout import StageOut, member_name
from eventservice.storage import StorageRouter, adler32_file, make_bundle

JOB = Job.from_fields({"PandaID": 7, "jobsetID": 3, "taskID": 2, "eventService": "True"})


def queue_config(tmp_path: Path, **extra) -> QueueConfig:
    storages = {
        "es_events": [f"file://{tmp_path / 'os'}"],
        "es_failover": [f"file://{tmp_path / 'fo'}"],
    }
    storages.update(extra.pop("storages", {}))
    return QueueConfig(
        name="Q",
        storages=storages,
        object_stores={f"file://{tmp_path / 'os'}": 1, f"file://{tmp_path / 'fo'}": 2},
        **extra,
    )


def outputs(tmp_path: Path, n: int) -> list[tuple[dict, Path]]:
    result = []
    for i in range(n):
        rid = f"2-7-1-{i}-1"
        path = tmp_path / "payload" / f"HITS{i}.root"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"events of {rid}")
        result.append(({"eventRangeID": rid, "startEvent": i * 2, "lastEvent": i * 2 + 1}, path))
    return result


def run_stageout(tmp_path: Path, config: QueueConfig, items, router=None, **kwargs):
    journal = ReportJournal(tmp_path / "journal")
    router = router or StorageRouter(config.storages, retries=0)
    given_up = []
    stage = StageOut(
        JOB,
        config,
        router,
        journal,
        tmp_path / "stage",
        on_give_up=lambda: given_up.append(True),
        **kwargs,
    )
    stage.start()
    for event_range, path in items:
        stage.put(event_range, path, cpu=1.5, wall=2.0)
    stage.finish(timeout=30)
    return stage, [entry for _, entry in journal.pending()], given_up


def test_bundles_are_verified_reported_as_version_1_and_deleted(tmp_path):
    items = outputs(tmp_path, 3)
    stage, entries, _ = run_stageout(tmp_path, queue_config(tmp_path, zip_time_gap=3600), items)
    [entry] = entries  # finish() ships at once, in one bundle
    assert entry["version"] == 1
    zip_file = entry["items"][0]["zipFile"]
    assert zip_file["lfn"] == "7.1.tar" and zip_file["objstoreID"] == 1
    assert zip_file["numEvents"] == 6 and len(zip_file["adler32"]) == 8
    stored = Path(zip_file["path"].removeprefix("file://"))
    assert stored == tmp_path / "os" / "2" / "3" / "7.1.tar"
    assert stored.stat().st_size == zip_file["fsize"]
    with tarfile.open(stored) as tar:
        assert sorted(tar.getnames()) == [f"2-7-1-{i}-1.HITS{i}.root" for i in range(3)]
    ranges = entry["items"][0]["eventRanges"]
    assert [r["eventStatus"] for r in ranges] == ["finished"] * 3
    assert ranges[0]["cpuConsumptionTime"] == 1.5 and ranges[0]["wallTime"] == 2.0
    assert not list((tmp_path / "payload").iterdir())  # local copies deleted
    assert stage.shipped_ranges == 3 and stage.shipped_events == 6


class RecordingRouter(StorageRouter):
    """A real router that notes which upload was used and can misreport sizes."""

    def __init__(self, *args, size_error: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []
        self.size_error = size_error

    def upload(self, *args, **kwargs):
        self.calls.append("upload")
        return super().upload(*args, **kwargs)

    def upload_bundle(self, *args, **kwargs):
        self.calls.append("upload_bundle")
        stored = super().upload_bundle(*args, **kwargs)
        return dataclasses.replace(stored, size=stored.size + self.size_error)


def test_bundles_are_streamed_into_the_store_without_a_local_tar(tmp_path):
    config = queue_config(tmp_path, zip_time_gap=3600)
    router = RecordingRouter(config.storages, retries=0)

    _, entries, _ = run_stageout(tmp_path, config, outputs(tmp_path, 3), router=router)

    assert router.calls == ["upload_bundle"]
    assert list((tmp_path / "stage").iterdir()) == []
    zip_file = entries[0]["items"][0]["zipFile"]
    stored = Path(zip_file["path"].removeprefix("file://"))
    assert zip_file["fsize"] == stored.stat().st_size
    assert zip_file["adler32"] == adler32_file(stored)
    with tarfile.open(stored) as tar:
        contents = [tar.extractfile(m).read() for m in tar.getmembers()]  # type: ignore[union-attr]
    assert contents == [f"events of 2-7-1-{i}-1".encode() for i in range(3)]


def test_a_bundle_stored_with_the_wrong_size_is_not_reported_finished(tmp_path):
    config = queue_config(tmp_path, zip_time_gap=0)
    router = RecordingRouter(config.storages, retries=0, size_error=1)

    _, entries, given_up = run_stageout(
        tmp_path, config, outputs(tmp_path, 2), router=router, max_failures=1
    )

    items = [item for entry in entries for item in entry["items"]]
    assert [i["eventStatus"] for i in items] == ["failed", "failed"]
    assert "stored" in items[0]["errorDiag"] and given_up == [True]


def test_one_by_one_with_failover(tmp_path):
    broken = tmp_path / "file"
    broken.write_text("x")
    config = queue_config(
        tmp_path, not_es_to_zip=True, storages={"es_events": [f"file://{broken}/os"]}
    )
    _, entries, given_up = run_stageout(tmp_path, config, outputs(tmp_path, 2))
    items = [item for entry in entries for item in entry["items"]]
    assert all(e["version"] == 0 for e in entries) and len(items) == 2
    assert {i["objstoreID"] for i in items} == {2} and not given_up
    assert items[0]["path"].endswith("/2/3/2-7-1-0-1.HITS0.root")
    assert (tmp_path / "fo" / "2" / "3" / "2-7-1-1-1.HITS1.root").read_text().startswith("events")


def test_repeated_failures_give_up_and_report_failed(tmp_path):
    broken = tmp_path / "file"
    broken.write_text("x")
    config = queue_config(
        tmp_path,
        storages={"es_events": [f"file://{broken}/a"], "es_failover": [f"file://{broken}/b"]},
    )
    stage, entries, given_up = run_stageout(
        tmp_path, config, outputs(tmp_path, 2), max_failures=2, retry_delay=0.01
    )
    assert given_up == [True] and stage.given_up
    items = [item for entry in entries for item in entry["items"]]
    assert [i["eventStatus"] for i in items] == ["failed", "failed"]
    assert all(i["errorCode"] == 1137 for i in items)


def test_missing_output_fails_only_that_range(tmp_path):
    items = outputs(tmp_path, 2)
    items[0][1].unlink()
    _, entries, _ = run_stageout(tmp_path, queue_config(tmp_path, zip_time_gap=0), items)
    items_out = [item for entry in entries for item in entry["items"]]
    failed = [i for i in items_out if i.get("eventStatus") == "failed"]
    assert [f["eventRangeID"] for f in failed] == ["2-7-1-0-1"] and failed[0]["errorCode"] == 1223
    assert any("zipFile" in i for i in items_out)


def test_zip_time_gap_waits_before_shipping(tmp_path):
    journal = ReportJournal(tmp_path / "journal")
    config = queue_config(tmp_path, zip_time_gap=0.5)
    stage = StageOut(JOB, config, StorageRouter(config.storages), journal, tmp_path / "stage")
    stage.start()
    ((event_range, path),) = outputs(tmp_path, 1)
    stage.put(event_range, path)
    time.sleep(0.2)
    assert len(journal) == 0  # still collecting
    deadline = time.monotonic() + 10
    while len(journal) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(journal) == 1
    stage.finish(timeout=10)


def test_member_names():
    assert member_name("1-2-3-4-1", Path("/x/1-2-3-4-1.HITS.root")) == "1-2-3-4-1.HITS.root"
    assert member_name("1-2-3-4-1", Path("/x/out.root")) == "1-2-3-4-1.out.root"
    assert range_id_of(Path("1-2-3-4-1.HITS.root")) == "1-2-3-4-1"


class Ctx:
    def __init__(self, ids):
        self.job = Job.from_fields(
            {"PandaID": 9, "eventServiceMerge": "True", "eventRangeIDs": ",".join(ids)}
        )


def test_merge_keeps_only_accepted_ranges(tmp_path):
    accepted = ["1-2-3-0-1", "1-2-3-1-2"]
    files = []
    for rid in ("1-2-3-0-1", "1-2-3-1-1", "1-2-3-1-2"):  # 1-2-3-1-1: a refused late attempt
        path = tmp_path / "src" / f"{rid}.out"
        path.parent.mkdir(exist_ok=True)
        path.write_text(rid)
        files.append(path)
    bundle = make_bundle(files[:2], tmp_path / "5.1.tar")
    single = tmp_path / files[2].name
    single.write_text(files[2].read_text())
    kept = collect_inputs(Ctx(accepted), [bundle, single], tmp_path / "merge")
    assert [p.name for p in kept["5.1.tar"]] == ["1-2-3-0-1.out"]
    assert [p.name for p in kept[single.name]] == ["1-2-3-1-2.out"]


def test_each_report_is_announced_and_the_thread_waits_without_a_timer(tmp_path):
    journal = ReportJournal(tmp_path / "journal")
    config = queue_config(tmp_path, not_es_to_zip=True)
    announced = []
    stage = StageOut(
        JOB,
        config,
        StorageRouter(config.storages),
        journal,
        tmp_path / "stage",
        on_report=lambda: announced.append(len(journal)),
    )
    assert stage._wait_time(finishing=False) is None  # nothing to ship: sleep until put()
    assert stage._wait_time(finishing=True) == 0.0
    stage.start()
    for event_range, path in outputs(tmp_path, 2):
        stage.put(event_range, path)
    stage.finish(timeout=10)
    # Announced once per report, each already on disk for the executor to send.
    assert announced == [1, 2]


def test_a_bundle_in_collection_wakes_the_thread_when_it_is_due(tmp_path):
    config = queue_config(tmp_path, zip_time_gap=30)
    stage = StageOut(
        JOB, config, StorageRouter(config.storages), ReportJournal(tmp_path / "j"), tmp_path / "s"
    )
    ((event_range, path),) = outputs(tmp_path, 1)
    stage._collected.append(stage_output(event_range, path))
    assert 29 < stage._wait_time(finishing=False) <= 30


def stage_output(event_range: dict, path: Path):
    from eventservice.pilot.stageout import Output

    return Output(event_range, path, None, None)
