"""One database interface over sqlite3 (WAL) and psycopg2.

Every store takes a :class:`Database` and runs its SQL inside
:meth:`Database.run`, which executes a function with a :class:`Txn` on a
database thread, commits, and retries on serialization failures. SQL is
written once with ``?`` placeholders; the PostgreSQL engine rewrites them to
``%s``. Both engines accept ``INSERT ... ON CONFLICT``.

SQLite gets exactly one connection on one thread: SQLite allows one writer
at a time anyway, and a single thread avoids ``database is locked`` errors.
PostgreSQL gets a pool of threads, each with its own connection.
"""
from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
from typing import Any, Callable, Iterable, Sequence, TypeVar

from twisted.internet import threads
from twisted.python.threadpool import ThreadPool

logger = logging.getLogger(__name__)

R = TypeVar("R")

SCHEMA_DIR = os.path.join(os.path.dirname(__file__), "schema")

#: How often a transaction is retried after a serialization failure or deadlock.
MAX_RETRIES = 5

#: Statements sent per round trip by :meth:`Txn.executemany` on PostgreSQL.
BATCH_PAGE = 100

#: Queued writes are sent once they carry this many arguments: binding them holds the
#: GIL, and a bulk write (thousands of notification rows) must not stall the reactor
#: for one huge round trip. A send batch's commit stays well below it.
QUEUE_FLUSH_ARGS = 1000


