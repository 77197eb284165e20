"""Membership in full and moderation through power levels."""
from __future__ import annotations

import pytest_twisted

from room_helpers import V3, create, send, users


@pytest_twisted.ensureDeferred
async def test_kick_ban_unban_forget_with_reasons(hs):
    alice, bob, carol = await users(hs, "alice", "bob", "carol")
    room = await create(alice, preset="public_chat")
    for u in (bob, carol):
        assert (await u.post(f"{V3}/join/{room}"))[0] == 200
    # a plain member cannot kick
    status, err = await bob.post(f"{V3}/rooms/{room}/kick", {"user_id": carol.user_id})
    assert status == 403 and err["errcode"] == "M_FORBIDDEN" and err["error"]
    status, _ = await alice.post(f"{V3}/rooms/{room}/kick", {"user_id": bob.user_id, "reason": "spam"})
    assert status == 200
    status, ev = await alice.get(f"{V3}/rooms/{room}/state/m.room.member/{bob.user_id}")
    assert ev == {"membership": "leave", "reason": "spam"}
    status, err = await send(bob, room, "still here?")
    assert status == 403 and err["errcode"] == "M_FORBIDDEN"
    # public room: bob may come back, then gets banned
    assert (await bob.post(f"{V3}/join/{room}"))[0] == 200
    status, _ = await alice.post(f"{V3}/rooms/{room}/ban", {"user_id": bob.user_id, "reason": "again"})
    assert status == 200
    status, err = await bob.post(f"{V3}/join/{room}")
    assert status == 403 and err["errcode"] == "M_FORBIDDEN"
    status, err = await send(bob, room, "let me in")
    assert status == 403
    status, _ = await alice.post(f"{V3}/rooms/{room}/unban", {"user_id": bob.user_id})
    assert status == 200
    status, err = await alice.post(f"{V3}/rooms/{room}/unban", {"user_id": bob.user_id})
    assert status == 403
    assert (await bob.post(f"{V3}/join/{room}"))[0] == 200
    # forget needs a leave first
    status, err = await carol.post(f"{V3}/rooms/{room}/forget")
    assert status == 400
    assert (await carol.post(f"{V3}/rooms/{room}/leave"))[0] == 200
    assert (await carol.post(f"{V3}/rooms/{room}/forget"))[0] == 200
    # bad input changes nothing
    status, err = await alice.post(f"{V3}/rooms/{room}/kick", {"user_id": "not a user"})
    assert status == 400
    status, err = await alice.post(f"{V3}/rooms/{room}/kick", {})
    assert status == 400 and err["errcode"] == "M_MISSING_PARAM"


@pytest_twisted.ensureDeferred
async def test_knock_and_invite_rules(hs):
    alice, bob, carol = await users(hs, "alice", "bob", "carol")
    room = await create(alice, initial_state=[{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}])
    status, _ = await bob.post(f"{V3}/knock/{room}", {"reason": "let me in"})
    assert status == 200
    status, ev = await alice.get(f"{V3}/rooms/{room}/state/m.room.member/{bob.user_id}")
    assert ev["membership"] == "knock" and ev["reason"] == "let me in"
    assert (await alice.post(f"{V3}/rooms/{room}/invite", {"user_id": bob.user_id}))[0] == 200
    assert (await bob.post(f"{V3}/rooms/{room}/join"))[0] == 200
    # members may invite (invite level 0 in groups)
    assert (await bob.post(f"{V3}/rooms/{room}/invite", {"user_id": carol.user_id, "reason": "friend"}))[0] == 200
    status, ev = await alice.get(f"{V3}/rooms/{room}/state/m.room.member/{carol.user_id}")
    assert ev["membership"] == "invite" and ev["reason"] == "friend"
    # carol rejects
    assert (await carol.post(f"{V3}/rooms/{room}/leave"))[0] == 200
    # inviting a joined user is refused
    status, err = await alice.post(f"{V3}/rooms/{room}/invite", {"user_id": bob.user_id})
    assert status == 403 and err["errcode"] == "M_FORBIDDEN"


