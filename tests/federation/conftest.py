"""Several databases per test: one per homeserver (SQLite files, or PostgreSQL schemas)."""
from __future__ import annotations

import uuid
from urllib.parse import quote

import pytest
import pytest_twisted

from fedsupport import start_federating




@pytest.fixture
def db_url_for(database_url, tmp_path):
    """``db_url_for(name)``: a database URL of the test's engine, distinct per name."""
    created: list[str] = []
    if database_url.startswith("sqlite:///"):
        yield lambda name: f"sqlite:///{tmp_path}/{name}.db"
        return
    import psycopg2

    base = database_url.split("?", 1)[0]
    conn = psycopg2.connect(base)
    conn.autocommit = True

    def make(name: str) -> str:
        schema = f"f_{uuid.uuid4().hex[:12]}_{name}"
        with conn.cursor() as cur:
            cur.execute(f"CREATE SCHEMA {schema}")
        created.append(schema)
        return f"{base}?options={quote(f'-csearch_path={schema}')}"

    yield make
    with conn.cursor() as cur:
        for schema in created:
            cur.execute(f"DROP SCHEMA {schema} CASCADE")
    conn.close()


@pytest_twisted.async_yield_fixture
async def servers(tmp_path, db_url_for):
    """Two federating homeservers, ``a`` and ``b``, on the test's engine."""
    started = [await start_federating(tmp_path, db_url_for(name), name) for name in ("a", "b")]
    yield started
    for hs in started:
        await hs.stop()
