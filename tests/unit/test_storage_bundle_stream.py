"""TarStream: a bundle made on the fly, byte for byte the tar that tarfile writes."""

from __future__ import annotations

import io
import os
import random
import tarfile
from pathlib import Path

import pytest

from eventservice.storage import BundleError, TarStream, extract_bundle, make_bundle
from eventservice.storage import local as local_module
from eventservice.storage.bundle import _ustar_header

SIZES = [0, 1, 511, 512, 513, 10_240, 100_000, 1_048_577]


def members(tmp_path: Path, sizes: list[int] = SIZES) -> list[Path]:
    rng = random.Random(5)
    paths = []
    for i, size in enumerate(sizes):
        path = tmp_path / "in" / f"1-2-3-{i}-1.out"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
        os.chmod(path, 0o640)
        paths.append(path)
    return paths


def tarfile_bytes(paths: list[Path]) -> bytes:
    """What tarfile itself writes for these members (owner 0:0, whole-second mtimes)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in paths:
            info = tar.gettarinfo(str(path), arcname=path.name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = int(info.mtime)
            with open(path, "rb") as handle:
                tar.addfile(info, handle)
    return buffer.getvalue()


def read_all(stream: TarStream, size: int) -> bytes:
    chunks = []
    while chunk := stream.read(size):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("chunk", [1, 500, 512, 4096, 1 << 20, -1])
def test_the_stream_is_the_tar_that_tarfile_writes(tmp_path, chunk):
    paths = members(tmp_path, SIZES if chunk < 0 or chunk >= 512 else SIZES[:-1])
    expected = tarfile_bytes(paths)

    stream = TarStream(paths)
    data = read_all(stream, chunk)

    assert data == expected
    assert stream.size == len(expected) and len(expected) % tarfile.RECORDSIZE == 0
    assert stream.read(100) == b""


def test_readinto_fills_the_buffer_until_the_end(tmp_path):
    paths = members(tmp_path)
    stream = TarStream(paths)
    buffer = bytearray(3000)
    pieces = []
    while filled := stream.readinto(buffer):
        assert filled == len(buffer) or stream.read(1) == b""  # short only at the end
        pieces.append(bytes(buffer[:filled]))

    assert b"".join(pieces) == tarfile_bytes(paths)


def test_again_starts_the_same_tar_from_its_first_byte(tmp_path):
    paths = members(tmp_path)
    stream = TarStream(paths)
    first = stream.read(70_000)

    again = stream.again()

    assert read_all(again, 1 << 16) == first + read_all(stream, 1 << 16)


def test_make_bundle_writes_the_same_bytes(tmp_path):
    paths = members(tmp_path)

    tar = make_bundle(paths, tmp_path / "b.tar")

    assert tar.read_bytes() == tarfile_bytes(paths)
    assert [p.read_bytes() for p in extract_bundle(tar, tmp_path / "x")] == [
        p.read_bytes() for p in paths
    ]


def test_an_empty_bundle_is_a_valid_empty_tar(tmp_path):
    data = read_all(TarStream([]), 1000)

    assert data == bytes(tarfile.RECORDSIZE)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames() == []


def test_names_that_need_a_pax_header_still_round_trip(tmp_path):
    long_name = tmp_path / ("r" * 120 + ".out")
    accented = tmp_path / "événement.out"
    for path in (long_name, accented):
        path.write_bytes(path.name.encode())

    data = read_all(TarStream([long_name, accented]), 1 << 20)

    assert data == tarfile_bytes([long_name, accented])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames() == [long_name.name, accented.name]


def test_the_quick_header_is_the_one_tarfile_makes():
    rng = random.Random(9)
    for _ in range(2000):
        name = "".join(rng.choice("abcXYZ019._-") for _ in range(rng.randint(1, 100)))
        size = rng.choice([0, 1, 511, 512, rng.randrange(8**11)])
        mode, mtime = rng.randrange(0o10000), rng.randrange(8**11)
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, mode, mtime
        info.uid = info.gid = 0
        info.uname = info.gname = ""

        assert _ustar_header(name, size, mode, mtime) == info.tobuf(
            tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape"
        )
    assert _ustar_header("x" * 101, 1, 0o644, 0) is None
    assert _ustar_header("é", 1, 0o644, 0) is None


def test_bad_members_are_refused_when_the_stream_is_made(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "same.out").write_text("1")
    (tmp_path / "b" / "same.out").write_text("2")

    with pytest.raises(BundleError, match="duplicate member names"):
        TarStream([tmp_path / "a" / "same.out", tmp_path / "b" / "same.out"])
    with pytest.raises(BundleError, match="not a regular file"):
        TarStream([tmp_path / "missing.out"])
    with pytest.raises(BundleError, match="not a regular file"):
        TarStream([tmp_path / "a"])


def test_a_member_that_shrinks_or_vanishes_is_an_error_not_a_short_tar(tmp_path):
    paths = members(tmp_path, [100_000, 100_000])
    stream = TarStream(paths)
    paths[0].write_bytes(b"short")

    with pytest.raises(BundleError, match="shrank from 100000 bytes"):
        read_all(stream, 1 << 20)

    paths[0].unlink()
    with pytest.raises(BundleError, match="cannot read"):
        read_all(stream.again(), 1 << 20)


def test_closing_early_closes_the_open_member(tmp_path):
    stream = TarStream(members(tmp_path, [100_000]))
    stream.read(1000)  # in the middle of the member

    stream.close()

    assert stream._handle is None
    with pytest.raises(ValueError, match="closed"):
        stream.read(1)


@pytest.mark.parametrize("fsync", [True, False])
def test_a_local_store_gets_the_same_bytes_with_and_without_o_direct(tmp_path, fsync):
    from eventservice.storage import StorageRouter

    paths = members(tmp_path)
    router = StorageRouter(
        {"es_events": [f"file://{tmp_path / 'os'}"]}, options={"file://": {"fsync": fsync}}
    )

    stored = router.upload_bundle(paths, "1/2/7.1.tar")

    assert Path(stored.url.removeprefix("file://")).read_bytes() == tarfile_bytes(paths)


def test_a_filesystem_without_o_direct_gets_plain_writes(tmp_path, monkeypatch):
    from eventservice.storage import StorageRouter

    real = local_module.fcntl.fcntl

    def refuse_direct(fd, command, *args):
        if command == local_module.fcntl.F_SETFL and args[0] & getattr(os, "O_DIRECT", 0):
            raise OSError(22, "Invalid argument")
        return real(fd, command, *args)

    monkeypatch.setattr(local_module.fcntl, "fcntl", refuse_direct)
    paths = members(tmp_path)

    stored = StorageRouter({"es_events": [f"file://{tmp_path / 'os'}"]}).upload_bundle(
        paths, "1/2/7.1.tar"
    )

    assert Path(stored.url.removeprefix("file://")).read_bytes() == tarfile_bytes(paths)


def test_a_direct_write_the_filesystem_refuses_is_written_again_plainly(tmp_path, monkeypatch):
    from eventservice.storage import StorageRouter

    refused = []
    real_write = local_module._write_all

    def write_all(target, piece):
        flags = local_module.fcntl.fcntl(target.fileno(), local_module.fcntl.F_GETFL)
        if flags & getattr(os, "O_DIRECT", 0) and not refused:
            refused.append(len(piece))
            raise OSError(22, "Invalid argument")
        real_write(target, piece)

    enabled = []
    real_set = local_module._set_direct

    def set_direct(target, on):
        enabled.append(real_set(target, on))
        return enabled[-1]

    monkeypatch.setattr(local_module, "_write_all", write_all)
    monkeypatch.setattr(local_module, "_set_direct", set_direct)
    paths = members(tmp_path)

    stored = StorageRouter({"es_events": [f"file://{tmp_path / 'os'}"]}).upload_bundle(
        paths, "1/2/7.1.tar"
    )

    assert Path(stored.url.removeprefix("file://")).read_bytes() == tarfile_bytes(paths)
    if enabled[0]:  # this filesystem takes O_DIRECT: the direct path was refused once
        assert refused and enabled[1:] == [False]
