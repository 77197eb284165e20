"""Group management: admins, mute (timed, across restarts), mute all, approval, announcement, transfer."""
from __future__ import annotations

import pytest_twisted

import support
from groups_helpers import P, membership, power_levels, start_clocked, wait_for
from room_helpers import V3, create, send, users


async def group_of(hs, *names):
    """An invite-only group owned by the first user, the others joined."""
    clients = await users(hs, *names)
    owner = clients[0]
    room = await create(owner)
    for c in clients[1:]:
        assert (await owner.post(f"{V3}/rooms/{room}/invite", {"user_id": c.user_id}))[0] == 200
        assert (await c.post(f"{V3}/rooms/{room}/join"))[0] == 200
    return room, clients


@pytest_twisted.ensureDeferred
async def test_admins(tmp_path, database_url):
    hs = await support.start_homeserver(support.make_config(tmp_path, database_url, groups={"max_admins": 2}))
    try:
        room, (owner, bob, carol, dave) = await group_of(hs, "owner", "bob", "carol", "dave")
        outsider, = await users(hs, "outsider")
        status, _ = await owner.post(f"{P}/rooms/{room}/admins", {"user_id": bob.user_id})
        assert status == 200
        assert (await power_levels(carol, room))["users"][bob.user_id] == 50
        # only the owner appoints admins
        status, err = await bob.post(f"{P}/rooms/{room}/admins", {"user_id": carol.user_id})
        assert status == 403 and err["errcode"] == "M_FORBIDDEN"
        status, err = await outsider.post(f"{P}/rooms/{room}/admins", {"user_id": carol.user_id})
        assert status == 403
        # idempotent, then the cap
        assert (await owner.post(f"{P}/rooms/{room}/admins", {"user_id": bob.user_id}))[0] == 200
        assert (await owner.post(f"{P}/rooms/{room}/admins", {"user_id": carol.user_id}))[0] == 200
        status, err = await owner.post(f"{P}/rooms/{room}/admins", {"user_id": dave.user_id})
        assert status == 403 and err["errcode"] == "IM.QUN_TOO_MANY_ADMINS" and err["limit"] == 2
        # bad input
        for body, errcode in (({}, "M_MISSING_PARAM"), ({"user_id": 7}, "M_BAD_JSON"),
                              ({"user_id": "nobody"}, "M_INVALID_PARAM"),
                              ({"user_id": outsider.user_id}, "M_INVALID_PARAM")):
            status, err = await owner.post(f"{P}/rooms/{room}/admins", body)
            assert status == 400 and err["errcode"] == errcode, (body, err)
        # removal
        status, err = await bob.request("DELETE", f"{P}/rooms/{room}/admins/{carol.user_id}")
        assert status == 403
        status, _ = await owner.request("DELETE", f"{P}/rooms/{room}/admins/{carol.user_id}")
        assert status == 200
        assert carol.user_id not in (await power_levels(owner, room))["users"]
        status, err = await owner.request("DELETE", f"{P}/rooms/{room}/admins/{carol.user_id}")
        assert status == 404 and err["errcode"] == "M_NOT_FOUND"
        status, err = await owner.request("DELETE", f"{P}/rooms/{room}/admins/not-a-user")
        assert status == 400 and err["errcode"] == "M_INVALID_PARAM"
        assert (await owner.post(f"{P}/rooms/{room}/admins", {"user_id": dave.user_id}))[0] == 200
        status, settings = await carol.get(f"{P}/rooms/{room}/settings")
        assert settings["admins"] == sorted([bob.user_id, dave.user_id])
        assert settings["owners"] == [owner.user_id]
        assert (await outsider.get(f"{P}/rooms/{room}/settings"))[0] == 403
    finally:
        await hs.stop()


