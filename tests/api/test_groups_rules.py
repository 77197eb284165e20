"""Rules the groups enforce inside the room layer: member cap, recall window, @room."""
from __future__ import annotations

import pytest_twisted

import support
from groups_helpers import P, gather, membership, start_clocked
from room_helpers import V3, create, send, users


@pytest_twisted.ensureDeferred
async def test_member_cap_holds_against_racing_joins(tmp_path, database_url):
    hs = await support.start_homeserver(support.make_config(tmp_path, database_url, groups={"max_members": 4}))
    try:
        owner, *joiners = await users(hs, "owner", *[f"j{i}" for i in range(8)])
        room = await create(owner, preset="public_chat")
        results = await gather(*(j.post(f"{V3}/join/{room}") for j in joiners))
        ok = [r for r in results if r[0] == 200]
        full = [r for r in results if r[0] == 403]
        assert len(ok) == 3 and len(full) == 5, results
        assert all(r[1]["errcode"] == "IM.QUN_GROUP_FULL" for r in full)
        status, joined = await owner.get(f"{V3}/rooms/{room}/joined_members")
        assert len(joined["joined"]) == 4
        # a leave frees a place
        winner = next(j for j, r in zip(joiners, results) if r[0] == 200)
        loser = next(j for j, r in zip(joiners, results) if r[0] == 403)
        assert (await winner.post(f"{V3}/rooms/{room}/leave"))[0] == 200
        assert (await loser.post(f"{V3}/join/{room}"))[0] == 200
        assert (await winner.post(f"{V3}/join/{room}"))[1]["errcode"] == "IM.QUN_GROUP_FULL"
    finally:
        await hs.stop()


@pytest_twisted.ensureDeferred
async def test_member_cap_on_invites_codes_and_approval(tmp_path, database_url):
    hs = await support.start_homeserver(support.make_config(tmp_path, database_url, groups={"max_members": 2}))
    try:
        owner, bob, carol, dave, erin = await users(hs, "owner", "bob", "carol", "dave", "erin")
        room = await create(owner, invite=[bob.user_id, carol.user_id])
        assert (await bob.post(f"{V3}/rooms/{room}/join"))[0] == 200
        # accepting an invite beyond the cap
        status, err = await carol.post(f"{V3}/rooms/{room}/join")
        assert status == 403 and err["errcode"] == "IM.QUN_GROUP_FULL"
        assert await membership(owner, room, carol.user_id) == "invite"
        # joining by code beyond the cap
        code = (await owner.post(f"{P}/rooms/{room}/invite_code", {}))[1]["code"]
        status, err = await dave.post(f"{P}/join_by_code", {"code": code})
        assert status == 403 and err["errcode"] == "IM.QUN_GROUP_FULL"
        assert await membership(owner, room, dave.user_id) is None
        # approving beyond the cap
        assert (await owner.put(f"{P}/rooms/{room}/settings", {"join_approval": True}))[0] == 200
        assert (await erin.post(f"{P}/join_by_code", {"code": code}))[1]["knocked"] is True
        status, err = await owner.post(f"{P}/rooms/{room}/approve", {"user_id": erin.user_id})
        assert status == 403 and err["errcode"] == "IM.QUN_GROUP_FULL"
        assert await membership(owner, room, erin.user_id) == "knock"
        # a leave frees the place the approval needs
        assert (await bob.post(f"{V3}/rooms/{room}/leave"))[0] == 200
        assert (await owner.post(f"{P}/rooms/{room}/approve", {"user_id": erin.user_id}))[0] == 200
        assert await membership(owner, room, erin.user_id) == "join"
    finally:
        await hs.stop()


@pytest_twisted.ensureDeferred
async def test_recall_window(config):
    hs, clock = await start_clocked(config)
    try:
        owner, admin, bob = await users(hs, "owner", "admin", "bob")
        room = await create(owner, preset="public_chat")
        for c in (admin, bob):
            assert (await c.post(f"{V3}/join/{room}"))[0] == 200
        assert (await owner.post(f"{P}/rooms/{room}/admins", {"user_id": admin.user_id}))[0] == 200
        fresh = (await send(bob, room, "oops"))[1]["event_id"]
        old = (await send(bob, room, "old news"))[1]["event_id"]
        owners_old = (await send(owner, room, "owner's old"))[1]["event_id"]
        admins_old = (await send(admin, room, "admin's old"))[1]["event_id"]
        clock.advance(60)
        assert (await bob.put(f"{V3}/rooms/{room}/redact/{fresh}/r1", {}))[0] == 200
        clock.advance(61)
        status, err = await bob.put(f"{V3}/rooms/{room}/redact/{old}/r2", {})
        assert status == 403 and err["errcode"] == "IM.QUN_RECALL_WINDOW_PASSED"
        assert err["recall_window_ms"] == 120_000
        status, ev = await bob.get(f"{V3}/rooms/{room}/event/{old}")
        assert ev["content"]["body"] == "old news"
        # owner and admins: any message, any time
        assert (await admin.put(f"{V3}/rooms/{room}/redact/{old}/r3", {}))[0] == 200
        assert (await owner.put(f"{V3}/rooms/{room}/redact/{owners_old}/r4", {}))[0] == 200
        assert (await admin.put(f"{V3}/rooms/{room}/redact/{admins_old}/r5", {}))[0] == 200
    finally:
        await hs.stop()


@pytest_twisted.ensureDeferred
async def test_recall_window_zero_means_no_limit(tmp_path, database_url):
    hs, clock = await start_clocked(support.make_config(tmp_path, database_url, groups={"recall_window_ms": 0}))
    try:
        owner, bob = await users(hs, "owner", "bob")
        room = await create(owner, preset="public_chat")
        assert (await bob.post(f"{V3}/join/{room}"))[0] == 200
        old = (await send(bob, room, "old"))[1]["event_id"]
        clock.advance(365 * 24 * 3600)
        assert (await bob.put(f"{V3}/rooms/{room}/redact/{old}/r1", {}))[0] == 200
    finally:
        await hs.stop()


@pytest_twisted.ensureDeferred
async def test_room_mentions_only_for_owner_and_admins(hs):
    owner, bob = await users(hs, "owner", "bob")
    room = await create(owner, preset="public_chat")
    assert (await bob.post(f"{V3}/join/{room}"))[0] == 200
    for content in ({"msgtype": "m.text", "body": "@room lunch!"},
                    {"msgtype": "m.text", "body": "hey", "m.mentions": {"room": True}},
                    {"msgtype": "m.text", "body": "* edit", "m.new_content": {"msgtype": "m.text",
                                                                               "body": "hi @room"}}):
        status, err = await send(bob, room, content=content)
        assert status == 403 and err["errcode"] == "IM.QUN_ROOM_MENTION_FORBIDDEN", content
    for body in ("email @roomservice", "me@room.example", "no mention"):
        assert (await send(bob, room, body))[0] == 200, body
    assert (await send(bob, room, content={"msgtype": "m.text", "body": "x", "m.mentions": {"room": False}}))[0] == 200
    assert (await send(owner, room, "@room lunch!"))[0] == 200
    # the level follows the room's notifications.room power level
    status, pl = await owner.get(f"{V3}/rooms/{room}/state/m.room.power_levels")
    assert (await owner.put(f"{V3}/rooms/{room}/state/m.room.power_levels",
                            {**pl, "notifications": {"room": 0}}))[0] == 200
    assert (await send(bob, room, "@room now I may"))[0] == 200
