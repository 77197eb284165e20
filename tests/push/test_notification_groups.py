"""Notifications stored per (event, actions) group: rows written, GET /notifications, restart, migration."""
from __future__ import annotations

import os

import pytest
import pytest_twisted
from twisted.internet import threads

from homeserver.push.notifications import NotificationService
from homeserver.storage import push as push_storage
from homeserver.storage.database import SCHEMA_DIR, Database, apply_migrations
from homeserver.storage.push import join_user_ids, split_user_ids
from push_support import FakeEvent, FakeRoomView, check
from room_helpers import V3, create, send, users

ROOM = "!group:test.local"
MEMBERS = [f"@u{i}:test.local" for i in range(10)]


def _groups(hs):
    return hs.db.run(lambda txn: txn.query(
        "SELECT event_id, grp, highlight, user_ids FROM push_notification_groups ORDER BY stream_ordering, grp"))


def _service(hs, view):
    hs.notifications._rooms = view
    hs.pushers.rooms = view
    return hs.notifications


def _mention(sender: str, *user_ids: str) -> FakeEvent:
    return FakeEvent(ROOM, sender, "hi", content={"msgtype": "m.text", "body": "hi",
                                                  "m.mentions": {"user_ids": list(user_ids)}})


@pytest_twisted.ensureDeferred
async def test_one_row_per_group_not_per_member(hs):
    view = FakeRoomView()
    view.add_room(ROOM, MEMBERS)
    n = _service(hs, view)
    plain = FakeEvent(ROOM, MEMBERS[0], "hello all")
    n.on_events([plain])
    await n.flush()
    rows = await _groups(hs)
    assert len(rows) == 1
    assert rows[0][0] == plain.event_id and not rows[0][2]
    assert sorted(split_user_ids(rows[0][3])) == sorted(MEMBERS[1:])  # the sender is not notified
    mention = _mention(MEMBERS[0], MEMBERS[3])
    n.on_events([mention])
    await n.flush()
    rows = [r for r in await _groups(hs) if r[0] == mention.event_id]
    assert len(rows) == 2 and {r[1] for r in rows} == {0, 1}
    highlighted = [r for r in rows if r[2]]
    assert len(highlighted) == 1 and split_user_ids(highlighted[0][3]) == [MEMBERS[3]]
    plain_row = next(r for r in rows if not r[2])
    assert sorted(split_user_ids(plain_row[3])) == sorted(set(MEMBERS[1:]) - {MEMBERS[3]})


@pytest_twisted.ensureDeferred
async def test_flush_in_chunks_of_members(hs, monkeypatch):
    from homeserver.push import notifications as module
    monkeypatch.setattr(module, "FLUSH_CHUNK", 20)  # two messages' worth of members (9 each)
    calls = []
    store = hs.notifications._store
    original = store.add_notifications

    async def counting(groups, positions):
        calls.append((len(groups), len(list(positions))))
        await original(groups, positions)

    monkeypatch.setattr(store, "add_notifications", counting)
    view = FakeRoomView()
    view.add_room(ROOM, MEMBERS)
    n = _service(hs, view)
    n.on_events([FakeEvent(ROOM, MEMBERS[0], f"m{i}") for i in range(5)])
    await n.flush()
    # 9 + 9 + 9 >= 20: three groups per transaction, the read positions with the last one
    assert [c[0] for c in calls] == [3, 2]
    assert calls[0][1] == 0 and calls[1][1] == 1
    assert len(await _groups(hs)) == 5


@pytest_twisted.ensureDeferred
async def test_counts_rebuilt_from_groups_after_restart(hs):
    view = FakeRoomView()
    view.add_room(ROOM, MEMBERS)
    n = _service(hs, view)
    events = [FakeEvent(ROOM, MEMBERS[0], "one"), _mention(MEMBERS[1], MEMBERS[2], MEMBERS[4]),
              FakeEvent(ROOM, MEMBERS[0], "three")]
    n.on_events(events)
    n.on_receipt(ROOM, MEMBERS[2], events[1].event_id)  # read the mention, not the last one
    n.on_receipt(ROOM, MEMBERS[5], events[2].event_id)  # read everything
    assert n.counts(MEMBERS[2], ROOM) == (1, 0)
    assert n.counts(MEMBERS[4], ROOM) == (3, 1)
    assert n.counts(MEMBERS[1], ROOM) == (1, 0)  # sending read "one"
    await n.flush()
    again = NotificationService(hs.push_store, hs.push_rules, view, hs.clock, n._is_local)
    await again.load()
    for user in MEMBERS:
        assert again.counts(user, ROOM) == n.counts(user, ROOM), user
    assert again.counts(MEMBERS[5], ROOM) == (0, 0)
    await again.stop()
    # pruning goes by the time of the group
    now = hs.clock.time_msec()
    assert await hs.push_store.prune_notifications(now - 1000) == 0
    assert await hs.push_store.prune_notifications(now + 1) == 4  # 1 + 2 + 1 groups
    assert await _groups(hs) == []


