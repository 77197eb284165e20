"""An initial /sync reads every room's timeline together (``StoredRoomSource.timelines``).

The batched read must give each room exactly what the one-room path gives
(an initial sync filtered to that room alone takes it): the same timeline,
``limited`` flag, ``prev_batch`` and state at the timeline's start, with
history visibility applied. And it must not cost transactions per room.
"""
from __future__ import annotations

import json

import pytest_twisted

from room_helpers import create, send, users

V3 = "/_matrix/client/v3"


async def _sync(c, **params):
    status, body = await c.get(f"{V3}/sync", params=params)
    assert status == 200, body
    return body


def _view(room):
    """What must not depend on how the room was read."""
    return {
        "timeline": [e["event_id"] for e in room["timeline"]["events"]],
        "limited": room["timeline"]["limited"],
        "prev_batch": room["timeline"]["prev_batch"],
        "state": sorted(e["event_id"] for e in room["state"]["events"]),
        "summary": room["summary"],
    }


async def _rooms(alice, bob):
    """Rooms whose windows differ: long and short, hidden history, state changes inside the window."""
    rooms = {}
    # Long history, bob joined early: limited timeline, the state before it from the window.
    r = rooms["long"] = await create(alice, name="Long", invite=[bob.user_id])
    assert (await bob.post(f"{V3}/rooms/{r}/join", {}))[0] == 200
    for i in range(14):
        await send(alice, r, f"m{i}")
        if i == 7:
            status, _ = await alice.put(f"{V3}/rooms/{r}/state/m.room.topic/", {"topic": "new topic"})
            assert status == 200
    # Short: everything since the creation fits, no event before the timeline.
    r = rooms["short"] = await create(bob, name="Short")
    await send(bob, r, "only one")
    # History visible only to members who had joined, bob joined last: the window's first
    # visible event is his invite, the state comes from the (hidden) event before it.
    r = rooms["hidden"] = await create(alice, name="Hidden", initial_state=[{
        "type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}])
    for i in range(12):
        await send(alice, r, f"secret {i}")
    assert (await alice.post(f"{V3}/rooms/{r}/invite", {"user_id": bob.user_id}))[0] == 200
    assert (await bob.post(f"{V3}/rooms/{r}/join", {}))[0] == 200
    await send(alice, r, "welcome")
    # No name: the summary names heroes; someone joins inside the window.
    r = rooms["heroes"] = await create(bob, invite=[alice.user_id])
    for i in range(3):
        await send(bob, r, f"h{i}")
    assert (await alice.post(f"{V3}/rooms/{r}/join", {}))[0] == 200
    await send(alice, r, "joined")
    return rooms


@pytest_twisted.ensureDeferred
async def test_every_room_as_read_alone(hs):
    alice, bob = await users(hs, "alice", "bob")
    rooms = await _rooms(alice, bob)
    for flt in ({}, {"room": {"timeline": {"limit": 5}}},
                {"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 3}}}):
        together = (await _sync(bob, filter=json.dumps(flt)))["rooms"]["join"]
        assert set(together) == set(rooms.values())
        for name, room_id in rooms.items():
            alone_filter = {**flt, "room": {**flt.get("room", {}), "rooms": [room_id]}}
            alone = (await _sync(bob, filter=json.dumps(alone_filter)))["rooms"]["join"]
            assert list(alone) == [room_id]
            assert _view(together[room_id]) == _view(alone[room_id]), (name, flt)
    # Visibility was applied: bob sees none of the secrets sent before he was invited.
    hidden = together[rooms["hidden"]]
    bodies = [e["content"].get("body") for e in hidden["timeline"]["events"]]
    assert not any(b and b.startswith("secret") for b in bodies)
    assert bodies[-1] == "welcome"
    # The long room's timeline is limited and the state before it holds the new topic.
    long = (await _sync(bob))["rooms"]["join"][rooms["long"]]
    assert long["timeline"]["limited"] is True
    topics = [e for e in long["state"]["events"] + long["timeline"]["events"] if e["type"] == "m.room.topic"]
    assert topics and topics[-1]["content"]["topic"] == "new topic"


@pytest_twisted.ensureDeferred
async def test_transactions_do_not_grow_with_the_room_count(hs):
    alice, bob = await users(hs, "alice", "bob")
    runs = []
    real_run = hs.db.run

    async def counting_run(fn, *args, **kwargs):
        runs.append(fn)
        return await real_run(fn, *args, **kwargs)

    counts = []
    for _ in range(2):
        for i in range(4):
            room = await create(alice, name=f"g{i}", invite=[bob.user_id])
            assert (await bob.post(f"{V3}/rooms/{room}/join", {}))[0] == 200
            for j in range(3):
                await send(alice, room, f"x{j}")
        await _sync(bob)  # warms what is cached per user, like any client's first sync
        # Notification rows (0.5 s after the sends) and presence (every 5 s) are written in
        # the background: write them now, or on a slow machine one lands in the count below.
        await hs.notifications.flush()
        await hs.presence.flush()
        hs.db.run = counting_run
        try:
            runs.clear()
            body = await _sync(bob, filter=json.dumps({"account_data": {"not_types": ["x"]}}))
        finally:
            del hs.db.run
        assert len(body["rooms"]["join"]) == 4 * (len(counts) + 1)
        counts.append(len(runs))
    # 8 rooms cost what 4 did: the windows, states and events are read together.
    assert counts[1] == counts[0], (counts, [getattr(f, "__qualname__", f) for f in runs])