@pytest_twisted.ensureDeferred
async def test_mute_and_unmute(config):
    hs, clock = await start_clocked(config)
    try:
        room, (owner, admin, admin2, bob, carol) = await group_of(hs, "owner", "admin", "admin2", "bob", "carol")
        for a in (admin, admin2):
            assert (await owner.post(f"{P}/rooms/{room}/admins", {"user_id": a.user_id}))[0] == 200
        # an admin mutes a member until unmuted: below events_default, in the power levels
        status, body = await admin.post(f"{P}/rooms/{room}/mute", {"user_id": bob.user_id})
        assert status == 200 and body == {}
        pl = await power_levels(carol, room)
        assert pl["users"][bob.user_id] < pl["events_default"]
        status, err = await send(bob, room, "hello?")
        assert status == 403 and err["errcode"] == "M_FORBIDDEN"
        # forbidden paths
        for actor, target in ((admin, owner), (admin, admin2), (carol, bob), (owner, owner)):
            status, err = await actor.post(f"{P}/rooms/{room}/mute", {"user_id": target.user_id})
            assert status == 403 and err["errcode"] == "M_FORBIDDEN", (actor.user_id, target.user_id)
        status, err = await carol.post(f"{P}/rooms/{room}/unmute", {"user_id": bob.user_id})
        assert status == 403
        for body, errcode in (({}, "M_MISSING_PARAM"), ({"user_id": ["x"]}, "M_BAD_JSON"),
                              ({"user_id": "x"}, "M_INVALID_PARAM")):
            status, err = await admin.post(f"{P}/rooms/{room}/unmute", body)
            assert status == 400 and err["errcode"] == errcode, (body, err)
        status, err = await admin.post(f"{P}/rooms/{room}/unmute", {"user_id": owner.user_id})
        assert status == 403
        # bad input
        for body, errcode in (({}, "M_MISSING_PARAM"), ({"user_id": carol.user_id, "duration_ms": "1h"}, "M_BAD_JSON"),
                              ({"user_id": carol.user_id, "duration_ms": 0}, "M_BAD_JSON"),
                              ({"user_id": carol.user_id, "duration_ms": 10 ** 13}, "M_BAD_JSON"),
                              ({"user_id": "@ghost:test.local"}, "M_INVALID_PARAM")):
            status, err = await admin.post(f"{P}/rooms/{room}/mute", body)
            assert status == 400 and err["errcode"] == errcode, (body, err)
        assert await send(carol, room, "still fine") and (await send(carol, room, "ok"))[0] == 200
        # unmute restores
        assert (await admin2.post(f"{P}/rooms/{room}/unmute", {"user_id": bob.user_id}))[0] == 200
        assert bob.user_id not in (await power_levels(carol, room))["users"]
        assert (await send(bob, room, "back"))[0] == 200
        # a timed mute lifts by itself
        status, body = await admin.post(f"{P}/rooms/{room}/mute", {"user_id": carol.user_id, "duration_ms": 60_000})
        assert status == 200 and body["expires_at"] == int(clock.seconds() * 1000) + 60_000
        assert (await send(carol, room, "x"))[0] == 403
        clock.advance(30)
        assert (await send(carol, room, "x"))[0] == 403
        clock.advance(31)

        async def carol_unmuted():
            return carol.user_id not in (await power_levels(owner, room))["users"]
        await wait_for(carol_unmuted)
        assert (await send(carol, room, "free"))[0] == 200
        assert await hs.group_store.get_mute(room, carol.user_id) is None
        # the owner may mute an admin; unmuting gives the admin level back
        assert (await owner.post(f"{P}/rooms/{room}/mute", {"user_id": admin2.user_id}))[0] == 200
        assert (await send(admin2, room, "x"))[0] == 403
        assert (await admin.post(f"{P}/rooms/{room}/unmute", {"user_id": admin2.user_id}))[0] == 403
        assert (await owner.post(f"{P}/rooms/{room}/unmute", {"user_id": admin2.user_id}))[0] == 200
        assert (await power_levels(owner, room))["users"][admin2.user_id] == 50
    finally:
        await hs.stop()


