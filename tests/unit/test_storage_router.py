"""StorageRouter: order, retries, fallback, cool-down, pools and downloads, on fakes and file://."""

from __future__ import annotations

import errno
import uuid
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from eventservice.errors import InvalidInput
from eventservice.storage import (
    AllEndpointsFailed,
    BundleError,
    ChecksumMismatch,
    ObjectMissing,
    SourceUnreadable,
    StorageConfigError,
    StorageError,
    StorageRouter,
    StoredObject,
    adler32_file,
    make_bundle,
)


class FlakyFS(MemoryFileSystem):
    """An in-memory store that fails the next writes with scripted errors."""

    protocol = "flaky"
    failures: list[BaseException] = []
    opens = 0

    def _open(self, path, mode="rb", **kwargs):
        if "w" in mode:
            type(self).opens += 1
            if type(self).failures:
                raise type(self).failures.pop(0)
        return super()._open(path, mode, **kwargs)


fsspec.register_implementation("flaky", FlakyFS, clobber=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _reset_flaky():
    FlakyFS.failures, FlakyFS.opens = [], 0
    yield
    FlakyFS.failures = []


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "out.root"
    path.write_bytes(b"0123456789" * 1000)
    return path


def flaky_base() -> str:
    return f"flaky://es-{uuid.uuid4().hex[:8]}"


def make(storages, **kwargs) -> StorageRouter:
    kwargs.setdefault("backoff", 0)
    return StorageRouter(storages, **kwargs)


def test_upload_to_file_store_returns_a_verified_object(tmp_path, source):
    base = f"file://{tmp_path / 'os'}"
    stored = make({"es_events": [base]}).upload(source, "1/2/1-3-0-5-1.out.root")

    assert stored == StoredObject(
        f"{base}/1/2/1-3-0-5-1.out.root", 10_000, adler32_file(source), base
    )
    assert (tmp_path / "os/1/2/1-3-0-5-1.out.root").read_bytes() == source.read_bytes()
    assert [p.name for p in (tmp_path / "os/1/2").iterdir()] == ["1-3-0-5-1.out.root"]


def test_transient_errors_are_retried_on_the_same_endpoint(source):
    base = flaky_base()
    FlakyFS.failures = [ConnectionError("reset"), TimeoutError("slow")]
    sleeps: list[float] = []
    router = make({"es_events": [base]}, retries=2, backoff=1.0, sleep=sleeps.append)

    stored = router.upload(source, "1/1/x")

    assert stored.endpoint == base
    assert FlakyFS.opens == 3
    assert len(sleeps) == 2 and 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0


def test_permanent_errors_move_on_at_once(source, tmp_path):
    base, failover = flaky_base(), f"file://{tmp_path / 'fo'}"
    FlakyFS.failures = [PermissionError(13, "Access Denied")]
    router = make({"es_events": [base], "es_failover": [failover]}, retries=5)

    stored = router.upload(source, "1/1/x")

    assert stored.endpoint == failover
    assert FlakyFS.opens == 1
    assert "permission denied" in router.cooling_down()[base]


def test_full_disk_is_permanent_and_falls_back(source, tmp_path):
    base, failover = flaky_base(), f"file://{tmp_path / 'fo'}"
    FlakyFS.failures = [OSError(errno.ENOSPC, "No space left on device")]
    router = make({"es_events": [base], "es_failover": [failover]})

    assert router.upload(source, "1/1/x").endpoint == failover
    assert "no space left on device" in router.cooling_down()[base]


def test_endpoints_are_tried_in_order_then_each_fallback_activity(source, tmp_path):
    bases = [flaky_base() for _ in range(3)]
    FlakyFS.failures = [PermissionError("a"), PermissionError("b")]
    router = make({"es_events": bases[:2], "pw": [bases[2]]}, retries=0)

    stored = router.upload(source, "1/1/x", fallback=("pw",))

    assert stored.endpoint == bases[2]
    assert list(router.cooling_down()) == bases[:2]


def test_all_failing_raises_one_error_that_explains_each(source):
    bases = [flaky_base(), flaky_base()]
    FlakyFS.failures = [
        PermissionError("denied!"),
        ConnectionError("refused!"),
        ConnectionError("refused!"),
    ]
    router = make({"es_events": [bases[0]], "es_failover": [bases[1]]}, retries=1)

    with pytest.raises(AllEndpointsFailed) as caught:
        router.upload(source, "1/1/x")

    assert [b for b, _ in caught.value.failures] == bases
    assert "denied!" in caught.value.failures[0][1]
    assert "refused!" in caught.value.failures[1][1]
    assert "after 2 tries" in caught.value.failures[1][1]
    assert isinstance(caught.value, StorageError)


def test_a_cooling_endpoint_is_skipped_until_the_cooldown_ends(source, tmp_path):
    bad, good = flaky_base(), f"file://{tmp_path / 'fo'}"
    clock = Clock()
    router = make({"es_events": [bad], "es_failover": [good]}, cooldown=60, retries=0, clock=clock)
    FlakyFS.failures = [ConnectionError("down")]
    router.upload(source, "1/1/a")
    opens_after_failure = FlakyFS.opens

    clock.now += 59
    router.upload(source, "1/1/b")
    skipped = FlakyFS.opens == opens_after_failure
    clock.now += 2
    stored = router.upload(source, "1/1/c")

    assert skipped
    assert stored.endpoint == bad
    assert router.cooling_down() == {}


def test_when_only_cooling_endpoints_remain_they_are_tried_as_last_resort(source):
    base = flaky_base()
    router = make({"es_events": [base]}, cooldown=3600, retries=3)
    FlakyFS.failures = [PermissionError("blip")]
    with pytest.raises(AllEndpointsFailed):
        router.upload(source, "1/1/a")

    stored = router.upload(source, "1/1/b")

    assert stored.endpoint == base
    assert base not in router.cooling_down()


def test_unreadable_source_is_not_blamed_on_any_endpoint(tmp_path):
    base = flaky_base()
    router = make({"es_events": [base]})

    with pytest.raises(SourceUnreadable, match="cannot read local file"):
        router.upload(tmp_path / "missing", "1/1/x")
    assert FlakyFS.opens == 0
    assert router.cooling_down() == {}


def test_read_only_endpoints_refuse_uploads(source, tmp_path):
    fallback = f"file://{tmp_path / 'fo'}"
    router = make({"es_events": ["https://example.invalid/data"], "es_failover": [fallback]})

    stored = router.upload(source, "1/1/x")

    assert stored.endpoint == fallback
    assert "read-only" in router.cooling_down()["https://example.invalid/data"]


def test_configuration_mistakes_are_refused_early(source):
    with pytest.raises(InvalidInput, match="unknown storage activity"):
        StorageRouter({"es_evnts": ["file:///x"]})
    with pytest.raises(InvalidInput, match="list of URL strings"):
        StorageRouter({"es_events": "file:///x"})
    router = make({"es_events": []})
    with pytest.raises(StorageConfigError, match="no storage endpoint configured"):
        router.upload(source, "1/1/x")
    with pytest.raises(InvalidInput, match=r"'\.\.'"):
        router.upload(source, "1/../x")


def test_object_store_ids_follow_activity_order_and_first_appearance():
    router = StorageRouter(
        {
            "pl": ["file:///logs"],
            "es_failover": ["s3://b/es", "file:///os"],
            "es_events": ["file:///os"],
            "pr": ["root://h//in"],
        }
    )

    assert router.object_store_ids == {
        "root://h//in": 1,
        "file:///os": 2,
        "s3://b/es": 3,
        "file:///logs": 4,
    }


def test_upload_many_returns_results_in_order_with_errors_in_place(tmp_path):
    base = f"file://{tmp_path / 'os'}"
    items = []
    for i in range(8):
        path = tmp_path / f"f{i}"
        path.write_bytes(bytes([i]) * (i + 1))
        items.append((path, f"1/1/r{i}"))
    items[5] = (tmp_path / "missing", "1/1/r5")

    results = make({"es_events": [base]}).upload_many(items, workers=3)

    assert [type(r).__name__ for r in results] == ["StoredObject"] * 5 + ["SourceUnreadable"] + [
        "StoredObject"
    ] * 2
    assert [r.size for r in results if isinstance(r, StoredObject)] == [1, 2, 3, 4, 5, 7, 8]


def test_download_verifies_and_reports_missing_objects(tmp_path, source):
    base = f"file://{tmp_path / 'os'}"
    router = make({"es_events": [base]}, retries=1)
    stored = router.upload(source, "1/1/x")

    good = router.download(
        stored.url, tmp_path / "w" / "x", size=stored.size, adler32=stored.adler32
    )
    with pytest.raises(ChecksumMismatch):
        router.download(stored.url, tmp_path / "w" / "y", adler32="deadbeef")
    with pytest.raises(ObjectMissing):
        router.download(f"{base}/1/1/nothing", tmp_path / "w" / "z")

    assert good.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["x"]


def test_download_retries_a_transient_read_failure(tmp_path, source, monkeypatch):
    from eventservice.storage import router as router_module

    router = make({}, retries=2)
    calls = {"n": 0}
    real_fetch = router_module.fetch

    def flaky_fetch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ChecksumMismatch("bits flipped on the wire")
        return real_fetch(*args, **kwargs)

    monkeypatch.setattr(router_module, "fetch", flaky_fetch)
    path = router.download(str(source), tmp_path / "copy", adler32=adler32_file(source))

    assert calls["n"] == 2
    assert path.read_bytes() == source.read_bytes()


def bundle_members(tmp_path: Path, count: int = 3, size: int = 600_000) -> list[Path]:
    paths = []
    for i in range(count):
        path = tmp_path / "outputs" / f"1-2-3-{i}-1.out"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes([i + 1]) * size)
        paths.append(path)
    return paths


