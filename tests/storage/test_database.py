"""The Database layer on both engines: migrations, transactions, retries, callbacks."""
from __future__ import annotations

import sqlite3
import threading

import pytest
import pytest_twisted
from twisted.internet import defer, threads

from homeserver.storage.database import Database, StreamIdGenerator, apply_migrations


@pytest_twisted.async_yield_fixture
async def db(database_url):
    from twisted.internet import reactor
    database = Database(database_url, reactor, pool_size=4)
    database.start()
    await threads.deferToThread(apply_migrations, database)
    await database.run(lambda txn: txn.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v BIGINT NOT NULL)"))
    yield database
    await database.close()


@pytest_twisted.ensureDeferred
async def test_migrations_apply_once(db):
    versions = await db.run(lambda txn: [r[0] for r in txn.query("SELECT version FROM schema_version")])
    assert 1 in versions and len(versions) == len(set(versions))
    assert await threads.deferToThread(apply_migrations, db) == []
    again = await db.run(lambda txn: txn.scalar("SELECT COUNT(*) FROM schema_version"))
    assert again == len(versions)


@pytest_twisted.ensureDeferred
async def test_queued_writes_run_in_order_before_reads_and_commit(db):
    def writes(txn):
        txn.queue("INSERT INTO kv (k, v) VALUES (?, ?)", ("q1", 1))
        txn.queue("UPDATE kv SET v = v + ? WHERE k = ?", (10, "q1"))
        seen = txn.scalar("SELECT v FROM kv WHERE k = ?", ("q1",))  # a read sends the queue first
        txn.queue("INSERT INTO kv (k, v) VALUES (?, ?)", ("q2", 50))
        txn.queue("INSERT INTO kv (k, v) VALUES (?, ?)", ("it's 100%", 3))  # quotes and % survive binding
        return seen
    assert await db.run(writes) == 11
    rows = await db.run(lambda txn: txn.query("SELECT k, v FROM kv ORDER BY k"))
    assert rows == [("it's 100%", 3), ("q1", 11), ("q2", 50)]  # the rest went at commit

    def conflicting(txn):
        txn.queue("INSERT INTO kv (k, v) VALUES (?, ?)", ("q3", 1))
        txn.queue("INSERT INTO kv (k, v) VALUES (?, ?)", ("q1", 2))  # duplicate key, raised at commit
    with pytest.raises(Exception):
        await db.run(conflicting)
    assert await db.run(lambda txn: txn.scalar("SELECT COUNT(*) FROM kv")) == 3  # nothing of it was kept

    def bulk(txn):  # more than one flush's worth of arguments: sent in parts, still in order
        for i in range(700):
            txn.queue("INSERT INTO kv (k, v) VALUES (?, ?)", (f"m{i:03}", i))
        txn.queue("UPDATE kv SET v = ? WHERE k = ?", (-1, "m699"))
    await db.run(bulk)
    assert await db.run(lambda txn: txn.query("SELECT COUNT(*), MIN(v) FROM kv WHERE k LIKE 'm%'")) == [(700, -1)]


@pytest_twisted.ensureDeferred
async def test_executemany_on_both_engines(db):
    await db.run(lambda txn: txn.executemany("INSERT INTO kv (k, v) VALUES (?, ?)",
                                             [(f"k{i}", i) for i in range(250)]))
    await db.run(lambda txn: txn.executemany("UPDATE kv SET v = v * 2 WHERE k = ?", [(f"k{i}",) for i in range(250)]))
    assert await db.run(lambda txn: txn.scalar("SELECT SUM(v) FROM kv")) == 2 * sum(range(250))


@pytest_twisted.ensureDeferred
async def test_commit_rollback_and_after_commit(db):
    seen: list[str] = []

    def ok(txn):
        txn.execute("INSERT INTO kv (k, v) VALUES (?, ?)", ("a", 1))
        txn.after_commit.append(lambda: seen.append("committed"))
        return "done"
    assert await db.run(ok) == "done"
    assert seen == ["committed"]

    def fails(txn):
        txn.execute("INSERT INTO kv (k, v) VALUES (?, ?)", ("b", 2))
        txn.after_commit.append(lambda: seen.append("never"))
        raise ValueError("boom")
    with pytest.raises(ValueError):
        await db.run(fails)
    assert seen == ["committed"]  # no callback for a rolled-back transaction
    rows = await db.run(lambda txn: txn.query("SELECT k, v FROM kv ORDER BY k"))
    assert rows == [("a", 1)]
    # a constraint violation rolls back the whole transaction too
    def dup(txn):
        txn.execute("INSERT INTO kv (k, v) VALUES (?, ?)", ("c", 3))
        txn.execute("INSERT INTO kv (k, v) VALUES (?, ?)", ("a", 9))
    with pytest.raises(Exception):
        await db.run(dup)
    assert await db.run(lambda txn: txn.scalar("SELECT COUNT(*) FROM kv")) == 1


