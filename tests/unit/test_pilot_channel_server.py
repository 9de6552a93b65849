"""The channel server with real AF_UNIX SOCK_SEQPACKET connections."""

from __future__ import annotations

import time

import pytest

from eventservice.payload.channel import NO_MORE_EVENTS, ChannelClient
from eventservice.pilot.channel_server import (
    ChannelServer,
    Nudge,
    RangeError,
    RangeOutput,
    RangeStarted,
    WorkerLost,
    WorkerWaiting,
)


def rng(n: int) -> dict:
    return {"eventRangeID": f"1-2-3-{n}-1", "startEvent": n, "lastEvent": n, "LFN": "f"}


@pytest.fixture
def server():
    srv = ChannelServer()
    srv.start()
    yield srv
    srv.stop()


def next_event(srv: ChannelServer, kind: type):
    while True:
        event = srv.events.get(timeout=5)
        if isinstance(event, kind):
            return event


def test_names_are_unique():
    assert ChannelServer().name != ChannelServer().name


def test_serves_ranges_then_no_more(server):
    server.add_ranges([rng(0), rng(1)])
    with ChannelClient(server.name, timeout=5) as client:
        assert client.next_range()["eventRangeID"] == "1-2-3-0-1"
        assert next_event(server, RangeStarted).event_range["startEvent"] == 0
        client.report_done("/tmp/out0", "1-2-3-0-1", 0.1, 0.2)
        done = next_event(server, RangeOutput)
        assert done.output_path == "/tmp/out0" and done.event_range["eventRangeID"] == "1-2-3-0-1"
        assert client.next_range()["eventRangeID"] == "1-2-3-1-1"
        server.set_no_more()
        assert client.next_range() is None
    assert server.served == 2


def test_waiting_worker_is_served_when_ranges_arrive(server):
    with ChannelClient(server.name, timeout=5) as client:
        client.send("Ready for events")
        # nothing buffered: the worker waits
        with pytest.raises(TimeoutError):
            client._socket.settimeout(0.3)
            client.receive()
        client._socket.settimeout(5)
        # ... and the executor hears of it (near a chunk's end it asks for ranges only then)
        assert next_event(server, WorkerWaiting) == WorkerWaiting()
        server.add_ranges([rng(5)])
        assert '"1-2-3-5-1"' in client.receive()


def test_errors_and_garbage_fail_only_the_named_range(server):
    server.add_ranges([rng(0), rng(1), rng(2)])
    with ChannelClient(server.name, timeout=5) as client:
        ids = [client.next_range()["eventRangeID"] for _ in range(3)]
        client.report_error("ERR_TE_FATAL", ids[0], "bad input")
        error = next_event(server, RangeError)
        assert error.fatal and error.event_range["eventRangeID"] == ids[0]
        client.send(f"this is not a message ID:{ids[1]}")
        garbage = next_event(server, RangeError)
        assert not garbage.fatal and garbage.event_range["eventRangeID"] == ids[1]
        client.send("complete nonsense")
        client.report_done("/x", ids[2], 1, 1)
        assert next_event(server, RangeOutput).event_range["eventRangeID"] == ids[2]
    assert server.in_flight == 0


def test_closed_worker_loses_its_ranges_only(server):
    server.add_ranges([rng(0), rng(1)])
    keeper = ChannelClient(server.name, timeout=5)
    with ChannelClient(server.name, timeout=5) as dying:
        dying.next_range()
        keeper.next_range()
    lost = next_event(server, WorkerLost)
    assert len(lost.event_ranges) == 1
    assert server.in_flight == 1
    assert [r["eventRangeID"] for r in server.take_in_flight()] != [
        r["eventRangeID"] for r in lost.event_ranges
    ]
    keeper.close()


def test_many_workers_and_buffer_release(server):
    clients = [ChannelClient(server.name, timeout=5) for _ in range(4)]
    server.add_ranges([rng(i) for i in range(10)])
    got = {c.next_range()["eventRangeID"] for c in clients}
    assert len(got) == 4
    released = server.take_buffer()
    assert len(released) == 6 and server.buffered == 0
    server.set_no_more()
    for c in clients:
        c.send("Ready for events")
        assert c.receive() == NO_MORE_EVENTS
        c.close()
    lost = [next_event(server, WorkerLost) for _ in range(4)]
    assert {r["eventRangeID"] for w in lost for r in w.event_ranges} == got
    assert server.in_flight == 0


def wait_until(check, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_idle_only_when_every_connected_worker_waits(server):
    assert not server.idle  # nobody connected
    with ChannelClient(server.name, timeout=5) as first, ChannelClient(server.name, timeout=5):
        assert wait_until(lambda: server.connected == 2)
        first.send("Ready for events")
        assert wait_until(lambda: server.waiting == 1)
        assert not server.idle  # the second connection has not asked
    with ChannelClient(server.name, timeout=5) as worker:
        server.add_ranges([rng(0)])
        assert worker.next_range()["eventRangeID"] == "1-2-3-0-1"
        assert not server.idle  # it holds a range
        worker.report_done("/tmp/out0", "1-2-3-0-1", 0.1, 0.2)
        worker.send("Ready for events")
        assert wait_until(lambda: server.idle)
        # A kept worker is served the next job's ranges as they come.
        server.add_ranges([rng(1)])
        assert worker.receive().startswith("[")


def test_a_worker_leaving_without_ranges_and_a_nudge_wake_the_executor(server):
    server.nudge()
    assert server.events.get(timeout=5) == Nudge()
    with ChannelClient(server.name, timeout=5):
        deadline = time.monotonic() + 5
        while server.connected == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    # The payload may be ending: the executor looks at it now, not at its next timer.
    assert next_event(server, Nudge) == Nudge()
    assert server.connected == 0
