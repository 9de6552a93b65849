"""Real storage servers on loopback for the storage tests, and one ``backend`` fixture.

- XRootD: Debian's ``xrootd`` (package xrootd-server) on a free port, exporting a
  temporary directory, computing adler32 (``xrootd.chksum adler32``). As root it
  runs as ``nobody`` (``-R nobody``): it refuses to run as root.
- S3: moto's standalone server (``python -m moto.server``) with IAM checks on, so
  wrong credentials are really refused: the first three requests (create a user, its
  access key and an ``s3:*`` policy) are let through unauthenticated, every later
  one must be signed with that key.
- file://: a temporary directory.

A server that cannot start skips its tests locally and fails them in CI
(:func:`tests.conftest.require_service`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_service
from tests.servers import ServerUnavailable, free_port, moto_process, xrootd_process

S3_BUCKET = "eventservice-test"


def closed_port() -> int:
    """A loopback port that nothing listens on (bound and released)."""
    return free_port()


@dataclass
class XRootDServer:
    port: int
    export: Path  # local directory that the server's /data maps to

    def url(self, path: str) -> str:
        return f"root://127.0.0.1:{self.port}//data/{path.lstrip('/')}"

    def local(self, url: str) -> Path:
        return self.export / "data" / url.split("//data/", 1)[1]


@dataclass
class S3Server:
    endpoint_url: str
    key: str
    secret: str
    bucket: str = S3_BUCKET
    extra: dict[str, Any] = field(default_factory=dict)

    def options(self, **overrides: Any) -> dict[str, Any]:
        return {
            "endpoint_url": self.endpoint_url,
            "key": self.key,
            "secret": self.secret,
            **overrides,
        }

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
        )


@pytest.fixture(scope="session")
def xrootd_server() -> Iterator[XRootDServer | None]:
    try:
        with xrootd_process("eventservice-xrootd-") as (port, export):
            yield XRootDServer(port, export)
            return
    except ServerUnavailable:
        pass
    yield None


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server | None]:
    try:
        import boto3  # noqa: F401
    except ImportError:
        yield None
        return
    try:
        # The first three requests (user, key, policy) may go unauthenticated.
        with moto_process({"INITIAL_NO_AUTH_ACTION_COUNT": "3"}) as endpoint:
            yield _s3_account(endpoint)
            return
    except ServerUnavailable:
        pass
    yield None


def _s3_account(endpoint_url: str) -> S3Server:
    import boto3

    iam = boto3.client(
        "iam",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="bootstrap",
        aws_secret_access_key="bootstrap",
    )
    iam.create_user(UserName="eventservice")
    key = iam.create_access_key(UserName="eventservice")["AccessKey"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    iam.put_user_policy(UserName="eventservice", PolicyName="s3", PolicyDocument=json.dumps(policy))
    server = S3Server(endpoint_url, key["AccessKeyId"], key["SecretAccessKey"])
    server.client().create_bucket(Bucket=server.bucket)
    return server


@dataclass
class Backend:
    """One store under test: a fresh base URL, the router options it needs, raw access."""

    kind: str
    base: str
    options: dict[str, dict[str, Any]]
    s3: S3Server | None = None
    xrootd: XRootDServer | None = None

    def read(self, url: str) -> bytes:
        if self.kind == "file":
            return Path(url.removeprefix("file://")).read_bytes()
        if self.kind == "root":
            assert self.xrootd is not None
            return self.xrootd.local(url).read_bytes()
        assert self.s3 is not None
        key = url.removeprefix(f"s3://{self.s3.bucket}/")
        return self.s3.client().get_object(Bucket=self.s3.bucket, Key=key)["Body"].read()

    def write(self, url: str, data: bytes) -> None:
        """Change an object behind the store's back (simulating corruption)."""
        if self.kind == "s3":
            assert self.s3 is not None
            key = url.removeprefix(f"s3://{self.s3.bucket}/")
            self.s3.client().put_object(Bucket=self.s3.bucket, Key=key, Body=data)
        else:
            self._path(url).write_bytes(data)

    def delete(self, url: str) -> None:
        if self.kind == "s3":
            assert self.s3 is not None
            key = url.removeprefix(f"s3://{self.s3.bucket}/")
            self.s3.client().delete_object(Bucket=self.s3.bucket, Key=key)
        else:
            self._path(url).unlink()

    def names(self) -> list[str]:
        """Every object (temporary ones included) under this backend's base, relative."""
        if self.kind == "s3":
            assert self.s3 is not None
            prefix = self.base.removeprefix(f"s3://{self.s3.bucket}/") + "/"
            pages = (
                self.s3.client()
                .get_paginator("list_objects_v2")
                .paginate(Bucket=self.s3.bucket, Prefix=prefix)
            )
            return sorted(o["Key"][len(prefix) :] for p in pages for o in p.get("Contents", []))
        root = self._path(self.base)
        if not root.exists():
            return []
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    def pending_uploads(self) -> int:
        """Unfinished S3 multipart uploads under this base (0 for other stores)."""
        if self.kind != "s3":
            return 0
        assert self.s3 is not None
        prefix = self.base.removeprefix(f"s3://{self.s3.bucket}/")
        answer = self.s3.client().list_multipart_uploads(Bucket=self.s3.bucket, Prefix=prefix)
        return len(answer.get("Uploads", []))

    def _path(self, url: str) -> Path:
        if self.kind == "root":
            assert self.xrootd is not None
            return self.xrootd.local(url)
        return Path(url.removeprefix("file://"))


def make_backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    prefix = f"t-{uuid.uuid4().hex[:10]}"
    if kind == "file":
        return Backend("file", f"file://{tmp_path / 'store' / prefix}", {})
    if kind == "s3":
        server = request.getfixturevalue("s3_server")
        require_service(server is not None, "S3 server (moto_server)")
        return Backend(
            "s3",
            f"s3://{server.bucket}/{prefix}",
            {"s3://": server.options(part_size=5 << 20)},
            s3=server,
        )
    server = request.getfixturevalue("xrootd_server")
    require_service(server is not None, "XRootD server (xrootd-server package)")
    return Backend("root", server.url(prefix), {"root://": {"timeout": 30}}, xrootd=server)


@pytest.fixture(params=["file", "s3", "root"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """The same contract test runs against file://, s3:// (moto) and root:// (xrootd)."""
    return make_backend(request.param, request, tmp_path)


@pytest.fixture
def storage_config(backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A storage config file holding the backend's options, named in the environment."""
    path = tmp_path / "storage.json"
    path.write_text(json.dumps(backend.options))
    monkeypatch.setenv("EVENTSERVICE_STORAGE_CONFIG", str(path))
    return path
