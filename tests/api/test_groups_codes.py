"""Invite codes, QR codes and face-to-face groups (docs/groups.md)."""
from __future__ import annotations

import io

import pytest_twisted
from PIL import Image

import support
from groups_helpers import P, gather, membership, start_clocked
from homeserver.groups.qr import render_qr_png
from homeserver.groups.invite_codes import CODE_ALPHABET, CODE_LENGTH
from room_helpers import V3, create, users


@pytest_twisted.ensureDeferred
async def test_invite_code_preview_qr_and_join(hs):
    alice, bob, carol, dave = await users(hs, "alice", "bob", "carol", "dave")
    room = await create(alice, name="Hiking club", topic="weekends")  # invite-only
    assert (await alice.post(f"{V3}/rooms/{room}/invite", {"user_id": bob.user_id}))[0] == 200
    assert (await bob.post(f"{V3}/rooms/{room}/join"))[0] == 200

    # a plain member may invite (invite level 0), so may make a code
    status, made = await bob.post(f"{P}/rooms/{room}/invite_code", {})
    assert status == 200, made
    code = made["code"]
    assert len(code) == CODE_LENGTH and set(code) <= set(CODE_ALPHABET)
    assert made["uri"] == f"https://test.local/_matrix/client/unstable/im.qun/invite_code/{code}"
    assert made["expires_at"] > 0
    # a non-member may not; bad input changes nothing
    status, err = await carol.post(f"{P}/rooms/{room}/invite_code", {})
    assert status == 403 and err["errcode"] == "M_FORBIDDEN"
    for body in ({"ttl_ms": "soon"}, {"ttl_ms": 5}, {"ttl_ms": 10 ** 15}, {"ttl_ms": True}):
        status, err = await bob.post(f"{P}/rooms/{room}/invite_code", body)
        assert status == 400 and err["errcode"] == "M_BAD_JSON", (body, err)
    status, err = await bob.post(f"{P}/rooms/not-a-room/invite_code", {})
    assert status == 400 and err["errcode"] == "M_INVALID_PARAM"
    status, err = await bob.post(f"{P}/rooms/{room}/invite_code", {}, token="")
    assert status == 401 and err["errcode"] == "M_MISSING_TOKEN"

    # preview, for someone not in the group (lower case and dashes are tolerated)
    status, preview = await dave.get(f"{P}/invite_code/{code[:6].lower()}-{code[6:]}")
    assert status == 200, preview
    assert preview == {"room_id": room, "name": "Hiking club", "topic": "weekends", "member_count": 2,
                       "join_rule": "invite", "join_approval": False, "expires_at": made["expires_at"]}
    for bad in ("ZZZZZZZZZZZZ", "short", "x" * 70, "!!!!!!!!!!!!"):
        status, err = await dave.get(f"{P}/invite_code/{bad}")
        assert status == 404 and err["errcode"] == "M_NOT_FOUND", bad

    # the QR code is a PNG of the invite URI
    status, png = await dave.get(f"{P}/invite_code/{code}/qr.png")
    assert status == 200
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and 100 <= image.size[0] == image.size[1] <= 2000
    assert png == render_qr_png(made["uri"])
    status, err = await dave.get(f"{P}/invite_code/ZZZZZZZZZZZZ/qr.png")
    assert status == 404 and err["errcode"] == "M_NOT_FOUND"
    for path in (f"{P}/invite_code/{code}", f"{P}/invite_code/{code}/qr.png"):
        status, err = await dave.get(path, token="")
        assert status == 401 and err["errcode"] == "M_MISSING_TOKEN"
    status, err = await dave.post(f"{P}/join_by_code", {"code": code}, token="")
    assert status == 401

    # joining by code admits into the invite-only group (invited on bob's behalf, then joined)
    status, joined = await dave.post(f"{P}/join_by_code", {"code": code})
    assert status == 200 and joined == {"room_id": room}
    assert await membership(alice, room, dave.user_id) == "join"
    # again: idempotent
    assert (await dave.post(f"{P}/join_by_code", {"code": code})) == (200, {"room_id": room})
    # bad input
    for body, errcode in (({}, "M_MISSING_PARAM"), ({"code": 5}, "M_BAD_JSON"),
                          ({"code": "ZZZZZZZZZZZZ"}, "M_NOT_FOUND"), ({"code": ""}, "M_NOT_FOUND")):
        status, err = await carol.post(f"{P}/join_by_code", body)
        assert err["errcode"] == errcode, (body, err)
    assert await membership(alice, room, carol.user_id) is None

    # a banned user never gets in by code
    assert (await alice.post(f"{V3}/rooms/{room}/ban", {"user_id": carol.user_id}))[0] == 200
    status, err = await carol.post(f"{P}/join_by_code", {"code": code})
    assert status == 403

    # a code whose creator left no longer admits anyone
    assert (await bob.post(f"{V3}/rooms/{room}/leave"))[0] == 200
    erin, = await users(hs, "erin")
    status, err = await erin.post(f"{P}/join_by_code", {"code": code})
    assert status == 403 and err["errcode"] == "M_FORBIDDEN"

    # when inviting needs power, plain members cannot make codes
    status, pl = await alice.get(f"{V3}/rooms/{room}/state/m.room.power_levels")
    assert (await alice.put(f"{V3}/rooms/{room}/state/m.room.power_levels", {**pl, "invite": 50}))[0] == 200
    status, err = await dave.post(f"{P}/rooms/{room}/invite_code", {})
    assert status == 403