@pytest_twisted.ensureDeferred
async def test_timed_mute_lifts_across_restart(config):
    hs, clock = await start_clocked(config)
    try:
        room, (owner, bob, carol) = await group_of(hs, "owner", "bob", "carol")
        assert (await owner.post(f"{P}/rooms/{room}/mute", {"user_id": bob.user_id, "duration_ms": 60_000}))[0] == 200
        assert (await owner.post(f"{P}/rooms/{room}/mute", {"user_id": carol.user_id,
                                                            "duration_ms": 3_600_000}))[0] == 200
        saved = [(c.token, c.user_id) for c in (owner, bob, carol)]
    finally:
        await hs.stop()
    # down for two minutes: bob's mute expired meanwhile, carol's not yet
    hs, clock = await start_clocked(config, at=clock.seconds() + 120)
    try:
        owner, bob, carol = support.Client(hs), support.Client(hs), support.Client(hs)
        for c, (token, user_id) in zip((owner, bob, carol), saved):
            c.token, c.user_id = token, user_id
        clock.advance(0)

        async def unmuted(c):
            return c.user_id not in (await power_levels(owner, room))["users"]
        await wait_for(lambda: unmuted(bob))
        assert (await send(bob, room, "free"))[0] == 200
        assert (await send(carol, room, "x"))[0] == 403
        clock.advance(3600)
        await wait_for(lambda: unmuted(carol))
        assert (await send(carol, room, "free"))[0] == 200
    finally:
        await hs.stop()


@pytest_twisted.ensureDeferred
async def test_mute_all(hs):
    room, (owner, admin, bob) = await group_of(hs, "owner", "admin", "bob")
    assert (await owner.post(f"{P}/rooms/{room}/admins", {"user_id": admin.user_id}))[0] == 200
    status, err = await bob.post(f"{P}/rooms/{room}/mute_all", {"muted": True})
    assert status == 403
    for body, errcode in (({}, "M_MISSING_PARAM"), ({"muted": "yes"}, "M_BAD_JSON")):
        status, err = await admin.post(f"{P}/rooms/{room}/mute_all", body)
        assert status == 400 and err["errcode"] == errcode
    assert (await admin.post(f"{P}/rooms/{room}/mute_all", {"muted": True}))[0] == 200
    assert (await power_levels(bob, room))["events_default"] == 50
    assert (await send(bob, room, "x"))[0] == 403
    assert (await send(admin, room, "admins may talk"))[0] == 200
    assert (await send(owner, room, "so may I"))[0] == 200
    assert (await bob.get(f"{P}/rooms/{room}/settings"))[1]["mute_all"] is True
    # individual mutes made meanwhile stay below the restored default
    assert (await admin.post(f"{P}/rooms/{room}/mute", {"user_id": bob.user_id}))[0] == 200
    assert (await owner.post(f"{P}/rooms/{room}/mute_all", {"muted": True}))[0] == 200  # no-op
    assert (await owner.post(f"{P}/rooms/{room}/mute_all", {"muted": False}))[0] == 200
    pl = await power_levels(bob, room)
    assert pl["events_default"] == 0 and pl["users"][bob.user_id] < 0
    assert (await send(bob, room, "x"))[0] == 403
    assert (await admin.post(f"{P}/rooms/{room}/unmute", {"user_id": bob.user_id}))[0] == 200
    assert (await send(bob, room, "talking again"))[0] == 200
    assert (await owner.post(f"{P}/rooms/{room}/mute_all", {"muted": False}))[0] == 200  # no-op


