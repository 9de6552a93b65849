"""Faults injected into the storage layer by tests (unit and contract tests alike)."""

from __future__ import annotations

from typing import Any

import pytest

from eventservice.storage import checksum as checksum_module


def fail_checksum_update(monkeypatch: pytest.MonkeyPatch, on_call: int = 2) -> dict[str, int]:
    """Make the ``on_call``-th chunk checksummed during a transfer raise EIO.

    The streaming upload checksums each chunk as it reads it, so this stands for a
    local disk that fails mid-transfer. Returns the call counter (``{"n": calls}``).
    """
    calls = {"n": 0}
    original = checksum_module.Adler32.update

    def failing_update(self: Any, data: Any) -> None:
        calls["n"] += 1
        if calls["n"] == on_call:
            raise OSError(5, "Input/output error")
        original(self, data)

    monkeypatch.setattr(checksum_module.Adler32, "update", failing_update)
    return calls
