"""Restricted rooms on one server: members of an allowed room join without an invite, others may not."""
from __future__ import annotations

import pytest_twisted

from room_helpers import V3, create, users


def restricted(allowed_room: str, rule: str = "restricted") -> dict:
    return {"type": "m.room.join_rules", "state_key": "",
            "content": {"join_rule": rule, "allow": [{"type": "m.room_membership", "room_id": allowed_room}]}}


@pytest_twisted.ensureDeferred
async def test_members_of_an_allowed_room_join(hs):
    alice, bob, carol, dave = await users(hs, "alice", "bob", "carol", "dave")
    space = await create(alice, preset="public_chat")
    room = await create(alice, preset="private_chat", initial_state=[restricted(space)])
    assert (await bob.post(f"{V3}/join/{space}"))[0] == 200
    # bob is in the allowed room: he joins, authorised by alice (the only one who may invite)
    status, resp = await bob.post(f"{V3}/join/{room}")
    assert status == 200, resp
    status, member = await alice.get(f"{V3}/rooms/{room}/state/m.room.member/{bob.user_id}")
    assert member["membership"] == "join" and member["join_authorised_via_users_server"] == alice.user_id
    # carol is in no allowed room: refused, with a reason
    status, err = await carol.post(f"{V3}/join/{room}")
    assert status == 403 and err["errcode"] == "M_FORBIDDEN" and "member of a room" in err["error"]
    # an invite still works without the condition, and needs no authoriser
    assert (await alice.post(f"{V3}/rooms/{room}/invite", {"user_id": carol.user_id}))[0] == 200
    assert (await carol.post(f"{V3}/join/{room}"))[0] == 200
    status, member = await alice.get(f"{V3}/rooms/{room}/state/m.room.member/{carol.user_id}")
    assert "join_authorised_via_users_server" not in member
    # knock_restricted (v10+) lets members of the allowed room in the same way
    knockable = await create(alice, preset="private_chat", initial_state=[restricted(space, "knock_restricted")])
    assert (await bob.post(f"{V3}/join/{knockable}"))[0] == 200
    assert (await dave.post(f"{V3}/join/{knockable}"))[0] == 403


@pytest_twisted.ensureDeferred
async def test_no_member_who_may_invite(hs):
    alice, bob, carol = await users(hs, "alice", "bob", "carol")
    space = await create(alice, preset="public_chat")
    room = await create(alice, preset="private_chat", initial_state=[restricted(space)],
                        power_level_content_override={"users": {alice.user_id: 100}, "invite": 100})
    for u in (bob, carol):
        assert (await u.post(f"{V3}/join/{space}"))[0] == 200
    assert (await bob.post(f"{V3}/join/{room}"))[0] == 200
    assert (await alice.post(f"{V3}/rooms/{room}/leave"))[0] == 200
    # bob (power 0) remains; nobody here may invite, so nobody can let carol in
    status, err = await carol.post(f"{V3}/join/{room}")
    assert status == 400 and err["errcode"] == "M_UNABLE_TO_GRANT_JOIN"