@pytest_twisted.ensureDeferred
async def test_join_approval_requests_approve_deny(hs):
    room, (owner, admin, member) = await group_of(hs, "owner", "admin", "member")
    knocker, denied, remote_less = await users(hs, "knocker", "denied", "other")
    assert (await owner.post(f"{P}/rooms/{room}/admins", {"user_id": admin.user_id}))[0] == 200
    # settings: members may not change them; bad input
    status, err = await member.put(f"{P}/rooms/{room}/settings", {"join_approval": True})
    assert status == 403
    for body, errcode in (({}, "M_MISSING_PARAM"), ({"join_approval": "on"}, "M_BAD_JSON")):
        status, err = await admin.put(f"{P}/rooms/{room}/settings", body)
        assert status == 400 and err["errcode"] == errcode
    status, settings = await admin.put(f"{P}/rooms/{room}/settings", {"join_approval": True})
    assert status == 200 and settings["join_approval"] is True and settings["join_rule"] == "knock"
    status, rules = await member.get(f"{V3}/rooms/{room}/state/m.room.join_rules")
    assert rules == {"join_rule": "knock"}

    # joining by code now files a request
    code = (await member.post(f"{P}/rooms/{room}/invite_code", {}))[1]["code"]
    status, body = await knocker.post(f"{P}/join_by_code", {"code": code})
    assert status == 200 and body == {"room_id": room, "knocked": True}
    assert (await knocker.post(f"{P}/join_by_code", {"code": code}))[1]["knocked"] is True
    status, body = await denied.post(f"{V3}/knock/{room}", {"reason": "let me in"})
    assert status == 200
    status, listed = await admin.get(f"{P}/rooms/{room}/join_requests")
    assert status == 200
    assert [r["user_id"] for r in listed["requests"]] == [knocker.user_id, denied.user_id]
    assert listed["requests"][1]["reason"] == "let me in"
    assert (await member.get(f"{P}/rooms/{room}/join_requests"))[0] == 403
    assert (await knocker.get(f"{P}/rooms/{room}/join_requests"))[0] == 403
    status, err = await admin.get(f"{P}/rooms/not-a-room/join_requests")
    assert status == 400 and err["errcode"] == "M_INVALID_PARAM"

    # approve: a local requester becomes a member with no further step
    status, err = await member.post(f"{P}/rooms/{room}/approve", {"user_id": knocker.user_id})
    assert status == 403
    assert (await admin.post(f"{P}/rooms/{room}/approve", {"user_id": knocker.user_id}))[0] == 200
    assert await membership(owner, room, knocker.user_id) == "join"
    status, err = await admin.post(f"{P}/rooms/{room}/approve", {"user_id": remote_less.user_id})
    assert status == 404 and err["errcode"] == "M_NOT_FOUND"
    status, err = await admin.post(f"{P}/rooms/{room}/approve", {"user_id": "bad"})
    assert status == 400 and err["errcode"] == "M_INVALID_PARAM"
    # deny, with a reason
    status, err = await member.post(f"{P}/rooms/{room}/deny", {"user_id": denied.user_id})
    assert status == 403
    status, err = await admin.post(f"{P}/rooms/{room}/deny", {"user_id": denied.user_id, "reason": 5})
    assert status == 400 and err["errcode"] == "M_BAD_JSON"
    assert (await admin.post(f"{P}/rooms/{room}/deny", {"user_id": denied.user_id, "reason": "full"}))[0] == 200
    status, ev = await owner.get(f"{V3}/rooms/{room}/state/m.room.member/{denied.user_id}")
    assert ev["membership"] == "leave" and ev["reason"] == "full"
    assert (await admin.get(f"{P}/rooms/{room}/join_requests"))[1] == {"requests": []}
    status, err = await admin.post(f"{P}/rooms/{room}/deny", {"user_id": denied.user_id})
    assert status == 404

    # approval off: back to the previous rule
    status, settings = await owner.put(f"{P}/rooms/{room}/settings", {"join_approval": False})
    assert settings["join_approval"] is False
    assert (await member.get(f"{V3}/rooms/{room}/state/m.room.join_rules"))[1]["join_rule"] == "invite"


@pytest_twisted.ensureDeferred
async def test_join_approval_needs_knocking_room_version(hs):
    owner, = await users(hs, "owner")
    room = await create(owner, room_version="6")
    status, err = await owner.put(f"{P}/rooms/{room}/settings", {"join_approval": True})
    assert status == 400 and err["errcode"] == "M_UNSUPPORTED_ROOM_VERSION"