def test_upload_bundle_streams_the_tar_into_the_store(tmp_path):
    base = f"file://{tmp_path / 'os'}"
    paths = bundle_members(tmp_path)
    expected = make_bundle(paths, tmp_path / "expected.tar")

    stored = make({"es_events": [base]}).upload_bundle(paths, "1/2/7.1.tar")

    assert stored == StoredObject(
        f"{base}/1/2/7.1.tar", expected.stat().st_size, adler32_file(expected), base
    )
    assert (tmp_path / "os/1/2/7.1.tar").read_bytes() == expected.read_bytes()
    assert [p.name for p in (tmp_path / "os/1/2").iterdir()] == ["7.1.tar"]  # no .part
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == [p.name for p in paths]


def test_upload_bundle_retries_and_falls_back_like_upload(tmp_path):
    paths = bundle_members(tmp_path)
    expected = make_bundle(paths, tmp_path / "expected.tar").read_bytes()
    base, failover = flaky_base(), f"file://{tmp_path / 'fo'}"
    FlakyFS.failures = [ConnectionError("reset"), PermissionError(13, "Access Denied")]
    router = make({"es_events": [base], "es_failover": [failover]}, retries=3)

    stored = router.upload_bundle(paths, "1/2/7.1.tar")

    assert stored.endpoint == failover and FlakyFS.opens == 2
    assert "permission denied" in router.cooling_down()[base]
    assert (tmp_path / "fo/1/2/7.1.tar").read_bytes() == expected