@pytest_twisted.ensureDeferred
async def test_store_lists_a_users_groups_across_rooms(hs, monkeypatch):
    monkeypatch.setattr(push_storage, "_ROOMS_PER_QUERY", 2)  # several statements, the floor between them
    store = hs.push_store
    bob, bob_caps, bo = "@bob:test.local", "@Bob:test.local", "@bo:test.local"
    rooms = [f"!r{i}:test.local" for i in range(5)]
    groups, expect = [], []
    for so in range(1, 41):
        room = rooms[so % 5]
        members = [bo, bob_caps] if so % 3 == 0 else [bob, bo]  # every third: not bob (prefix, case)
        highlight = so % 4 == 0
        actions = '["notify",{"set_tweak":"highlight"}]' if highlight else '["notify"]'
        groups.append((room, so, 0, f"$e{so}", actions, highlight, False, 1000 + so, join_user_ids(members)))
        if so % 3:
            expect.append((so, room, highlight))
    await store.add_notifications(groups, ())
    await store.add_notifications(groups[:3], ())  # written twice (a retried flush): no duplicates
    expect.reverse()

    async def listed(room_ids, before, limit, only_highlight=False):
        rows = await store.get_notifications(bob, room_ids, before, limit, only_highlight)
        assert all(r.user_id == bob for r in rows)
        return [(r.stream_ordering, r.room_id, r.highlight) for r in rows]

    for room_ids in (rooms, None, list(reversed(rooms))):
        assert await listed(room_ids, None, 100) == expect
        assert await listed(room_ids, None, 7) == expect[:7]
        assert await listed(room_ids, 30, 5) == [e for e in expect if e[0] < 30][:5]
        assert await listed(room_ids, None, 100, True) == [e for e in expect if e[2]]
    # only the rooms asked about
    assert await listed(rooms[:2], None, 100) == [e for e in expect if e[1] in rooms[:2]]
    assert await listed([], None, 100) == []
    row = (await store.get_notifications(bob, rooms, None, 1, False))[0]
    assert (row.event_id, list(row.actions), row.ts) == ("$e40", ["notify", {"set_tweak": "highlight"}], 1040)
    assert [r.stream_ordering for r in await store.get_notifications(bob_caps, None, None, 3, False)] == [39, 36, 33]


@pytest_twisted.ensureDeferred
async def test_get_notifications_per_user_across_rooms_and_after_leaving(hs):
    alice, bob, carol = await users(hs, "alice", "bob", "carol")
    group = await create(alice, preset="public_chat")
    other = await create(bob, preset="public_chat")
    for c in (bob, carol):
        assert (await c.post(f"{V3}/join/{group}"))[0] == 200
    assert (await alice.post(f"{V3}/join/{other}"))[0] == 200
    ids = {}
    for name, room, content in (
            ("m0", group, None), ("r0", other, None),
            ("m1", group, {"msgtype": "m.text", "body": "you?", "m.mentions": {"user_ids": [carol.user_id]}}),
            ("r1", other, None), ("m2", group, None)):
        status, resp = await send(bob, room, name, content=content)
        assert status == 200, resp
        ids[resp["event_id"]] = name
    await hs.notifications.flush()
    rows = await _groups(hs)
    assert len([r for r in rows if r[0] in ids]) == 6  # one group per message, two for the mention

    async def page(client, **params):
        status, body = await client.get(f"{V3}/notifications", params=params)
        assert status == 200, body
        check("/notifications", "get", 200, body)
        return [ids[x["event"]["event_id"]] for x in body["notifications"]], body.get("next_token")

    assert await page(carol) == (["m2", "m1", "m0"], None)
    assert await page(carol, only="highlight") == (["m1"], None)
    # alice: both rooms merged newest first, paged with `from`
    got, token = await page(alice, limit="2")
    assert got == ["m2", "r1"]
    got, token = await page(alice, limit="2", **{"from": token})
    assert got == ["m1", "r0"]
    assert await page(alice, limit="2", **{"from": token}) == (["m0"], None)
    assert await page(alice, only="highlight") == ([], None)
    assert await page(bob) == ([], None)
    # carol leaves: what she was notified about stays listed, nothing newer is added
    assert (await carol.post(f"{V3}/rooms/{group}/leave"))[0] == 200
    status, resp = await send(bob, group, "m3")
    ids[resp["event_id"]] = "m3"
    assert await page(carol) == (["m2", "m1", "m0"], None)
    assert (await page(alice, limit="1"))[0] == ["m3"]


