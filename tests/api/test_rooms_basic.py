"""Rooms: create, join/invite/leave, send, state, over real HTTP on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest_twisted

from room_helpers import V3, create, send, users

@pytest_twisted.ensureDeferred
async def test_create_invite_join_send_leave(hs):
    alice, bob, carol = await users(hs, "alice", "bob", "carol")
    room = await create(alice, name="Family", topic="All of us", invite=[bob.user_id])
    status, pl = await alice.get(f"{V3}/rooms/{room}/state/m.room.power_levels/")
    assert status == 200 and pl["users"][alice.user_id] == 100 and pl["invite"] == 0
    status, name = await alice.get(f"{V3}/rooms/{room}/state/m.room.name")
    assert name == {"name": "Family"}

    # carol is not invited: private group
    status, err = await carol.post(f"{V3}/rooms/{room}/join")
    assert status == 403 and err["errcode"] == "M_FORBIDDEN" and err["error"]
    status, _ = await bob.post(f"{V3}/join/{room}")
    assert status == 200
    status, sent = await send(bob, room, "hello from bob")
    assert status == 200 and sent["event_id"].startswith("$")
    status, ev = await alice.get(f"{V3}/rooms/{room}/event/{sent['event_id']}")
    assert status == 200 and ev["content"]["body"] == "hello from bob" and ev["sender"] == bob.user_id

    # carol reads and writes nothing
    status, err = await send(carol, room, "sneaky")
    assert status == 403 and err["errcode"] == "M_FORBIDDEN"
    status, err = await carol.get(f"{V3}/rooms/{room}/messages", params={"dir": "b"})
    assert status == 403
    status, err = await carol.get(f"{V3}/rooms/{room}/event/{sent['event_id']}")
    assert status in (403, 404)

    status, joined = await alice.get(f"{V3}/joined_rooms")
    assert joined == {"joined_rooms": [room]}
    status, members = await alice.get(f"{V3}/rooms/{room}/joined_members")
    assert set(members["joined"]) == {alice.user_id, bob.user_id}

    status, _ = await bob.post(f"{V3}/rooms/{room}/leave", {"reason": "bye"})
    assert status == 200
    status, members = await alice.get(f"{V3}/rooms/{room}/members", params={"membership": "leave"})
    assert [m["state_key"] for m in members["chunk"]] == [bob.user_id]
    assert members["chunk"][0]["content"]["reason"] == "bye"
    status, joined = await bob.get(f"{V3}/joined_rooms")
    assert joined == {"joined_rooms": []}


@pytest_twisted.ensureDeferred
async def test_txn_idempotency_and_messages(hs):
    (alice,) = await users(hs, "alice")
    room = await create(alice)
    s1, r1 = await send(alice, room, "one", txn="abc")
    s2, r2 = await send(alice, room, "one", txn="abc")
    assert s1 == s2 == 200 and r1 == r2
    for i in range(5):
        await send(alice, room, f"m{i}")
    status, page = await alice.get(f"{V3}/rooms/{room}/messages", params={"dir": "b", "limit": "3"})
    assert status == 200
    assert [e["content"]["body"] for e in page["chunk"]] == ["m4", "m3", "m2"]
    status, page2 = await alice.get(f"{V3}/rooms/{room}/messages",
                                    params={"dir": "b", "limit": "3", "from": page["end"]})
    assert [e["content"]["body"] for e in page2["chunk"]] == ["m1", "m0", "one"]


@pytest_twisted.ensureDeferred
async def test_state_put_get_and_restart_loads_state(hs):
    (alice,) = await users(hs, "alice")
    room = await create(alice)
    status, r = await alice.put(f"{V3}/rooms/{room}/state/m.room.topic", {"topic": "t1"})
    assert status == 200
    status, r2 = await alice.put(f"{V3}/rooms/{room}/state/m.room.topic", {"topic": "t1"})
    assert r2 == r  # same state again: same event
    status, state = await alice.get(f"{V3}/rooms/{room}/state")
    assert {e["type"] for e in state} >= {"m.room.create", "m.room.member", "m.room.power_levels", "m.room.topic"}
    # drop the in-memory room: it reloads from the database
    hs.room_states.forget([room])
    status, topic = await alice.get(f"{V3}/rooms/{room}/state/m.room.topic")
    assert topic == {"topic": "t1"}
    status, sent = await send(alice, room, "after reload")
    assert status == 200


@pytest_twisted.ensureDeferred
async def test_concurrent_duplicate_txn_ids_make_one_event(hs):
    from twisted.internet import defer
    (alice,) = await users(hs, "alice")
    room = await create(alice)
    results = await defer.gatherResults([defer.ensureDeferred(send(alice, room, "same", txn="dup"))
                                         for _ in range(5)])
    assert {r[1]["event_id"] for r in results} == {results[0][1]["event_id"]}
    status, page = await alice.get(f"{V3}/rooms/{room}/messages", params={"dir": "b", "limit": "50"})
    assert [e["content"].get("body") for e in page["chunk"]].count("same") == 1
