"""The reference payload: determinism, per-range processing, failures, the worker loop."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import numpy as np
import pytest
import uproot

from eventservice.payload.channel import (
    NO_MORE_EVENTS,
    READY,
    ChannelClient,
    RangeDone,
    RangeFailed,
    parse_payload_message,
)
from eventservice.payload.inputs import InputFile, make_input
from eventservice.payload.merge import merge_outputs
from eventservice.payload.simulate import Simulator, run_sequential
from eventservice.payload.simulation import HEAVY_FACTOR, cost_factor
from eventservice.payload.verify import verify_files
from eventservice.payload.workers import RangeError, serve_ranges

GUID = "GUID-SIM"


@pytest.fixture(scope="module")
def evnt(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sim") / "evnt.root"
    make_input(path, 20, seed=11, guid=GUID)
    return str(path)


def a_range(start: int, last: int, lfn: str, **extra: object) -> dict[str, object]:
    return {
        "eventRangeID": f"1-2-3-{start}-1",
        "startEvent": start,
        "lastEvent": last,
        "LFN": lfn,
        "GUID": GUID,
        "scope": "test",
        **extra,
    }


def test_event_hits_do_not_depend_on_range_boundaries(evnt: str) -> None:
    simulator = Simulator(cpu_per_event=0.0)
    with InputFile.open(evnt) as source:
        whole = simulator.simulate(source, 0, 9)
        piece = simulator.simulate(source, 4, 6)
    for a, b in zip(whole[4:7], piece, strict=True):
        assert a.event_number == b.event_number
        assert np.array_equal(a.edep, b.edep) and np.array_equal(a.x, b.x)
        assert len(a.edep) > 0


def test_heavy_tail_is_deterministic_and_rare() -> None:
    factors = [cost_factor("G", n) for n in range(2000)]
    assert factors == [cost_factor("G", n) for n in range(2000)]
    heavy = sum(f == HEAVY_FACTOR for f in factors) / len(factors)
    assert 0.03 < heavy < 0.07


def test_per_range_outputs_merge_to_the_sequential_output(evnt: str, tmp_path) -> None:
    simulator = Simulator(cpu_per_event=0.0, workdir=str(tmp_path))
    outputs = []
    for start, last in [(12, 19), (0, 4), (5, 11)]:  # any order, any widths
        path, cpu, wall = simulator.process_range(a_range(start, last, evnt))
        assert path == str(tmp_path / f"1-2-3-{start}-1.HITS.root")
        assert cpu >= 0 and wall > 0
        outputs.append(path)
    with uproot.open(outputs[1]) as out:
        assert out["hits"]["eventNumber"].array().tolist() == [0, 1, 2, 3, 4]
        assert str(out["inputGUID"]) == GUID
    sequential, n = run_sequential(evnt, str(tmp_path / "seq.root"), cpu_per_event=0.0, chunk=7)
    assert n == 20
    merged = merge_outputs(outputs, str(tmp_path / "merged.root"))
    report = verify_files(merged.path, sequential)
    assert report.identical, report.summary()


def test_sequential_sub_range(evnt: str, tmp_path) -> None:
    path, n = run_sequential(evnt, str(tmp_path / "part.root"), 3, 5, cpu_per_event=0.0)
    assert n == 3
    with uproot.open(path) as out:
        assert out["hits"]["eventNumber"].array().tolist() == [3, 4, 5]


def test_pfn_wins_over_lfn(evnt: str, tmp_path) -> None:
    simulator = Simulator(cpu_per_event=0.0, workdir=str(tmp_path))
    path, _, _ = simulator.process_range(a_range(0, 1, "lfn-not-a-path", PFN=f"file://{evnt}"))
    assert path.endswith(".HITS.root")


@pytest.mark.parametrize(
    ("change", "kind", "reason"),
    [
        ({"startEvent": 18, "lastEvent": 25}, "ERR_ATHENAMP_PROCESS", "outside"),
        ({"LFN": "/nonexistent/evnt.root"}, "ERR_ATHENAMP_PROCESS", "no such file"),
        ({"GUID": "OTHER"}, "ERR_ATHENAMP_PROCESS", "GUID"),
        ({"startEvent": "x"}, "ERR_ATHENAMP_PARSE", "integers"),
    ],
)
def test_bad_ranges_fail_with_a_precise_reason(
    evnt: str, tmp_path, change: dict[str, object], kind: str, reason: str
) -> None:
    simulator = Simulator(cpu_per_event=0.0, workdir=str(tmp_path))
    with pytest.raises(RangeError, match=reason) as caught:
        simulator.process_range({**a_range(0, 1, evnt), **change})
    assert caught.value.kind == kind
    assert not list(tmp_path.glob("*.HITS.root"))


def test_missing_field_is_a_parse_error(evnt: str, tmp_path) -> None:
    event_range = a_range(0, 1, evnt)
    del event_range["lastEvent"]
    with pytest.raises(RangeError, match="lastEvent") as caught:
        Simulator(workdir=str(tmp_path)).process_range(event_range)
    assert caught.value.kind == "ERR_ATHENAMP_PARSE"


@pytest.fixture
def channel_pair() -> Iterator[tuple[ChannelClient, socket.socket]]:
    payload_end, pilot_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    client = ChannelClient.__new__(ChannelClient)
    client._socket = payload_end
    yield client, pilot_end
    payload_end.close()
    pilot_end.close()


def test_serve_ranges_reports_each_range_and_goes_on_after_a_failure(
    evnt: str, tmp_path, channel_pair: tuple[ChannelClient, socket.socket]
) -> None:
    client, pilot = channel_pair
    to_send = [
        json.dumps([a_range(0, 2, evnt)]),
        json.dumps([a_range(15, 30, evnt)]),
        "not json at all",
        json.dumps([a_range(3, 4, evnt)]),
        NO_MORE_EVENTS,
    ]
    replies: list[object] = []

    def pilot_side() -> None:
        for message in to_send:
            assert pilot.recv(65536).decode() == READY
            pilot.send(message.encode())
            if message != NO_MORE_EVENTS:  # every range, even a garbled one, gets a reply
                replies.append(parse_payload_message(pilot.recv(65536).decode()))

    thread = threading.Thread(target=pilot_side)
    thread.start()
    done = serve_ranges(client, Simulator(0.0, str(tmp_path)).process_range)
    thread.join(timeout=30)
    assert done == 2
    assert isinstance(replies[0], RangeDone) and replies[0].range_id == "1-2-3-0-1"
    assert isinstance(replies[1], RangeFailed)
    assert replies[1].kind == "ERR_ATHENAMP_PROCESS" and "outside" in replies[1].reason
    assert isinstance(replies[2], RangeFailed) and replies[2].kind == "ERR_ATHENAMP_PARSE"
    assert isinstance(replies[3], RangeDone) and replies[3].output_path.endswith(
        "1-2-3-3-1.HITS.root"
    )
