"""Shared fixtures: database URLs for every backend, and service gating.

Tests that need a service (PostgreSQL, XRootD, S3) skip when it is absent locally
but fail when ``CI=true``: :func:`require_service` is the one place that decides.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_URL = os.environ.get(
    "EVENTSERVICE_TEST_POSTGRES",
    "postgresql://eventservice:eventservice@127.0.0.1:5432/eventservice_test",
)


def require_service(available: bool, what: str) -> None:
    """Skip the calling test when ``what`` is missing, or fail it in CI."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI but is not available", pytrace=False)
    pytest.skip(f"{what} is not available")


def _postgres_reachable() -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    try:
        with psycopg.connect(
            POSTGRES_URL.replace("postgresql+psycopg", "postgresql"), connect_timeout=3
        ):
            return True
    except psycopg.Error:
        return False


def reset_postgres() -> None:
    """Drop every object of the test database, so a test starts from nothing."""
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    return _postgres_reachable()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A fresh, empty database URL; the same test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'dispatcher.sqlite'}"
        return
    require_service(request.getfixturevalue("postgres_available"), f"PostgreSQL at {POSTGRES_URL}")
    reset_postgres()
    yield POSTGRES_URL
