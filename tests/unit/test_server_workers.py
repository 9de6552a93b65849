"""The supervisor of several dispatcher processes refuses what it cannot serve."""

from __future__ import annotations

import socket

import pytest

from eventservice.server.workers import Workers, WorkersError, ensure_port_free


def test_port_zero_is_refused() -> None:
    with pytest.raises(WorkersError, match="fixed --port"):
        Workers(2, "127.0.0.1", 0, "warning", {}).run()


def test_a_port_something_listens_on_is_refused() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(WorkersError, match=f"cannot listen on 127.0.0.1:{port}"):
            ensure_port_free("127.0.0.1", port)