@pytest_twisted.ensureDeferred
async def test_invite_codes_expire(config):
    hs, clock = await start_clocked(config)
    try:
        alice, bob = await users(hs, "alice", "bob")
        room = await create(alice, preset="public_chat")
        status, short = await alice.post(f"{P}/rooms/{room}/invite_code", {"ttl_ms": 60_000})
        assert status == 200 and short["expires_at"] == int(clock.seconds() * 1000) + 60_000
        status, default = await alice.post(f"{P}/rooms/{room}/invite_code", {})
        assert default["expires_at"] == int(clock.seconds() * 1000) + 7 * 24 * 3600 * 1000
        assert (await bob.get(f"{P}/invite_code/{short['code']}"))[0] == 200
        clock.advance(61)
        for path in (f"{P}/invite_code/{short['code']}", f"{P}/invite_code/{short['code']}/qr.png"):
            status, err = await bob.get(path)
            assert status == 404 and err["errcode"] == "M_NOT_FOUND"
        status, err = await bob.post(f"{P}/join_by_code", {"code": short["code"]})
        assert status == 404 and err["errcode"] == "M_NOT_FOUND"
        assert await membership(alice, room, bob.user_id) is None
        # the other one still works; expired rows are purged
        assert (await bob.post(f"{P}/join_by_code", {"code": default["code"]}))[0] == 200
        assert await hs.group_store.purge_expired_codes(int(clock.seconds() * 1000)) == 1
        assert await hs.group_store.get_invite_code(short["code"]) is None
    finally:
        await hs.stop()


@pytest_twisted.ensureDeferred
async def test_face_to_face_groups(config):
    hs, clock = await start_clocked(config)
    try:
        a, b, c, d, e, f = await users(hs, "a", "b", "c", "d", "e", "f")
        here = {"lat": 39.9042, "lon": 116.4074}
        near = {"lat": 39.9092, "lon": 116.4074}   # ~560 m north
        far = {"lat": 31.2304, "lon": 121.4737}    # another city
        # two first callers at once still make one group
        (s1, r1), (s2, r2) = await gather(a.post(f"{P}/face_to_face", {"code": "1234", **here}),
                                          b.post(f"{P}/face_to_face", {"code": "1234", **near}))
        assert s1 == 200 and s2 == 200, (r1, r2)
        room = r1["room_id"]
        assert r2["room_id"] == room
        # whoever came second sees both
        assert max(({m["user_id"] for m in r["members"]} for r in (r1, r2)), key=len) == {a.user_id, b.user_id}
        # same digits far away: another group; other digits nearby: another group
        status, other = await c.post(f"{P}/face_to_face", {"code": "1234", **far})
        assert status == 200 and other["room_id"] != room
        assert [m["user_id"] for m in other["members"]] == [c.user_id]
        status, third = await d.post(f"{P}/face_to_face", {"code": "4321", **here})
        assert status == 200 and third["room_id"] not in (room, other["room_id"])
        # calling again is harmless
        status, again = await a.post(f"{P}/face_to_face", {"code": "1234", **here})
        assert again["room_id"] == room and len(again["members"]) == 2
        assert hs.face_to_face.open_sessions() == 3
        # the creator leaving does not close the door: another member invites
        assert (await a.post(f"{V3}/rooms/{room}/leave"))[0] == 200
        status, joined = await f.post(f"{P}/face_to_face", {"code": "1234", **here})
        assert status == 200 and joined["room_id"] == room
        assert {m["user_id"] for m in joined["members"]} == {b.user_id, f.user_id}
        # after the window the session (and its location) is gone: a new group
        clock.advance(15 * 60 + 1)
        assert hs.face_to_face.open_sessions() == 0
        status, late = await e.post(f"{P}/face_to_face", {"code": "1234", **here})
        assert status == 200 and late["room_id"] != room
        # bad input
        for body, errcode in (({"code": "123", **here}, "M_INVALID_PARAM"),
                              ({"code": "12345", **here}, "M_INVALID_PARAM"),
                              ({"code": "12a4", **here}, "M_INVALID_PARAM"),
                              ({"code": "١٢٣٤", **here}, "M_INVALID_PARAM"),
                              ({"code": 1234, **here}, "M_INVALID_PARAM"),
                              ({**here}, "M_MISSING_PARAM"),
                              ({"code": "1234", "lat": 91, "lon": 0}, "M_INVALID_PARAM"),
                              ({"code": "1234", "lat": 0, "lon": -180.5}, "M_INVALID_PARAM"),
                              ({"code": "1234", "lat": "north", "lon": 0}, "M_INVALID_PARAM"),
                              ({"code": "1234", "lat": True, "lon": 0}, "M_INVALID_PARAM"),
                              ({"code": "1234", "lon": 0}, "M_MISSING_PARAM")):
            status, err = await e.post(f"{P}/face_to_face", body)
            assert status == 400 and err["errcode"] == errcode, (body, err)
        status, err = await e.post(f"{P}/face_to_face", {"code": "1234", **here}, token="")
        assert status == 401
    finally:
        await hs.stop()


@pytest_twisted.ensureDeferred
async def test_face_to_face_respects_member_cap(tmp_path, database_url):
    hs = await support.start_homeserver(support.make_config(tmp_path, database_url, groups={"max_members": 2}))
    try:
        a, b, c = await users(hs, "a", "b", "c")
        spot = {"code": "0000", "lat": 0.0, "lon": 0.0}
        room = (await a.post(f"{P}/face_to_face", spot))[1]["room_id"]
        assert (await b.post(f"{P}/face_to_face", spot))[1]["room_id"] == room
        status, err = await c.post(f"{P}/face_to_face", spot)
        assert status == 403 and err["errcode"] == "IM.QUN_GROUP_FULL"
    finally:
        await hs.stop()