@pytest_twisted.ensureDeferred
async def test_announcement(hs):
    room, (owner, admin, member) = await group_of(hs, "owner", "admin", "member")
    assert (await owner.post(f"{P}/rooms/{room}/admins", {"user_id": admin.user_id}))[0] == 200
    status, body = await admin.put(f"{P}/rooms/{room}/announcement", {"text": "Trip on Saturday, 9:00"})
    assert status == 200 and body["event_id"].startswith("$")
    status, content = await member.get(f"{V3}/rooms/{room}/state/im.qun.announcement")
    assert status == 200
    assert content["text"] == "Trip on Saturday, 9:00" and content["author"] == admin.user_id
    assert isinstance(content["ts"], int) and content["m.mentions"] == {"room": True}
    status, err = await member.put(f"{P}/rooms/{room}/announcement", {"text": "me too"})
    assert status == 403
    for body, errcode in (({}, "M_MISSING_PARAM"), ({"text": 1}, "M_BAD_JSON"), ({"text": "  "}, "M_INVALID_PARAM"),
                          ({"text": "x" * 5000}, "M_BAD_JSON")):
        status, err = await owner.put(f"{P}/rooms/{room}/announcement", body)
        assert status == 400 and err["errcode"] == errcode, (body, err)
    assert (await member.get(f"{V3}/rooms/{room}/state/im.qun.announcement"))[1]["text"] == "Trip on Saturday, 9:00"


@pytest_twisted.ensureDeferred
async def test_transfer_owner(hs):
    room, (owner, bob, carol) = await group_of(hs, "owner", "bob", "carol")
    outsider, = await users(hs, "outsider")
    status, err = await bob.post(f"{P}/rooms/{room}/transfer_owner", {"user_id": bob.user_id})
    assert status == 403
    for body, errcode in (({}, "M_MISSING_PARAM"), ({"user_id": outsider.user_id}, "M_INVALID_PARAM"),
                          ({"user_id": owner.user_id}, "M_INVALID_PARAM"), ({"user_id": "x"}, "M_INVALID_PARAM")):
        status, err = await owner.post(f"{P}/rooms/{room}/transfer_owner", body)
        assert status == 400 and err["errcode"] == errcode, (body, err)
    assert (await owner.post(f"{P}/rooms/{room}/mute", {"user_id": bob.user_id}))[0] == 200
    assert (await owner.post(f"{P}/rooms/{room}/transfer_owner", {"user_id": bob.user_id}))[0] == 200
    users_pl = (await power_levels(carol, room))["users"]
    assert users_pl == {bob.user_id: 100}
    assert await hs.group_store.get_mute(room, bob.user_id) is None
    # the old owner lost every owner power
    status, err = await owner.post(f"{P}/rooms/{room}/admins", {"user_id": carol.user_id})
    assert status == 403
    status, err = await owner.post(f"{P}/rooms/{room}/transfer_owner", {"user_id": owner.user_id})
    assert status == 403
    status, err = await owner.post(f"{P}/rooms/{room}/mute", {"user_id": carol.user_id})
    assert status == 403
    status, err = await owner.put(f"{V3}/rooms/{room}/state/m.room.name", {"name": "mine"})
    assert status == 403
    # and the new owner has them
    assert (await bob.post(f"{P}/rooms/{room}/admins", {"user_id": carol.user_id}))[0] == 200
    assert (await bob.post(f"{P}/rooms/{room}/mute", {"user_id": owner.user_id}))[0] == 200
    assert (await bob.put(f"{V3}/rooms/{room}/state/m.room.name", {"name": "bob's"}))[0] == 200


@pytest_twisted.ensureDeferred
async def test_transfer_refused_where_creators_are_permanent(hs):
    owner, bob = await users(hs, "owner", "bob")
    room = await create(owner, room_version="12", preset="public_chat")
    assert (await bob.post(f"{V3}/join/{room}"))[0] == 200
    status, err = await owner.post(f"{P}/rooms/{room}/transfer_owner", {"user_id": bob.user_id})
    assert status == 400 and err["errcode"] == "M_UNSUPPORTED_ROOM_VERSION"
