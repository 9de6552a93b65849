"""Storage building blocks: names, checksums, bundles, options, error translation."""

from __future__ import annotations

import errno
import io
import json
import tarfile
import zlib
from pathlib import Path

import pytest

from eventservice.errors import InvalidInput
from eventservice.storage import (
    BundleError,
    ObjectMissing,
    StorageConfigError,
    adler32_bytes,
    adler32_file,
    backends,
    bundle_name,
    extract_bundle,
    join_url,
    make_bundle,
    normalize_adler32,
    object_name,
)
from eventservice.storage.config import load_config_file, options_for
from eventservice.storage.errors import EndpointError, translate
from eventservice.storage.naming import check_object_name


def test_object_and_bundle_names_follow_the_protocol():
    assert object_name(12, 3, "12-4001-7-20-2", "out.root") == "12/3/12-4001-7-20-2.out.root"
    assert bundle_name(12, 3, 4001, 5) == "12/3/4001.5.tar"


@pytest.mark.parametrize("bad", ["", "/abs", "a/../b", "a//b", "./a", "a\\b"])
def test_object_names_that_could_escape_are_refused(bad):
    with pytest.raises(InvalidInput):
        check_object_name(bad)


def test_object_name_parts_must_not_contain_slashes():
    with pytest.raises(InvalidInput, match="filename"):
        object_name(1, 2, "1-2-3-4-1", "../evil")


def test_join_url_puts_objects_under_the_base():
    assert join_url("s3://bucket/es/", "1/2/x") == "s3://bucket/es/1/2/x"
    assert join_url("root://h:1094//data", "1/2/x") == "root://h:1094//data/1/2/x"


def test_adler32_matches_zlib_and_is_eight_lowercase_hex(tmp_path):
    data = b"event service" * 100_000
    path = tmp_path / "f"
    path.write_bytes(data)

    assert adler32_file(path) == format(zlib.adler32(data), "08x")
    assert adler32_bytes(b"") == "00000001"
    assert adler32_bytes(b"a") == "00620062"


def test_normalize_adler32_accepts_panda_forms():
    assert normalize_adler32("ad:0A1B2C3D") == "0a1b2c3d"
    assert normalize_adler32("1b2c3d") == "001b2c3d"
    with pytest.raises(InvalidInput):
        normalize_adler32("xyz")


