"""Mapping of domain errors to HTTP answers: the one place where this is decided."""

from __future__ import annotations

from eventservice.errors import (
    Conflict,
    EventServiceError,
    InvalidInput,
    MissingKey,
    NotFound,
    StoreError,
)

#: PanDA StatusCode values (DESIGN §5).
OK, TIMEOUT, NO_JOBS, FAILED, INVALID, NOT_ALLOWED, MISSING_KEY = 0, 10, 20, 30, 50, 60, 80


def panda_status(error: EventServiceError) -> tuple[int, int]:
    """``(HTTP status, PanDA StatusCode)`` for an error on a PanDA path."""
    if isinstance(error, MissingKey):
        return 200, MISSING_KEY
    if isinstance(error, (InvalidInput, NotFound)):
        return 200, INVALID
    if isinstance(error, Conflict):
        return 200, NOT_ALLOWED
    if isinstance(error, StoreError):
        return 503, FAILED  # pilots retry 5xx: the database may come back
    return 200, FAILED


def api_status(error: EventServiceError) -> int:
    """HTTP status for an error on /api/v1."""
    if isinstance(error, InvalidInput):
        return 400
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, Conflict):
        return 409
    if isinstance(error, StoreError):
        return 503
    return 400
