"""Faults against real servers: each gives a precise error and falls back where it can."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventservice.storage import AllEndpointsFailed, StorageRouter
from eventservice.storage import endpoint as endpoint_module
from eventservice.storage import local as local_module
from eventservice.storage import s3 as s3_module

from .conftest import Backend, S3Server, closed_port, make_backend
from .test_contract import write


@pytest.fixture
def fallback(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'failover'}"


@pytest.fixture
def s3(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return make_backend("s3", request, tmp_path)


@pytest.fixture
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return make_backend("root", request, tmp_path)


def router(storages: dict[str, list[str]], options: dict, **kwargs) -> StorageRouter:
    return StorageRouter(storages, backoff=0, options=options, **kwargs)


def count_puts(router: StorageRouter, base: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    endpoint = router.endpoint(base)
    original = endpoint.put

    def counting(local, name):
        calls.append(name)
        return original(local, name)

    monkeypatch.setattr(endpoint, "put", counting)
    return calls


@pytest.mark.parametrize("kind", ["s3", "root"])
def test_unreachable_endpoint_falls_back_and_cools_down(
    kind, request, tmp_path, fallback, monkeypatch
):
    port = closed_port()
    if kind == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        dead, options = (
            "s3://bucket/es",
            {"s3://": server.options(endpoint_url=f"http://127.0.0.1:{port}")} if server else {},
        )
    else:
        dead, options = f"root://127.0.0.1:{port}//data/es", {"root://": {"timeout": 5}}
    storages = {"es_events": [dead], "es_failover": [fallback]}
    r = router(storages, options, retries=1, cooldown=3600)
    source = write(tmp_path / "out", 1000)

    first = r.upload(source, "1/1/a")
    calls = count_puts(r, dead, monkeypatch)
    second = r.upload(source, "1/1/b")

    assert (first.endpoint, second.endpoint) == (fallback, fallback)
    assert "unreachable" in r.cooling_down()[dead]
    assert calls == []  # skipped while cooling down


def test_every_endpoint_failing_explains_each_failure(s3: Backend, root: Backend, tmp_path):
    port = closed_port()
    storages = {
        "es_events": [f"s3://no-such-bucket-{os.getpid()}/es", f"root://127.0.0.1:{port}//x"],
        "es_failover": [root.xrootd.url("../outside") if root.xrootd else "", "file:///sys/no"],
    }
    options = {**s3.options, "root://": {"timeout": 5}}
    r = router(storages, options, retries=1)

    with pytest.raises(AllEndpointsFailed) as caught:
        r.upload(write(tmp_path / "out", 100), "1/1/out")

    failures = dict(caught.value.failures)
    assert list(failures) == storages["es_events"] + storages["es_failover"]
    assert "does not exist" in failures[storages["es_events"][0]]
    assert "unreachable" in failures[storages["es_events"][1]]
    assert "after 2 tries" in failures[storages["es_events"][1]]  # transient: retried
    assert "not permitted" in failures["file:///sys/no"]
    assert all(base in str(caught.value) for base in failures)


def test_wrong_s3_credentials_are_refused_and_fall_back(s3: Backend, tmp_path, fallback):
    assert s3.s3 is not None
    options = {"s3://": s3.s3.options(key=s3.s3.key, secret="not-the-secret")}
    r = router({"es_events": [s3.base], "es_failover": [fallback]}, options)

    stored = r.upload(write(tmp_path / "out", 100), "1/1/out")

    reason = r.cooling_down()[s3.base]
    assert stored.endpoint == fallback
    assert "permission denied" in reason and "signature" in reason.lower()
    assert s3.names() == []


def test_unknown_s3_access_key_is_refused(s3: Backend, tmp_path):
    options = {"s3://": s3.s3.options(key="AKIAUNKNOWN0000000000", secret="x")} if s3.s3 else {}
    r = router({"es_events": [s3.base]}, options, retries=2)

    with pytest.raises(AllEndpointsFailed, match="permission denied") as caught:
        r.upload(write(tmp_path / "out", 100), "1/1/out")

    assert "tries" not in str(caught.value)  # permanent: not retried


def test_missing_bucket_falls_back(s3: Backend, tmp_path, fallback):
    missing = "s3://eventservice-missing-bucket/es"
    r = router({"es_events": [missing], "es_failover": [fallback]}, s3.options)

    stored = r.upload(write(tmp_path / "out", 100), "1/1/out")

    assert stored.endpoint == fallback
    assert "does not exist" in r.cooling_down()[missing]


def test_unwritable_xrootd_directory_falls_back(root: Backend, tmp_path, fallback):
    assert root.xrootd is not None
    locked = root.xrootd.export / "data" / "locked"
    locked.mkdir(mode=0o755, exist_ok=True)  # owned by root: the server (nobody) cannot write
    if os.geteuid() != 0:
        locked.chmod(0o555)
    base = root.xrootd.url("locked")
    r = router({"es_events": [base], "es_failover": [fallback]}, root.options)

    stored = r.upload(write(tmp_path / "out", 100), "1/1/out")

    assert stored.endpoint == fallback
    assert "permission" in r.cooling_down()[base].lower()
    assert list(locked.rglob("*")) == []


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[callable]:
    mounted: list[Path] = []

    def mount(size: str, read_only: bool = False) -> Path:
        target = tmp_path / f"mnt{len(mounted)}"
        target.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            pytest.skip("needs permission to mount a small tmpfs")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], check=False)


def test_full_disk_is_a_precise_error_and_leaves_nothing(tmpfs, tmp_path, fallback):
    small = tmpfs("1m")
    base = f"file://{small}/os"
    r = router({"es_events": [base], "es_failover": [fallback]}, {})

    stored = r.upload(write(tmp_path / "out", 3 * 1024 * 1024), "1/1/out")

    assert stored.endpoint == fallback
    assert "no space left on device" in r.cooling_down()[base]
    assert [p for p in small.rglob("*") if p.is_file()] == []


def test_read_only_disk_is_a_precise_error(tmpfs, tmp_path):
    frozen = tmpfs("1m", read_only=True)
    r = router({"es_events": [f"file://{frozen}"]}, {})

    with pytest.raises(AllEndpointsFailed, match="read-only file system"):
        r.upload(write(tmp_path / "out", 100), "1/1/out")


def _corrupting_stream(drop_last_byte: bool):
    def stream(source, target, chunk_size):
        size, adler32 = original_stream(source, _Corrupt(target, drop_last_byte), chunk_size)
        return size, adler32

    return stream


original_stream = endpoint_module.stream


class _Corrupt:
    """A writer that flips (or drops) the last byte of the first chunk it is given."""

    def __init__(self, target, drop: bool) -> None:
        self.target, self.drop, self.done = target, drop, False

    def write(self, data: bytes) -> int:
        asked = len(data)
        if not self.done:
            self.done = True
            data = data[:-1] if self.drop else data[:-1] + bytes([data[-1] ^ 0xFF])
        self.target.write(data)
        return asked  # claims success, as a lying disk or network would


def test_xrootd_server_checksum_catches_corruption_before_commit(
    root: Backend, tmp_path, monkeypatch
):
    monkeypatch.setattr(endpoint_module, "stream", _corrupting_stream(drop_last_byte=False))
    r = router({"es_events": [root.base]}, root.options, retries=1)

    with pytest.raises(AllEndpointsFailed, match=r"server adler32 [0-9a-f]{8} differs") as caught:
        r.upload(write(tmp_path / "out", 5000), "1/1/out")

    assert "after 2 tries" in str(caught.value)  # a corrupted transfer is worth retrying
    assert root.names() == []  # neither the object nor its temporary is left


def test_local_size_check_catches_a_short_write(tmp_path, monkeypatch):
    monkeypatch.setattr(local_module, "stream", _corrupting_stream(drop_last_byte=True))
    base = f"file://{tmp_path / 'os'}"
    r = router({"es_events": [base]}, {}, retries=0)

    with pytest.raises(AllEndpointsFailed, match="wrote 5000 bytes but the disk holds 4999"):
        r.upload(write(tmp_path / "out", 5000), "1/1/out")

    assert list((tmp_path / "os").rglob("*.*")) == []


def test_s3_server_refuses_bytes_that_do_not_match_their_md5(s3: Backend, tmp_path, monkeypatch):
    real_md5 = s3_module._md5
    monkeypatch.setattr(s3_module, "_md5", lambda data: real_md5(data + b"corrupted"))
    r = router({"es_events": [s3.base]}, s3.options, retries=0)

    with pytest.raises(AllEndpointsFailed, match=r"(?i)md5|digest"):
        r.upload(write(tmp_path / "out", 5000), "1/1/out")

    assert s3.names() == []