@pytest_twisted.ensureDeferred
async def test_in_list_and_placeholders(db):
    await db.run(lambda txn: txn.executemany("INSERT INTO kv (k, v) VALUES (?, ?)",
                                             [("a", 1), ("b", 2), ("c%", 3)]))

    def select(txn, keys):
        clause, args = txn.in_list("k", keys)
        return sorted(r[0] for r in txn.query("SELECT k FROM kv WHERE " + clause, args))
    assert await db.run(select, []) == []
    assert await db.run(select, ["a", "c%", "zz"]) == ["a", "c%"]
    # a literal % next to ? placeholders works on both engines
    assert await db.run(lambda txn: txn.scalar("SELECT k FROM kv WHERE k LIKE 'c%' AND v = ?", (3,))) == "c%"
    await db.run(lambda txn: txn.executemany("INSERT INTO kv (k, v) VALUES (?, ?)", []))
    # upserts
    await db.run(lambda txn: txn.execute(
        "INSERT INTO kv (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v", ("a", 7)))
    assert await db.run(lambda txn: txn.scalar("SELECT v FROM kv WHERE k = ?", ("a",))) == 7


@pytest_twisted.ensureDeferred
async def test_retry_on_serialization_failure(db):
    await db.run(lambda txn: txn.execute("INSERT INTO kv (k, v) VALUES ('x', 0)"))
    attempts = []
    if db.engine_name == "postgres":
        # A real conflict: A reads (taking its REPEATABLE READ snapshot), B updates
        # the row and commits, then A's update fails to serialize and is retried.
        a_read, b_committed = threading.Event(), threading.Event()

        def txn_a(txn):
            attempts.append(1)
            txn.scalar("SELECT v FROM kv WHERE k = 'x'")
            a_read.set()
            assert b_committed.wait(20)
            txn.execute("UPDATE kv SET v = v + 1 WHERE k = 'x'")

        def txn_b(txn):
            assert a_read.wait(20)
            txn.execute("UPDATE kv SET v = v + 10 WHERE k = 'x'")
            txn.after_commit.append(b_committed.set)

        da, db_ = defer.ensureDeferred(db.run(txn_a)), defer.ensureDeferred(db.run(txn_b))
        await db_
        await da
        assert len(attempts) == 2
        assert await db.run(lambda txn: txn.scalar("SELECT v FROM kv WHERE k = 'x'")) == 11
    else:
        # SQLite has one writer thread, so conflicts cannot happen between our own
        # transactions; another process holding the lock gives "database is locked".
        def flaky(txn):
            attempts.append(1)
            txn.execute("UPDATE kv SET v = v + 1 WHERE k = 'x'")
            if len(attempts) == 1:
                raise sqlite3.OperationalError("database is locked")
        await db.run(flaky)
        assert len(attempts) == 2
        assert await db.run(lambda txn: txn.scalar("SELECT v FROM kv WHERE k = 'x'")) == 1


@pytest_twisted.ensureDeferred
async def test_other_errors_are_not_retried(db):
    attempts = []

    def bad(txn):
        attempts.append(1)
        txn.execute("SELECT nope FROM kv")
    with pytest.raises(Exception):
        await db.run(bad)
    assert attempts == [1]


@pytest_twisted.ensureDeferred
async def test_stream_ids_and_closed_database(database_url):
    from twisted.internet import reactor
    database = Database(database_url, reactor)
    database.start()
    await threads.deferToThread(apply_migrations, database)
    await database.run(lambda txn: txn.execute("CREATE TABLE s (pos BIGINT)"))
    await database.run(lambda txn: txn.execute("INSERT INTO s (pos) VALUES (41)"))
    gen = await threads.deferToThread(StreamIdGenerator.load, database, "s", "pos")
    assert gen.next() == 42 and gen.current() == 42
    await database.close()
    with pytest.raises(RuntimeError):
        await database.run(lambda txn: None)
    await database.close()  # closing twice is harmless


def test_bad_url():
    with pytest.raises(ValueError):
        Database("mysql://x", None)


@pytest_twisted.ensureDeferred
async def test_reconnects_after_the_connection_dies(database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only: a server-side disconnect")
    import psycopg2
    from twisted.internet import reactor

    from conftest import POSTGRES_URL
    database = Database(database_url, reactor, pool_size=1)
    database.start()
    try:
        pid = await database.run(lambda txn: txn.scalar("SELECT pg_backend_pid()"))
        admin = psycopg2.connect(POSTGRES_URL)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
        admin.close()
        with pytest.raises(psycopg2.Error):
            await database.run(lambda txn: txn.scalar("SELECT 1"))
        # the broken connection was dropped: the next transaction reconnects
        assert await database.run(lambda txn: txn.scalar("SELECT 1")) == 1
    finally:
        await database.close()
