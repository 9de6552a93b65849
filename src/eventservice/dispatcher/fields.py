"""Validation of loosely typed request fields shared by several dispatcher methods."""

from __future__ import annotations

from typing import Any

from eventservice.errors import InvalidInput

MAX_SECONDS = 1e9


def seconds(value: Any, what: str) -> float | None:
    """An optional non-negative duration sent as a number or a string."""
    if value in (None, ""):
        return None
    if isinstance(value, bool):
        raise InvalidInput(f"{what} must be a number of seconds")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{what} must be a number of seconds") from None
    if not 0 <= result < MAX_SECONDS:
        raise InvalidInput(f"{what} must be a non-negative number of seconds")
    return result
