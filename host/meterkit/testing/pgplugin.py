"""pytest fixtures for tests that need a real PostgreSQL (meterkit.testing.pgserver):

    pg_server   one server for the whole session (started on first use, stopped at the end)
    pg_url      a fresh database for one test, a copy of a template with the store's schema already made
                (CREATE DATABASE ... TEMPLATE: a file copy, far cheaper than migrating), dropped afterwards

Without PostgreSQL these tests skip with the reason; METERKIT_SERVERS=require (CI) makes that a failure instead.
"""

from __future__ import annotations

import os

import pytest

from meterkit.testing.pgserver import INSTALL_HINT, PgServer, PgUnavailable

TEMPLATE = "meterkit_template"


def server_missing(what: str, reason: str) -> None:
    """A real server a test needs is not here: skip the test, or fail it when METERKIT_SERVERS=require (CI
    installs them all)."""
    if os.environ.get("METERKIT_SERVERS") == "require":
        pytest.fail(f"{what} is required here (METERKIT_SERVERS=require): {reason}", pytrace=False)
    pytest.skip(f"{what} tests did not run: {reason}")


def pg_missing(reason: str) -> None:
    server_missing("PostgreSQL", reason)


_broken: list[str] = []  # why the session's server could not start (tried once)


@pytest.fixture(scope="session")
def pg_server():
    if _broken:
        pg_missing(_broken[0])
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _broken.append("psycopg is not installed (pip install -e .)")
        pg_missing(_broken[0])
    try:
        server = PgServer().start()
    except PgUnavailable as e:
        _broken.append(str(e))
        pg_missing(_broken[0])
    except (RuntimeError, OSError) as e:
        _broken.append(f"PostgreSQL did not start: {e}")
        pg_missing(_broken[0])
    try:
        yield server
    finally:
        server.stop()


def _prepare_template(server: PgServer) -> str:
    """The template database, its schema made by the store (once per session)."""
    from meterkit.store.postgres import PostgresStore

    PostgresStore(server.create_database(TEMPLATE)).close()
    return TEMPLATE


@pytest.fixture(scope="session")
def pg_template(pg_server):
    return _prepare_template(pg_server)


@pytest.fixture
def pg_url(pg_server, pg_template):
    url = pg_server.create_database(template=pg_template)
    yield url
    pg_server.drop_database(url.rsplit("/", 1)[1])


__all__ = ["INSTALL_HINT", "pg_missing", "pg_server", "pg_template", "pg_url"]
