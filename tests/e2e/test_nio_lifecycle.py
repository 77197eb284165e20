"""A group's lifecycle driven by matrix-nio over a real loopback port (SQLite and PostgreSQL).

Covers: several users register; a group is created with invites; joins;
text messages; media messages (m.image, m.audio after an upload); an admin is made; kick; mute all and unmute; a redaction
seen as redacted by others; 120 messages paged backwards in order without
duplicates; a non-member is refused read and write.
"""
from __future__ import annotations

import io
from typing import Any

import nio
import pytest_twisted

from media_support import png, wav
from support import PASSWORD, aio, base_url

N_MESSAGES = 120


async def nio_user(hs: Any, name: str) -> nio.AsyncClient:
    client = nio.AsyncClient(base_url(hs), f"@{name}:{hs.server_name}")
    resp = await aio(client.register(name, PASSWORD))
    if not isinstance(resp, nio.RegisterResponse):
        # Servers may want the UIA session first: run the dummy flow with it.
        session = getattr(resp, "session", None) or (resp.transport_response and None)
        resp = await aio(client.register(name, PASSWORD, session_token=session))
    assert isinstance(resp, nio.RegisterResponse), resp
    return client


async def text(client: nio.AsyncClient, room_id: str, body: str) -> Any:
    return await aio(client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body}))


async def power_levels(client: nio.AsyncClient, room_id: str) -> dict[str, Any]:
    resp = await aio(client.room_get_state_event(room_id, "m.room.power_levels"))
    assert isinstance(resp, nio.RoomGetStateEventResponse), resp
    return resp.content


@pytest_twisted.ensureDeferred
async def test_group_lifecycle_with_matrix_nio(hs):
    owner, admin, member, outsider = [await nio_user(hs, n) for n in ("owner", "admin", "member", "outsider")]
    try:
        created = await aio(owner.room_create(name="Family", invite=[admin.user_id, member.user_id]))
        assert isinstance(created, nio.RoomCreateResponse), created
        room = created.room_id
        for c in (admin, member):
            joined = await aio(c.join(room))
            assert isinstance(joined, nio.JoinResponse), joined
        members = await aio(owner.joined_members(room))
        assert {m.user_id for m in members.members} == {owner.user_id, admin.user_id, member.user_id}
        assert isinstance(await text(member, room, "hello everyone"), nio.RoomSendResponse)

        # media messages: upload, then send m.image / m.audio pointing at the mxc URI
        picture, voice = png(64, 48), wav()
        up, _ = await aio(member.upload(io.BytesIO(picture), "image/png", "cat.png", filesize=len(picture)))
        assert isinstance(up, nio.UploadResponse), up
        image = await aio(member.room_send(room, "m.room.message", {
            "msgtype": "m.image", "body": "cat.png", "url": up.content_uri,
            "info": {"mimetype": "image/png", "size": len(picture), "w": 64, "h": 48}}))
        assert isinstance(image, nio.RoomSendResponse), image
        up, _ = await aio(member.upload(io.BytesIO(voice), "audio/wav", "note.wav", filesize=len(voice)))
        audio = await aio(member.room_send(room, "m.room.message", {
            "msgtype": "m.audio", "body": "note.wav", "url": up.content_uri,
            "info": {"mimetype": "audio/wav", "size": len(voice)}}))
        assert isinstance(audio, nio.RoomSendResponse), audio
        page = await aio(owner.room_messages(room, limit=2))
        assert [type(e) for e in page.chunk] == [nio.RoomMessageAudio, nio.RoomMessageImage]
        got = await aio(owner.download(page.chunk[1].url))
        assert isinstance(got, nio.MemoryDownloadResponse) and got.body == picture
        no_url = await aio(member.room_send(room, "m.room.message", {"msgtype": "m.image", "body": "x"}))
        assert isinstance(no_url, nio.RoomSendError) and no_url.status_code == "M_BAD_JSON"

        # make an admin
        pl = await power_levels(owner, room)
        pl["users"][admin.user_id] = 50
        assert isinstance(await aio(owner.room_put_state(room, "m.room.power_levels", pl)), nio.RoomPutStateResponse)

        # mute all, then unmute
        pl["events_default"] = 50
        assert isinstance(await aio(admin.room_put_state(room, "m.room.power_levels", pl)), nio.RoomPutStateError)
        assert isinstance(await aio(owner.room_put_state(room, "m.room.power_levels", pl)), nio.RoomPutStateResponse)
        refused = await text(member, room, "can I talk?")
        assert isinstance(refused, nio.RoomSendError) and refused.status_code == "M_FORBIDDEN"
        assert isinstance(await text(admin, room, "admins can"), nio.RoomSendResponse)
        pl["events_default"] = 0
        assert isinstance(await aio(owner.room_put_state(room, "m.room.power_levels", pl)), nio.RoomPutStateResponse)
        assert isinstance(await text(member, room, "unmuted"), nio.RoomSendResponse)

        # a redaction others see as redacted
        oops = await text(member, room, "oops")
        red = await aio(member.room_redact(room, oops.event_id, reason="typo"))
        assert isinstance(red, nio.RoomRedactResponse), red
        page = await aio(admin.room_messages(room, limit=5))
        redacted = [e for e in page.chunk if e.event_id == oops.event_id]
        assert len(redacted) == 1 and isinstance(redacted[0], nio.RedactedEvent)

        # 120 messages, paged backwards in order, no duplicates
        sent = []
        for i in range(N_MESSAGES):
            resp = await text(owner, room, f"msg {i}")
            assert isinstance(resp, nio.RoomSendResponse), resp
            sent.append(resp.event_id)
        seen: list[str] = []
        token = None
        while len(seen) < N_MESSAGES:
            page = await aio(member.room_messages(room, start=token, limit=25))
            assert isinstance(page, nio.RoomMessagesResponse), page
            seen += [e.event_id for e in page.chunk if isinstance(e, nio.RoomMessageText)
                     and e.body.startswith("msg ")]
            assert page.end and page.chunk
            token = page.end
        assert seen[:N_MESSAGES] == list(reversed(sent))
        assert len(set(seen)) == len(seen)

        # kick: the member is out and refused
        kicked = await aio(admin.room_kick(room, member.user_id, reason="bye"))
        assert isinstance(kicked, nio.RoomKickResponse), kicked
        assert isinstance(await text(member, room, "still here?"), nio.RoomSendError)

        # a non-member reads nothing and writes nothing
        refused = await text(outsider, room, "let me in")
        assert isinstance(refused, nio.RoomSendError) and refused.status_code == "M_FORBIDDEN"
        read = await aio(outsider.room_messages(room, limit=10))
        assert isinstance(read, nio.RoomMessagesError) and read.status_code == "M_FORBIDDEN"
        joined = await aio(outsider.join(room))
        assert isinstance(joined, nio.JoinError)
    finally:
        for c in (owner, admin, member, outsider):
            await aio(c.close())