# --- the migration of per-recipient rows (070) into groups (071) ------------------------------


def _old_table_sql() -> str:
    with open(os.path.join(SCHEMA_DIR, "070_push.sql"), encoding="utf-8") as f:
        statements = f.read().split(";\n")
    return next(s for s in statements if "CREATE TABLE push_notifications" in s)


@pytest_twisted.ensureDeferred
async def test_migration_groups_old_rows(database_url):
    from twisted.internet import reactor
    db = Database(database_url, reactor, pool_size=2)
    db.start()
    try:
        await threads.deferToThread(apply_migrations, db)
        # back to the state before 071, with rows in the old per-recipient table
        old = [("!a:t", "@x:t", 5, "$5", '["notify"]', False, False, 100),
               ("!a:t", "@y:t", 5, "$5", '["notify"]', False, False, 100),
               ("!a:t", "@z:t", 5, "$5", '["notify",{"set_tweak":"highlight"}]', True, False, 100),
               ("!b:t", "@x:t", 7, "$7", '["notify"]', False, True, 200)]

        def downgrade(txn):
            txn.execute("DROP TABLE push_notification_groups")
            txn.execute(_old_table_sql())
            txn.executemany("INSERT INTO push_notifications (room_id, user_id, stream_ordering, event_id, actions,"
                            " highlight, is_call, ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", old)
            txn.execute("DELETE FROM schema_version WHERE version = ?", (71,))
        await db.run(downgrade)
        assert await threads.deferToThread(apply_migrations, db) == [71]
        rows = await db.run(lambda txn: txn.query(
            "SELECT room_id, stream_ordering, grp, event_id, actions, highlight, is_call, ts, user_ids"
            " FROM push_notification_groups ORDER BY stream_ordering, highlight"))
        got = [(r[0], int(r[1]), r[3], r[4], bool(r[5]), bool(r[6]), int(r[7]), sorted(split_user_ids(r[8])))
               for r in rows]
        assert got == [("!a:t", 5, "$5", '["notify"]', False, False, 100, ["@x:t", "@y:t"]),
                       ("!a:t", 5, "$5", '["notify",{"set_tweak":"highlight"}]', True, False, 100, ["@z:t"]),
                       ("!b:t", 7, "$7", '["notify"]', False, True, 200, ["@x:t"])]
        assert sorted(int(r[2]) for r in rows[:2]) == [0, 1]
        assert all(r[8].startswith("\n") and r[8].endswith("\n") for r in rows)
        with pytest.raises(Exception):
            await db.run(lambda txn: txn.query("SELECT COUNT(*) FROM push_notifications"))
        store = push_storage.PushStore(db)
        listed = await store.get_notifications("@x:t", ["!a:t", "!b:t"], None, 10, False)
        assert [(r.room_id, r.stream_ordering, r.is_call) for r in listed] == [("!b:t", 7, True), ("!a:t", 5, False)]
        read, unread = await store.load_unread(0)
        assert read == {} and sorted((u[0], u[1], u[2], sorted(u[4])) for u in unread) == [
            ("!a:t", 5, False, ["@x:t", "@y:t"]), ("!a:t", 5, True, ["@z:t"]), ("!b:t", 7, False, ["@x:t"])]
    finally:
        await db.close()