def test_bundle_round_trip_names_members_by_basename(tmp_path):
    files = []
    for i in range(3):
        path = tmp_path / f"dir{i}" / f"1-2-3-{i}-1.out"
        path.parent.mkdir()
        path.write_bytes(bytes([i]) * (100 + i))
        files.append(path)

    tar = make_bundle(files, tmp_path / "b.tar")
    with tarfile.open(tar, "r:") as opened:  # "r:" opens plain, uncompressed tars only
        names = opened.getnames()
    extracted = extract_bundle(tar, tmp_path / "x")

    assert names == [p.name for p in files]
    assert [p.read_bytes() for p in extracted] == [p.read_bytes() for p in files]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_bundle_refuses_duplicate_basenames(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        (tmp_path / d / "same.out").write_bytes(b"x")

    with pytest.raises(BundleError, match="duplicate"):
        make_bundle([tmp_path / "a" / "same.out", tmp_path / "b" / "same.out"], tmp_path / "b.tar")
    assert not (tmp_path / "b.tar").exists()


def _evil_tar(path: Path, name: str, kind: bytes = tarfile.REGTYPE) -> Path:
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        info.type = kind
        if kind == tarfile.SYMTYPE:
            info.linkname = "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 3
            tar.addfile(info, io.BytesIO(b"bad"))
    return path


@pytest.mark.parametrize(
    ("name", "kind", "why"),
    [
        ("/etc/evil", tarfile.REGTYPE, "absolute"),
        ("../evil", tarfile.REGTYPE, r"'\.\.'"),
        ("ok/../../evil", tarfile.REGTYPE, r"'\.\.'"),
        ("link", tarfile.SYMTYPE, "not a regular file"),
    ],
)
def test_extract_refuses_members_that_escape(tmp_path, name, kind, why):
    tar = _evil_tar(tmp_path / "evil.tar", name, kind)

    with pytest.raises(BundleError, match=why):
        extract_bundle(tar, tmp_path / "dest")
    assert list((tmp_path / "dest").iterdir()) == []


def test_options_layer_defaults_environment_file_and_router(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://from-aws-env:1")
    monkeypatch.setenv("FSSPEC_S3_ENDPOINT_URL", "http://from-fsspec-env:2")
    config = tmp_path / "storage.json"
    config.write_text(
        json.dumps(
            {
                "s3://": {"key": "file-key"},
                "s3://bucket": {"config_kwargs": {"connect_timeout": 1}},
                "root://": {"timeout": 9},
            }
        )
    )
    monkeypatch.setenv("EVENTSERVICE_STORAGE_CONFIG", str(config))

    merged = options_for("s3://bucket/es", load_config_file(), {"s3://bucket/es": {"key": "mine"}})

    assert merged["endpoint_url"] == "http://from-fsspec-env:2"
    assert merged["key"] == "mine"
    assert merged["config_kwargs"]["connect_timeout"] == 1
    assert merged["config_kwargs"]["retries"]["max_attempts"] == 2  # default kept
    assert options_for("s3://other/x", load_config_file())["key"] == "file-key"
    assert options_for("root://h//x", load_config_file()) == {"timeout": 9}


def test_a_named_config_file_that_is_missing_or_malformed_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("EVENTSERVICE_STORAGE_CONFIG", str(tmp_path / "nope.json"))
    with pytest.raises(StorageConfigError, match="does not exist"):
        load_config_file()
    bad = tmp_path / "bad.json"
    bad.write_text('["not", "a", "map"]')
    with pytest.raises(StorageConfigError, match="must map URL prefixes"):
        load_config_file(bad)


def test_missing_optional_driver_names_the_extra(monkeypatch):
    real = backends.importlib.import_module

    def refuse(name, *args):
        if name == "s3fs":
            raise ImportError("no s3fs")
        return real(name, *args)

    monkeypatch.setattr(backends.importlib, "import_module", refuse)
    with pytest.raises(StorageConfigError, match=r"pip install eventservice\[s3\]"):
        backends.make_endpoint("s3://bucket/x", {})


def test_unknown_scheme_is_a_config_error():
    with pytest.raises(StorageConfigError, match="unsupported storage URL scheme"):
        backends.make_endpoint("gopher://x/y", {})


@pytest.mark.parametrize(
    ("exc", "kind", "retryable", "words"),
    [
        (FileNotFoundError(2, "No such file"), ObjectMissing, False, "not found"),
        (PermissionError(13, "denied"), EndpointError, False, "permission denied"),
        (OSError(errno.ENOSPC, "No space"), EndpointError, False, "no space left"),
        (OSError(errno.EROFS, "ro"), EndpointError, False, "read-only"),
        (
            OSError("[ERROR] Server responded with an error: [3011] Unable to locate"),
            ObjectMissing,
            False,
            "not found",
        ),
        (
            OSError("[ERROR] Server responded with an error: [3010] disallowed"),
            EndpointError,
            False,
            "not authorized",
        ),
        (
            OSError("Directory not made properly: [FATAL] Connection error"),
            EndpointError,
            True,
            "unreachable",
        ),
        (ConnectionRefusedError(111, "refused"), EndpointError, True, "unreachable"),
        (RuntimeError("odd"), EndpointError, True, "RuntimeError: odd"),
    ],
)
def test_translate_names_the_failure_and_whether_to_retry(exc, kind, retryable, words):
    error = translate(exc, "root://h//x/y", "read")

    assert type(error) is kind
    assert error.retryable is retryable
    assert words in str(error) and str(error).startswith("read root://h//x/y")


def test_a_missing_destination_on_upload_is_not_called_a_missing_object():
    error = translate(
        FileNotFoundError("The specified bucket does not exist"), "s3://b/x", "upload to"
    )

    assert not isinstance(error, ObjectMissing)
    assert "missing bucket or directory" in str(error)
