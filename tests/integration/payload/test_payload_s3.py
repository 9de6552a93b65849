"""Reading inputs through fsspec: an S3 object store (moto), endpoint from the environment."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventservice.payload.inputs import make_input, read_input_metadata
from eventservice.payload.simulate import Simulator
from eventservice.payload.workers import RangeError

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }.items():
        monkeypatch.setenv(name, value)
    try:
        yield endpoint
    finally:
        server.stop()


def test_ranges_read_from_s3(s3_endpoint: str, tmp_path: Path) -> None:
    local = tmp_path / "evnt.root"
    make_input(local, 6, seed=1, guid="GUID-S3")
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="inputs")
    client.upload_file(str(local), "inputs", "evnt.root")
    url = "s3://inputs/evnt.root"
    assert read_input_metadata(url) == ("GUID-S3", 6)
    simulator = Simulator(cpu_per_event=0.0, workdir=str(tmp_path))
    event_range = {
        "eventRangeID": "1-1-1-2-1",
        "startEvent": 2,
        "lastEvent": 4,
        "LFN": "evnt.root",
        "PFN": url,
        "GUID": "GUID-S3",
    }
    path, _, _ = simulator.process_range(event_range)
    assert Path(path).exists()
    with pytest.raises(RangeError, match=r"s3://inputs/absent\.root: no such file"):
        simulator.process_range({**event_range, "PFN": "s3://inputs/absent.root"})
