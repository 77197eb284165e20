"""matrix-nio, unmodified, sees the standard events behind the groups API."""
from __future__ import annotations

import pytest_twisted
from nio import AsyncClient, RoomGetStateEventResponse, RoomSendResponse

import support
from groups_helpers import P
from room_helpers import V3, create, users


def nio_client(hs, account):
    client = AsyncClient(support.base_url(hs), account.user_id)
    client.access_token, client.user_id, client.device_id = account.token, account.user_id, account.device_id
    return client


async def state(client, room, etype, key=""):
    resp = await support.aio(client.room_get_state_event(room, etype, key))
    assert isinstance(resp, RoomGetStateEventResponse), resp
    return resp.content


@pytest_twisted.ensureDeferred
async def test_stock_client_sees_group_state(hs):
    owner, admin, member = await users(hs, "owner", "admin", "member")
    room = await create(owner, preset="public_chat")
    for c in (admin, member):
        assert (await c.post(f"{V3}/join/{room}"))[0] == 200
    nio = nio_client(hs, member)
    try:
        # admin appointed: power levels
        assert (await owner.post(f"{P}/rooms/{room}/admins", {"user_id": admin.user_id}))[0] == 200
        pl = await state(nio, room, "m.room.power_levels")
        assert pl["users"][admin.user_id] == 50
        # muted: below events_default, and nio's own send is refused
        assert (await admin.post(f"{P}/rooms/{room}/mute", {"user_id": member.user_id}))[0] == 200
        pl = await state(nio, room, "m.room.power_levels")
        assert pl["users"][member.user_id] < pl["events_default"]
        resp = await support.aio(nio.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "hi"}))
        assert not isinstance(resp, RoomSendResponse)
        assert (await admin.post(f"{P}/rooms/{room}/unmute", {"user_id": member.user_id}))[0] == 200
        resp = await support.aio(nio.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "hi"}))
        assert isinstance(resp, RoomSendResponse), resp
        # approval on: the knock join rule
        assert (await admin.put(f"{P}/rooms/{room}/settings", {"join_approval": True}))[0] == 200
        assert (await state(nio, room, "m.room.join_rules"))["join_rule"] == "knock"
        # the announcement is plain room state
        assert (await admin.put(f"{P}/rooms/{room}/announcement", {"text": "Be kind"}))[0] == 200
        ann = await state(nio, room, "im.qun.announcement")
        assert ann["text"] == "Be kind" and ann["author"] == admin.user_id
        # transfer: the new owner at 100, the old one gone from users
        assert (await owner.post(f"{P}/rooms/{room}/transfer_owner", {"user_id": admin.user_id}))[0] == 200
        pl = await state(nio, room, "m.room.power_levels")
        assert pl["users"].get(admin.user_id) == 100 and owner.user_id not in pl["users"]
    finally:
        await support.aio(nio.close())
