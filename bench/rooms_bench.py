"""Send-path benchmark: a 500-member group, sequential and concurrent sends.

Runs a homeserver in-process (no HTTP: this measures the send path
``rooms/send.py`` → persister → database → stream) on SQLite or PostgreSQL.

Run: ``python bench/rooms_bench.py [DATABASE_URL]`` from the repository root
(default: a temporary SQLite file).
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import defer, reactor, task  # noqa: E402

from homeserver import Config, HomeServer  # noqa: E402
from homeserver.rooms.create import CreateRoomRequest  # noqa: E402

MEMBERS = 500
SEQUENTIAL = 300
CONCURRENT = 2000
IN_FLIGHT = 100


def private_schema(url: str) -> tuple[str, object]:
    """A throwaway PostgreSQL schema for the run (dropped afterwards)."""
    import uuid
    from urllib.parse import quote

    import psycopg2
    schema = "bench_" + uuid.uuid4().hex[:12]
    conn = psycopg2.connect(url)
    conn.autocommit = True
    conn.cursor().execute(f"CREATE SCHEMA {schema}")

    def drop() -> None:
        conn.cursor().execute(f"DROP SCHEMA {schema} CASCADE")
        conn.close()
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}", drop


async def main(url: str | None) -> None:
    tmp = tempfile.mkdtemp()
    drop = None
    if url and url.startswith("postgres"):
        url, drop = private_schema(url)
    config = Config.from_dict({
        "server_name": "bench.local", "data_dir": tmp,
        "database": {"url": url or f"sqlite:///{tmp}/hs.db", "pool_size": 8},
        "listeners": [], "rate_limiting": {"enabled": False}, "access_log": False,
    }, base_dir=tmp)
    hs = HomeServer(config, reactor)
    await hs.start(listen=False)
    owner = "@owner:bench.local"
    room, _ = await hs.room_creator.create(owner, CreateRoomRequest(preset="public_chat"))
    t0 = time.perf_counter()
    for i in range(MEMBERS - 1):
        await hs.membership.join(f"@u{i}:bench.local", room)
    joins = time.perf_counter() - t0
    txns = []
    original = hs.db.run

    async def counting(fn, *a, **kw):
        txns.append(fn)
        return await original(fn, *a, **kw)
    hs.db.run = counting
    fanout = []
    hs.event_stream.subscribe(lambda batch: fanout.extend(len(p.joined_members) for p in batch))

    lat = []
    for i in range(SEQUENTIAL):
        s = time.perf_counter()
        await hs.event_sender.send(f"@u{i % (MEMBERS - 1)}:bench.local", room, "m.room.message",
                                   {"msgtype": "m.text", "body": f"seq {i}"})
        lat.append((time.perf_counter() - s) * 1000)
    seq_txns = len(txns)

    sem = defer.DeferredSemaphore(IN_FLIGHT)
    s = time.perf_counter()
    await defer.gatherResults([
        sem.run(lambda i=i: defer.ensureDeferred(hs.event_sender.send(
            f"@u{i % (MEMBERS - 1)}:bench.local", room, "m.room.message", {"msgtype": "m.text", "body": f"c {i}"})))
        for i in range(CONCURRENT)])
    conc = time.perf_counter() - s
    conc_txns = len([t for t in txns[seq_txns:] if getattr(t, "__name__", "") == "_txn"])
    lat.sort()
    print(f"engine: {hs.db.engine_name}")
    print(f"{MEMBERS - 1} joins: {joins:.2f}s ({(MEMBERS - 1) / joins:.0f}/s)")
    print(f"sequential send, {MEMBERS} members: median {statistics.median(lat):.2f} ms,"
          f" p99 {lat[int(len(lat) * 0.99)]:.2f} ms; DB transactions per send: {seq_txns / SEQUENTIAL:.2f}")
    print(f"concurrent ({IN_FLIGHT} in flight): {CONCURRENT / conc:.0f} events/s;"
          f" {conc_txns} transactions for {CONCURRENT} events ({CONCURRENT / max(conc_txns, 1):.1f} per commit)")
    print(f"fan-out per event: {fanout[-1]} joined members handed to stream subscribers")
    await hs.stop()
    if drop is not None:
        drop()


if __name__ == "__main__":
    task.react(lambda _r: defer.ensureDeferred(main(sys.argv[1] if len(sys.argv) > 1 else None)))
