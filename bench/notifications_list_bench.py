#!/usr/bin/env python3
"""GET /notifications from grouped rows: per-room index scans vs one scan of every room.

Fills ``push_notification_groups`` with ``--messages`` messages spread over
``--rooms`` rooms of ``--members`` local members each (two groups per tenth
message: a mention), then times ``PushStore.get_notifications`` (limit 20,
first page and a page deep in history) for

* a member of 10 busy rooms, through their room list and through the
  all-rooms scan (``room_ids=None``);
* a member of one quiet room (notified by 1 message in 1000), both ways:
  the all-rooms scan reads the whole table to fill a page.

    python bench/notifications_list_bench.py --db sqlite
    python bench/notifications_list_bench.py --db postgres   # needs PG_URL (default: local postgres)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, task, threads  # noqa: E402

from homeserver.storage.database import Database, apply_migrations  # noqa: E402
from homeserver.storage.push import PushStore, join_user_ids  # noqa: E402


def fill(db: Database, rooms: int, members: int, messages: int) -> None:
    room_members = {r: [f"@m{r}_{i}:bench" for i in range(members)] + ["@busy:bench"] * (r < 10)
                    for r in range(rooms)}
    rows = []
    for so in range(1, messages + 1):
        r = so % rooms
        users = list(room_members[r])
        if r == rooms - 1 and so % 1000 == rooms - 1:
            users.append("@quiet:bench")
        if so % 10 == 0:
            rows.append((f"!r{r}:bench", so, 1, f"$e{so}", '["notify",{"set_tweak":"highlight"}]', True, False,
                         so, join_user_ids(users[:1])))
            users = users[1:]
        rows.append((f"!r{r}:bench", so, 0, f"$e{so}", '["notify"]', False, False, so, join_user_ids(users)))

    def insert(txn, part):
        txn.executemany("INSERT INTO push_notification_groups (room_id, stream_ordering, grp, event_id, actions,"
                        " highlight, is_call, ts, user_ids) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", part)
    for i in range(0, len(rows), 5000):
        db.run_blocking(insert, rows[i:i + 5000])
    if db.engine_name == "postgres":
        db.run_blocking(lambda txn: txn.execute("ANALYZE push_notification_groups"))


async def timed(fn, runs: int = 15) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


async def main(reactor, args) -> None:
    admin = None
    if args.db == "sqlite":
        url = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    else:
        import psycopg2
        name = "nbench_" + uuid.uuid4().hex[:8]
        admin = psycopg2.connect(args.pg_url + "/postgres")
        admin.autocommit = True
        admin.cursor().execute(f"CREATE DATABASE {name}")
        url = f"{args.pg_url}/{name}"
    db = Database(url, reactor, pool_size=2)
    db.start()
    try:
        await threads.deferToThread(apply_migrations, db)
        await threads.deferToThread(fill, db, args.rooms, args.members, args.messages)
        store = PushStore(db)
        busy_rooms = [f"!r{r}:bench" for r in range(10)]
        quiet_rooms = [f"!r{args.rooms - 1}:bench"]
        deep = args.messages // 2
        print(f"# {args.db}: {args.messages} messages, {args.rooms} rooms x {args.members} members")
        for label, user, rooms in (("busy member, 10 rooms", "@busy:bench", busy_rooms),
                                   ("quiet member, 1 room", "@quiet:bench", quiet_rooms)):
            for how, room_ids in (("its rooms", rooms), ("all rooms", None)):
                for page, before in (("first page", None), ("deep page", deep)):
                    got = await store.get_notifications(user, room_ids, before, 20, False)
                    ms = await timed(lambda: store.get_notifications(user, room_ids, before, 20, False))
                    print(f"{label:22s} {how:9s} {page:10s} {len(got):2d} rows  {ms:8.2f} ms")
    finally:
        await db.close()
        if admin is not None:
            admin.cursor().execute(f"DROP DATABASE {name}")
            admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--rooms", type=int, default=200)
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--messages", type=int, default=100000)
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, parser.parse_args())))
