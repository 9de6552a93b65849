"""The storage contract: every backend (file://, s3:// on moto, root:// on xrootd) passes it."""

from __future__ import annotations

import os
import random
import zlib
from pathlib import Path

import pytest

from eventservice.storage import (
    ChecksumMismatch,
    ObjectMissing,
    StorageRouter,
    StoredObject,
    adler32_file,
    bundle_name,
    extract_bundle,
    make_bundle,
    object_name,
    open_input,
)
from tests.faults import fail_checksum_update

from .conftest import Backend


def write(path: Path, size: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def router_for(backend: Backend, **kwargs: object) -> StorageRouter:
    return StorageRouter(
        {"es_events": [backend.base]}, backoff=0, options=backend.options, **kwargs
    )  # type: ignore[arg-type]


def test_upload_stores_the_bytes_under_the_deterministic_name(backend: Backend, tmp_path):
    source = write(tmp_path / "out.root", 300_000)
    name = object_name(7, 3, "7-100-1-20-1", "out.root")

    stored = router_for(backend).upload(source, name)

    assert stored == StoredObject(
        url=f"{backend.base}/7/3/7-100-1-20-1.out.root",
        size=300_000,
        adler32=adler32_file(source),
        endpoint=backend.base,
    )
    assert backend.read(stored.url) == source.read_bytes()
    assert backend.names() == ["7/3/7-100-1-20-1.out.root"]  # no temporary left behind


def test_large_upload_is_verified_and_leaves_no_temporary(backend: Backend, tmp_path):
    source = write(tmp_path / "big.root", 12 * 1024 * 1024 + 123)

    stored = router_for(backend).upload(source, "1/1/big.root")

    assert stored.size == source.stat().st_size
    assert stored.adler32 == format(zlib.adler32(source.read_bytes()), "08x")
    assert backend.read(stored.url) == source.read_bytes()
    assert backend.names() == ["1/1/big.root"]
    assert backend.pending_uploads() == 0


def test_empty_file_round_trips(backend: Backend, tmp_path):
    source = write(tmp_path / "empty", 0)
    router = router_for(backend)

    stored = router.upload(source, "1/1/empty")
    back = router.download(stored.url, tmp_path / "back", size=0, adler32="00000001")

    assert (stored.size, stored.adler32) == (0, "00000001")
    assert back.read_bytes() == b""


def test_a_retried_upload_overwrites_its_own_object(backend: Backend, tmp_path):
    router = router_for(backend)
    router.upload(write(tmp_path / "a", 1000, seed=1), "1/1/x.out")

    stored = router.upload(write(tmp_path / "b", 500, seed=2), "1/1/x.out")

    assert backend.read(stored.url) == (tmp_path / "b").read_bytes()
    assert backend.names() == ["1/1/x.out"]


def test_a_failure_mid_stream_leaves_nothing_under_the_final_name(
    backend: Backend, tmp_path, monkeypatch
):
    source = write(tmp_path / "big", 11 * 1024 * 1024)
    fail_checksum_update(monkeypatch, on_call=2)  # the local disk dies after the first chunk
    router = router_for(backend, retries=0)

    with pytest.raises(Exception, match="Input/output error"):
        router.upload(source, "1/1/big")

    assert backend.names() == []
    assert backend.pending_uploads() == 0


def test_download_verifies_size_and_adler32(backend: Backend, tmp_path):
    source = write(tmp_path / "out", 70_000)
    router = router_for(backend)
    stored = router.upload(source, "2/2/out")

    into_dir = tmp_path / "workdir"
    into_dir.mkdir()
    path = router.download(stored.url, into_dir, size=stored.size, adler32=stored.adler32)

    assert path == into_dir / "out"
    assert path.read_bytes() == source.read_bytes()


def test_download_with_a_wrong_checksum_is_refused_and_leaves_no_file(backend: Backend, tmp_path):
    router = router_for(backend, retries=1)
    stored = router.upload(write(tmp_path / "out", 5000), "2/2/out")
    dest = tmp_path / "dl" / "out"

    with pytest.raises(ChecksumMismatch, match="adler32"):
        router.download(stored.url, dest, size=stored.size, adler32="ad:00000002")
    with pytest.raises(ChecksumMismatch, match="expected 4999"):
        router.download(stored.url, dest, size=4999)

    assert not dest.parent.exists() or list(dest.parent.iterdir()) == []


def test_an_object_corrupted_after_transfer_is_caught_on_download(backend: Backend, tmp_path):
    router = router_for(backend)
    stored = router.upload(write(tmp_path / "out", 5000), "3/3/out")
    data = bytearray(backend.read(stored.url))
    data[100] ^= 0xFF
    backend.write(stored.url, bytes(data))

    dest = tmp_path / "merge" / "out"
    with pytest.raises(ChecksumMismatch, match=f"expected {stored.adler32}"):
        router.download(stored.url, dest, size=stored.size, adler32=stored.adler32)

    assert list(dest.parent.iterdir()) == []


def test_an_object_gone_before_the_merge_is_a_precise_error(backend: Backend, tmp_path):
    router = router_for(backend)
    stored = router.upload(write(tmp_path / "out", 5000), "4/4/out")
    backend.delete(stored.url)

    merge_dir = tmp_path / "merge"
    with pytest.raises(ObjectMissing, match="not found") as caught:
        router.download(stored.url, merge_dir / "out", size=stored.size, adler32=stored.adler32)

    assert stored.url in str(caught.value)
    assert list(merge_dir.iterdir()) == []


def test_upload_many_runs_a_pool_and_keeps_the_order(backend: Backend, tmp_path):
    items = [(write(tmp_path / f"f{i}", 1000 + i, seed=i), f"5/5/r{i}.out") for i in range(12)]

    results = router_for(backend).upload_many(items, workers=4)

    assert [r.url for r in results] == [f"{backend.base}/5/5/r{i}.out" for i in range(12)]
    assert all(
        backend.read(r.url) == p.read_bytes() for r, (p, _) in zip(results, items, strict=True)
    )


def test_a_bundle_round_trips_through_the_store(backend: Backend, tmp_path):
    outputs = [write(tmp_path / "out" / f"6-1-0-{i}-1.out", 2000 + i, seed=i) for i in range(5)]
    tar = make_bundle(outputs, tmp_path / "bundle.tar")
    router = router_for(backend)
    stored = router.upload(tar, bundle_name(6, 1, 99, 0))

    local = router.download(
        stored.url, tmp_path / "got.tar", size=stored.size, adler32=stored.adler32
    )
    members = extract_bundle(local, tmp_path / "extracted")

    assert stored.url.endswith("/6/1/99.0.tar")
    assert [m.name for m in members] == [p.name for p in outputs]
    assert [m.read_bytes() for m in members] == [p.read_bytes() for p in outputs]


def test_a_streamed_bundle_is_the_tar_make_bundle_writes(backend: Backend, tmp_path):
    # 7.8 MB: more than the 5 MiB S3 part size of these tests, so a multipart upload.
    sizes = [2_600_000, 0, 2_600_000, 1_234, 2_600_000]
    outputs = [write(tmp_path / "out" / f"6-1-0-{i}-1.out", n, seed=i) for i, n in enumerate(sizes)]
    expected = make_bundle(outputs, tmp_path / "expected.tar")
    router = router_for(backend)

    stored = router.upload_bundle(outputs, bundle_name(6, 1, 99, 0))
    local = router.download(
        stored.url, tmp_path / "got.tar", size=stored.size, adler32=stored.adler32
    )

    assert (stored.size, stored.adler32) == (expected.stat().st_size, adler32_file(expected))
    assert local.read_bytes() == expected.read_bytes()
    assert [m.read_bytes() for m in extract_bundle(local, tmp_path / "x")] == [
        p.read_bytes() for p in outputs
    ]
    assert backend.names() == ["6/1/99.0.tar"]
    assert backend.pending_uploads() == 0


def test_a_small_streamed_bundle_round_trips(backend: Backend, tmp_path):
    outputs = [write(tmp_path / "out" / f"6-1-0-{i}-1.out", 2000 + i, seed=i) for i in range(5)]
    router = router_for(backend)

    stored = router.upload_bundle(outputs, bundle_name(6, 1, 99, 1))

    assert backend.read(stored.url) == make_bundle(outputs, tmp_path / "b.tar").read_bytes()
    assert backend.names() == ["6/1/99.1.tar"]


def test_a_bundle_member_failing_mid_stream_leaves_nothing_in_the_store(
    backend: Backend, tmp_path, monkeypatch
):
    from eventservice.storage import BundleError
    from eventservice.storage import bundle as bundle_module

    outputs = [write(tmp_path / "out" / f"6-1-0-{i}-1.out", 3_000_000, seed=i) for i in range(3)]
    real_again = bundle_module.TarStream.again

    def shrink_then_again(self):  # the last member is cut short once the upload began
        outputs[-1].write_bytes(b"cut")
        return real_again(self)

    monkeypatch.setattr(bundle_module.TarStream, "again", shrink_then_again)

    with pytest.raises(BundleError, match="shrank"):
        router_for(backend).upload_bundle(outputs, bundle_name(6, 1, 99, 2))

    assert backend.names() == []
    assert backend.pending_uploads() == 0


def test_open_input_reads_only_the_ranges_it_needs(backend: Backend, tmp_path, storage_config):
    size = 8 * 1024 * 1024
    source = write(tmp_path / "input.root", size)
    stored = router_for(backend).upload(source, "input/input.root")

    with open_input(stored.url) as handle:
        handle.seek(5 * 1024 * 1024)
        piece = handle.read(1000)
        fetched = getattr(getattr(handle, "cache", None), "total_requested_bytes", None)

    assert piece == source.read_bytes()[5 * 1024 * 1024 : 5 * 1024 * 1024 + 1000]
    if backend.kind != "file":
        assert fetched is not None and 0 < fetched <= 2 * 1024 * 1024


def test_stored_objects_are_what_the_store_lists(backend: Backend, tmp_path):
    router = router_for(backend)
    for i in range(3):
        router.upload(write(tmp_path / f"x{i}", 100), f"9/{i}/x")

    assert backend.names() == ["9/0/x", "9/1/x", "9/2/x"]
    assert os.path.basename(router.upload(tmp_path / "x0", "9/0/x").url) == "x"