@pytest_twisted.ensureDeferred
async def test_group_sync_with_matrix_nio(hs):
    """Invites, messages, typing and receipts as nio's own sync loop sees them."""
    owner, guest = [await nio_user(hs, n) for n in ("owner", "guest")]
    try:
        first = await aio(guest.sync(timeout=0))
        assert isinstance(first, nio.SyncResponse), first
        created = await aio(owner.room_create(name="Family", invite=[guest.user_id]))
        room = created.room_id
        # the invite arrives through sync, with the room's name in the stripped state
        resp = await aio(guest.sync(timeout=10_000, since=first.next_batch))
        assert isinstance(resp, nio.SyncResponse), resp
        assert room in resp.rooms.invite
        assert guest.invited_rooms[room].name == "Family"
        assert isinstance(await aio(guest.join(room)), nio.JoinResponse)
        resp = await aio(guest.sync(timeout=10_000, since=resp.next_batch))
        assert room in resp.rooms.join
        await aio(owner.sync(timeout=0))

        # a message, then typing, then a read receipt: each seen by the other's sync
        sent = await text(owner, room, "welcome")
        resp = await aio(guest.sync(timeout=10_000, since=resp.next_batch))
        bodies = [e.body for e in resp.rooms.join[room].timeline.events if isinstance(e, nio.RoomMessageText)]
        assert bodies == ["welcome"]
        assert isinstance(await aio(owner.room_typing(room, True, timeout=20_000)), nio.RoomTypingResponse)
        resp = await aio(guest.sync(timeout=10_000, since=resp.next_batch))
        typing = [e for e in resp.rooms.join[room].ephemeral if isinstance(e, nio.TypingNoticeEvent)]
        assert typing and typing[-1].users == [owner.user_id]
        assert guest.rooms[room].typing_users == [owner.user_id]
        receipt = await aio(guest.room_read_markers(room, sent.event_id, sent.event_id))
        assert isinstance(receipt, nio.RoomReadMarkersResponse), receipt
        owner_resp = await aio(owner.sync(timeout=10_000, since=owner.next_batch))
        receipts = [r for e in owner_resp.rooms.join[room].ephemeral if isinstance(e, nio.ReceiptEvent)
                    for r in e.receipts]
        assert any(r.event_id == sent.event_id and r.user_id == guest.user_id and r.receipt_type == "m.read"
                   for r in receipts)
    finally:
        for c in (owner, guest):
            await aio(c.close())