class Txn:
    """A cursor inside one transaction, with the placeholder style hidden."""

    def __init__(self, cursor: Any, engine: "Engine") -> None:
        self._cursor = cursor
        self._engine = engine
        self._queued: list[tuple[str, Sequence[Any]]] = []
        self._queued_args = 0
        self.after_commit: list[Callable[[], None]] = []

    @property
    def engine_name(self) -> str:
        return self._engine.name

    def execute(self, sql: str, args: Sequence[Any] = ()) -> "Txn":
        self.flush()
        self._cursor.execute(self._engine.convert(sql), args)
        return self

    def queue(self, sql: str, args: Sequence[Any] = ()) -> None:
        """Run a write whose result nobody reads, later but in order.

        Queued writes go to the server together, before the next statement of
        this transaction or the commit: one round trip for all of them on
        PostgreSQL (the send path's commit writes to ten tables). A failing
        write raises there, and the whole transaction rolls back as usual.
        """
        self._queued.append((self._engine.convert(sql), args))
        self._queued_args += len(args)
        if self._queued_args >= QUEUE_FLUSH_ARGS:
            self.flush()

    def flush(self) -> None:
        """Send the queued writes now."""
        if self._queued:
            queued, self._queued, self._queued_args = self._queued, [], 0
            self._engine.execute_all(self._cursor, queued)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> "Txn":
        """Run ``sql`` once per row. ``rowcount`` is undefined afterwards.

        On PostgreSQL the statements go in pages of :data:`BATCH_PAGE` per
        round trip (psycopg2's own ``executemany`` pays one round trip per row).
        """
        rows = list(rows)
        self.flush()
        if rows:
            self._engine.executemany(self._cursor, self._engine.convert(sql), rows)
        return self

    def fetchone(self) -> tuple | None:
        return self._cursor.fetchone()

    def fetchall(self) -> list[tuple]:
        return self._cursor.fetchall()

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        self.execute(sql, args)
        return self._cursor.fetchall()

    def query_one(self, sql: str, args: Sequence[Any] = ()) -> tuple | None:
        self.execute(sql, args)
        return self._cursor.fetchone()

    def scalar(self, sql: str, args: Sequence[Any] = ()) -> Any:
        row = self.query_one(sql, args)
        return row[0] if row else None

    @property
    def rowcount(self) -> int:
        """Rows the last :meth:`execute` touched."""
        return self._cursor.rowcount

    def in_list(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """SQL and args for ``column IN (...)``; an empty list matches nothing."""
        if not values:
            return "1 = 0", []
        return f"{column} IN ({','.join('?' * len(values))})", list(values)


def insert_many(txn: Txn, table_and_columns: str, rows: Sequence[Sequence[Any]], suffix: str = "",
                chunk: int = 200) -> None:
    """Insert rows with multi-row VALUES statements (queued, see :meth:`Txn.queue`): one
    statement per chunk, not per row.

    (Cheaper for the server than :meth:`Txn.executemany`'s statement per row; but an
    ``ON CONFLICT DO UPDATE`` may not meet the same key twice in one statement.)
    """
    if not rows:
        return
    width = len(rows[0])
    one = "(" + ",".join("?" * width) + ")"
    for i in range(0, len(rows), chunk):
        part = rows[i:i + chunk]
        txn.queue(f"INSERT INTO {table_and_columns} VALUES {','.join([one] * len(part))} {suffix}",
                  [v for row in part for v in row])


class Engine:
    name = "engine"

    def connect(self) -> Any:
        raise NotImplementedError

    def convert(self, sql: str) -> str:
        return sql

    def is_retryable(self, exc: BaseException) -> bool:
        return False

    def executemany(self, cursor: Any, sql: str, rows: list[Sequence[Any]]) -> None:
        cursor.executemany(sql, rows)

    def execute_all(self, cursor: Any, statements: list[tuple[str, Sequence[Any]]]) -> None:
        for sql, args in statements:
            cursor.execute(sql, args)


class SqliteEngine(Engine):
    name = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path

    def connect(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL makes every commit durable across power loss, not just process death.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=OFF")
        return conn

    def is_retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


class PostgresEngine(Engine):
    name = "postgres"
    _placeholder = re.compile(r"\?")

    def __init__(self, url: str) -> None:
        self.url = url
        import psycopg2  # the [postgres] extra; imported only when configured
        import psycopg2.errors
        import psycopg2.extensions
        import psycopg2.extras
        self._psycopg2 = psycopg2
        self._execute_batch = psycopg2.extras.execute_batch
        self._retryable = (psycopg2.errors.SerializationFailure, psycopg2.errors.DeadlockDetected)
        self._cache: dict[str, str] = {}

    def connect(self) -> Any:
        conn = self._psycopg2.connect(self.url.replace("postgres://", "postgresql://", 1))
        conn.set_session(isolation_level="REPEATABLE READ", autocommit=False)
        return conn

    def convert(self, sql: str) -> str:
        out = self._cache.get(sql)
        if out is None:
            out = self._placeholder.sub("%s", sql.replace("%", "%%"))
            self._cache[sql] = out
        return out

    def is_retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, self._retryable)

    def executemany(self, cursor: Any, sql: str, rows: list[Sequence[Any]]) -> None:
        # The same statements, joined with ';' into one round trip per page.
        self._execute_batch(cursor, sql, rows, page_size=BATCH_PAGE)

    def execute_all(self, cursor: Any, statements: list[tuple[str, Sequence[Any]]]) -> None:
        if len(statements) == 1:
            cursor.execute(*statements[0])
        else:  # one round trip: psycopg2 binds the arguments on this side, the server runs them in order
            cursor.execute(b";".join(cursor.mogrify(sql, args) for sql, args in statements))


class Database:
    """Runs transactions on database threads; the reactor thread never blocks on SQL."""

    def __init__(self, url: str, reactor: Any, pool_size: int = 8) -> None:
        if url.startswith("sqlite:///"):
            self.engine: Engine = SqliteEngine(url[len("sqlite:///"):])
            pool_size = 1
        elif url.startswith(("postgresql://", "postgres://")):
            self.engine = PostgresEngine(url)
        else:
            raise ValueError(f"unsupported database URL {url!r}")
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=pool_size, name=f"db-{self.engine.name}")
        self._local = threading.local()
        self._connections: list[Any] = []
        self._lock = threading.Lock()
        self._started = False

    @property
    def engine_name(self) -> str:
        return self.engine.name

    def start(self) -> None:
        if not self._started:
            self._pool.start()
            self._started = True

    async def close(self) -> None:
        """Finish queued transactions, then close every connection."""
        if not self._started:
            return
        self._started = False
        await threads.deferToThread(self._pool.stop)
        with self._lock:
            for conn in self._connections:
                try:
                    conn.close()
                except Exception:  # pragma: no cover - closing is best effort
                    logger.exception("closing database connection")
            self._connections.clear()

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(conn, "closed", False):  # psycopg2 noticed it died
            self._drop_conn(conn)
            conn = None
        if conn is None:
            conn = self.engine.connect()
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _drop_conn(self, conn: Any) -> None:
        self._local.conn = None
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)
        try:
            conn.close()
        except Exception:
            pass

    def _run_sync(self, fn: Callable[..., R], args: tuple, kwargs: dict) -> tuple[R, list]:
        conn = self._conn()
        for attempt in range(MAX_RETRIES + 1):
            cursor = conn.cursor()
            txn = Txn(cursor, self.engine)
            try:
                if self.engine.name == "sqlite":
                    cursor.execute("BEGIN IMMEDIATE")
                result = fn(txn, *args, **kwargs)
                txn.flush()
                conn.commit()
                return result, txn.after_commit
            except BaseException as e:
                try:
                    conn.rollback()
                except Exception:
                    # The connection itself is broken (server restarted, network):
                    # forget it so the next transaction on this thread reconnects.
                    self._drop_conn(conn)
                    raise e from None
                if attempt < MAX_RETRIES and self.engine.is_retryable(e):
                    logger.info("retrying transaction after %s", type(e).__name__)
                    continue
                raise
            finally:
                cursor.close()
        raise AssertionError("unreachable")

    async def run(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """Run ``fn(txn, *args, **kwargs)`` in one transaction on a database thread.

        Functions appended to ``txn.after_commit`` run on the reactor thread
        once the transaction has committed (to update in-memory caches).
        """
        if not self._started:
            raise RuntimeError("database is not started (or already closed)")
        result, callbacks = await threads.deferToThreadPool(
            self._reactor, self._pool, self._run_sync, fn, args, kwargs)
        for cb in callbacks:
            cb()
        return result

    def run_blocking(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """Run a transaction on the calling thread (start-up and tools only)."""
        result, callbacks = self._run_sync(fn, args, kwargs)
        for cb in callbacks:
            cb()
        return result


def apply_migrations(db: Database) -> list[int]:
    """Apply the numbered ``schema/NNN_name.sql`` files not yet applied. Returns what ran.

    A file may have engine variants ``NNN_name.sqlite.sql`` / ``NNN_name.postgres.sql``.
    """
    files: dict[int, str] = {}
    for name in sorted(os.listdir(SCHEMA_DIR)):
        m = re.match(r"^(\d+)_[\w-]+?(?:\.(sqlite|postgres))?\.sql$", name)
        if not m or (m.group(2) and m.group(2) != db.engine_name):
            continue
        files[int(m.group(1))] = name

    def current(txn: Txn) -> set[int]:
        txn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_ts BIGINT)")
        return {row[0] for row in txn.query("SELECT version FROM schema_version")}

    done = db.run_blocking(current)
    ran = []
    for version in sorted(files):
        if version in done:
            continue
        with open(os.path.join(SCHEMA_DIR, files[version]), encoding="utf-8") as f:
            statements = [s.strip() for s in f.read().split(";\n") if _has_sql(s)]

        def apply(txn: Txn, statements: list[str] = statements, version: int = version) -> None:
            for statement in statements:
                txn.execute(statement)
            txn.execute("INSERT INTO schema_version (version, applied_ts) VALUES (?, 0)", (version,))

        db.run_blocking(apply)
        ran.append(version)
        logger.info("applied schema migration %s", files[version])
    return ran


def _has_sql(chunk: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in chunk.splitlines())


class StreamIdGenerator:
    """Hands out increasing stream positions, starting after the highest stored one.

    Single-writer: one process persists events. Positions are assigned on the
    reactor thread, so no lock is needed.
    """

    def __init__(self, start: int) -> None:
        self._current = start

    @classmethod
    def load(cls, db: Database, table: str, column: str) -> "StreamIdGenerator":
        generator = cls(0)
        generator.load_from(db, table, column)
        return generator

    def load_from(self, db: Database, table: str, column: str) -> None:
        """Continue after the highest stored position (blocking; at start-up)."""
        value = db.run_blocking(lambda txn: txn.scalar(f"SELECT MAX({column}) FROM {table}"))
        self._current = int(value or 0)

    def next(self) -> int:
        self._current += 1
        return self._current

    def current(self) -> int:
        return self._current