def test_a_bundle_retried_after_a_failure_mid_stream_is_made_again_from_the_start(
    tmp_path, monkeypatch
):
    from tests.faults import fail_checksum_update

    paths = bundle_members(tmp_path)
    expected = make_bundle(paths, tmp_path / "expected.tar").read_bytes()
    calls = fail_checksum_update(monkeypatch, on_call=2)  # the first try's second chunk
    base = f"file://{tmp_path / 'os'}"

    stored = make({"es_events": [base]}, retries=1).upload_bundle(paths, "1/2/7.1.tar")

    assert calls["n"] > 2
    assert (tmp_path / "os/1/2/7.1.tar").read_bytes() == expected
    assert stored.size == len(expected)
    assert [p.name for p in (tmp_path / "os/1/2").iterdir()] == ["7.1.tar"]


def test_bad_bundle_members_are_not_blamed_on_any_endpoint(tmp_path, monkeypatch):
    from eventservice.storage import bundle as bundle_module

    paths = bundle_members(tmp_path)
    base, failover = flaky_base(), f"file://{tmp_path / 'fo'}"
    router = make({"es_events": [base], "es_failover": [failover]})

    with pytest.raises(BundleError, match="not a regular file"):
        router.upload_bundle([*paths, tmp_path / "missing.out"], "1/2/7.1.tar")
    with pytest.raises(BundleError, match="duplicate member names"):
        router.upload_bundle([paths[0], paths[0]], "1/2/7.1.tar")
    assert FlakyFS.opens == 0

    real_again = bundle_module.TarStream.again

    def shrink_then_again(self):  # a member changes after the bundle was planned
        paths[1].write_bytes(b"x")
        return real_again(self)

    monkeypatch.setattr(bundle_module.TarStream, "again", shrink_then_again)
    router = make({"es_events": [f"file://{tmp_path / 'os'}"], "es_failover": [failover]})

    with pytest.raises(BundleError, match="shrank from 600000 bytes"):
        router.upload_bundle(paths, "1/2/7.1.tar")
    assert router.cooling_down() == {}
    assert list((tmp_path / "os/1/2").iterdir()) == []  # the .part file is gone
    assert not (tmp_path / "fo").exists()  # the fallback was not tried
