"""Fixtures shared by every test: database engines and running homeservers.

Every storage-backed test takes ``database_url`` (directly, or through
``hs``), which runs it once on SQLite and once on PostgreSQL. PostgreSQL
tests need ``HOMESERVER_TEST_POSTGRES_URL``; without it they are skipped with
the reason printed (``-ra``), unless ``HOMESERVER_REQUIRE_POSTGRES`` is set
(as .ci/run does), where a missing PostgreSQL is a failure.
"""
from __future__ import annotations

import os
import uuid
from urllib.parse import quote

import pytest
import pytest_twisted

import support

POSTGRES_URL = os.environ.get("HOMESERVER_TEST_POSTGRES_URL")
REQUIRE_POSTGRES = bool(os.environ.get("HOMESERVER_REQUIRE_POSTGRES"))
SKIP_REASON = ("PostgreSQL run not configured: set HOMESERVER_TEST_POSTGRES_URL, "
               "e.g. postgresql://postgres@127.0.0.1:5432/test (.ci/run does)")


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/homeserver.db"
        return
    if not POSTGRES_URL:
        if REQUIRE_POSTGRES:
            pytest.fail("HOMESERVER_REQUIRE_POSTGRES is set but HOMESERVER_TEST_POSTGRES_URL is not")
        pytest.skip(SKIP_REASON)
    import psycopg2

    # Each test gets its own schema in the run's database: cheap to create and drop.
    schema = "t_" + uuid.uuid4().hex[:16]
    conn = psycopg2.connect(POSTGRES_URL)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{sep}options={quote(f'-csearch_path={schema}')}"
    with conn.cursor() as cur:
        cur.execute(f"DROP SCHEMA {schema} CASCADE")
    conn.close()


@pytest.fixture
def config(database_url, tmp_path):
    return support.make_config(tmp_path, database_url)


@pytest_twisted.async_yield_fixture
async def hs(config):
    """A homeserver listening on a free loopback port, stopped after the test."""
    server = await support.start_homeserver(config)
    yield server
    await server.stop()


@pytest.fixture
def client_factory(hs):
    """Make :class:`support.Client` objects talking to ``hs`` over real HTTP."""
    return lambda: support.Client(hs)