@pytest_twisted.ensureDeferred
async def test_mute_all_and_mute_one(hs):
    alice, bob, carol = await users(hs, "alice", "bob", "carol")
    room = await create(alice, preset="public_chat")
    for u in (bob, carol):
        await u.post(f"{V3}/join/{room}")
    status, pl = await alice.get(f"{V3}/rooms/{room}/state/m.room.power_levels")
    # make bob an admin
    pl["users"][bob.user_id] = 50
    assert (await alice.put(f"{V3}/rooms/{room}/state/m.room.power_levels", pl))[0] == 200
    # mute all: events_default above members
    pl["events_default"] = 50
    assert (await alice.put(f"{V3}/rooms/{room}/state/m.room.power_levels", pl))[0] == 200
    status, err = await send(carol, room, "muted?")
    assert status == 403 and err["errcode"] == "M_FORBIDDEN" and "power" in err["error"].lower()
    assert (await send(bob, room, "admins still talk"))[0] == 200
    # unmute all, then mute carol alone
    pl["events_default"] = 0
    pl["users"][carol.user_id] = -1
    assert (await alice.put(f"{V3}/rooms/{room}/state/m.room.power_levels", pl))[0] == 200
    assert (await send(carol, room, "me?"))[0] == 403
    assert (await send(bob, room, "fine"))[0] == 200
    # a member cannot change power levels
    status, err = await carol.put(f"{V3}/rooms/{room}/state/m.room.power_levels", pl)
    assert status == 403


@pytest_twisted.ensureDeferred
async def test_create_room_options(hs):
    alice, bob = await users(hs, "alice", "bob")
    status, err = await alice.post(f"{V3}/createRoom", {"room_version": "999"})
    assert status == 400 and err["errcode"] == "M_UNSUPPORTED_ROOM_VERSION"
    status, err = await alice.post(f"{V3}/createRoom", {"preset": "nope"})
    assert status == 400
    status, err = await alice.post(f"{V3}/createRoom", {"invite": ["bad"]})
    assert status == 400
    status, resp = await alice.post(f"{V3}/createRoom", {
        "room_version": "11", "room_alias_name": "family", "visibility": "public", "is_direct": True,
        "invite": [bob.user_id], "creation_content": {"m.federate": False},
        "power_level_content_override": {"events_default": 10},
        "initial_state": [{"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}]})
    assert status == 200 and resp["room_alias"] == "#family:test.local"
    room = resp["room_id"]
    status, create_ev = await alice.get(f"{V3}/rooms/{room}/state/m.room.create")
    assert create_ev["room_version"] == "11" and create_ev["m.federate"] is False
    status, hv = await alice.get(f"{V3}/rooms/{room}/state/m.room.history_visibility")
    assert hv == {"history_visibility": "joined"}
    status, pl = await alice.get(f"{V3}/rooms/{room}/state/m.room.power_levels")
    assert pl["events_default"] == 10
    status, inv = await alice.get(f"{V3}/rooms/{room}/state/m.room.member/{bob.user_id}")
    assert inv["membership"] == "invite" and inv["is_direct"] is True
    status, err = await alice.post(f"{V3}/createRoom", {"room_alias_name": "family"})
    assert status == 400 and err["errcode"] == "M_ROOM_IN_USE"
    status, alias = await bob.get(f"{V3}/directory/room/%23family:test.local")
    assert alias["room_id"] == room
    # join by alias
    assert (await bob.post(f"{V3}/join/%23family:test.local"))[0] == 200
    # v12 rooms: the room ID comes from the create event; the creator is not in users
    status, resp = await alice.post(f"{V3}/createRoom", {"room_version": "12"})
    assert status == 200
    status, pl = await alice.get(f"{V3}/rooms/{resp['room_id']}/state/m.room.power_levels")
    assert alice.user_id not in pl["users"]
    assert (await send(alice, resp["room_id"], "v12"))[0] == 200
    # v1 rooms work too
    status, resp = await alice.post(f"{V3}/createRoom", {"room_version": "1"})
    assert status == 200
    assert (await send(alice, resp["room_id"], "v1"))[0] == 200
