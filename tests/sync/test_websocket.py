"""The WebSocket channel over a real port, with aiohttp's client on the shared asyncio loop."""
from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest_twisted
from twisted.internet import defer

from support import Client, aio, base_url

V3 = "/_matrix/client/v3"
WS = "/_matrix/client/unstable/im.qun/ws"


async def _user(hs, name):
    c = Client(hs)
    await c.register(name)
    return c


def _ws_url(hs, **params):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return base_url(hs).replace("http", "ws", 1) + WS + (f"?{query}" if query else "")


async def _receive(ws, kind=None, timeout=10):
    while True:
        msg = await asyncio.wait_for(ws.receive(), timeout)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        frame = json.loads(msg.data)
        if kind is None or frame["type"] == kind:
            return frame


@pytest_twisted.ensureDeferred
async def test_unauthenticated_is_refused_with_401(hs):
    async def attempt(headers=None, url=None):
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(url or _ws_url(hs), headers=headers):
                    return None
            except aiohttp.WSServerHandshakeError as e:
                return e.status

    assert await aio(attempt()) == 401
    assert await aio(attempt({"Authorization": "Bearer nope"})) == 401
    assert await aio(attempt(url=_ws_url(hs, access_token="nope"))) == 401


@pytest_twisted.ensureDeferred
async def test_push_requests_bad_frames_and_resume(hs):
    alice = await _user(hs, "alice")

    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(_ws_url(hs), headers={"Authorization": f"Bearer {alice.token}"}) as ws:
                initial = await _receive(ws, "sync")
                assert "next_batch" in initial["body"]
                # a request over the socket, answered through the same router
                await ws.send_str(json.dumps({
                    "type": "request", "id": "r1", "method": "PUT",
                    "path": f"{V3}/user/{alice.user_id}/account_data/org.ws", "body": {"n": 1}}))
                frames = [await _receive(ws), await _receive(ws)]
                by_type = {f["type"]: f for f in frames}
                assert by_type["response"] == {"type": "response", "id": "r1", "status": 200, "body": {}}
                pushed = by_type["sync"]["body"]
                assert pushed["account_data"]["events"] == [{"type": "org.ws", "content": {"n": 1}}]
                # errors from the router come back as responses
                await ws.send_str(json.dumps({"type": "request", "id": 2, "method": "GET",
                                              "path": f"{V3}/user/{alice.user_id}/account_data/none"}))
                resp = await _receive(ws, "response")
                assert (resp["id"], resp["status"], resp["body"]["errcode"]) == (2, 404, "M_NOT_FOUND")
                # bad frames: an error frame each, and the socket stays usable
                for bad, code in (("not json", "M_NOT_JSON"), ("[1]", "M_BAD_JSON"),
                                  ('{"type": "nope", "id": 1}', "M_UNRECOGNIZED"),
                                  ('{"type": "request", "method": "GET", "path": "/x"}', "M_BAD_JSON"),
                                  ('{"type": "request", "id": 3, "method": "BREW", "path": "/x"}', "M_BAD_JSON")):
                    await ws.send_str(bad)
                    err = await _receive(ws, "error")
                    assert err["body"]["errcode"] == code
                await ws.send_str(json.dumps({"type": "request", "id": "q", "method": "GET",
                                              "path": f"{V3}/sync?timeout=0"}))
                resp = await _receive(ws, "response")
                assert resp["status"] == 200 and "next_batch" in resp["body"]
                return pushed["next_batch"]

    last = await aio(scenario())
    # while disconnected, more happens; resuming from the last token gets exactly that
    await alice.put(f"{V3}/user/{alice.user_id}/account_data/org.offline", {"n": 2})

    async def resume():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(_ws_url(hs, since=last, access_token=alice.token)) as ws:
                frame = await _receive(ws, "sync")
                return frame["body"]

    body = await aio(resume())
    assert body["account_data"]["events"] == [{"type": "org.offline", "content": {"n": 2}}]
    assert hs.notifier.listener_count() == 0 or len(hs.websocket.connections) <= 1


@pytest_twisted.ensureDeferred
async def test_to_device_pushed_to_socket(hs):
    alice, bob = await _user(hs, "alice"), await _user(hs, "bob")

    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(_ws_url(hs, access_token=bob.token)) as ws:
                await _receive(ws, "sync")
                send = asyncio.ensure_future(_send(alice, bob))
                frame = await _receive(ws, "sync")
                await send
                return frame["body"]

    body = await aio(scenario())
    assert body["to_device"]["events"][0]["content"] == {"hi": 1}


async def _send(alice, bob):
    await defer.Deferred.asFuture(defer.ensureDeferred(alice.put(
        f"{V3}/sendToDevice/m.x/t1", {"messages": {bob.user_id: {bob.device_id: {"hi": 1}}}})),
        asyncio.get_event_loop())


@pytest_twisted.ensureDeferred
async def test_room_messages_over_socket_and_resume_without_loss_or_repeat(hs):
    from room_helpers import create, send
    alice, bob = await _user(hs, "alice"), await _user(hs, "bob")
    room = await create(alice)
    assert (await alice.post(f"{V3}/rooms/{room}/invite", {"user_id": bob.user_id}))[0] == 200
    assert (await bob.post(f"{V3}/rooms/{room}/join", {}))[0] == 200

    def bodies(frame):
        events = frame["body"].get("rooms", {}).get("join", {}).get(room, {}).get("timeline", {}).get("events", [])
        return [e["content"]["body"] for e in events if e["type"] == "m.room.message"]

    async def first_session():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(_ws_url(hs, access_token=bob.token)) as ws:
                await _receive(ws, "sync")
                # bob sends over the socket: no HTTP round trip
                await ws.send_str(json.dumps({
                    "type": "request", "id": "s1", "method": "PUT",
                    "path": f"{V3}/rooms/{room}/send/m.room.message/ws1",
                    "body": {"msgtype": "m.text", "body": "from the socket"}}))
                seen, response = [], None
                while "from the socket" not in seen or response is None:
                    frame = await _receive(ws)
                    if frame["type"] == "response":
                        response = frame
                    else:
                        seen += bodies(frame)
                assert response["status"] == 200 and response["body"]["event_id"].startswith("$")
                await ws.send_str(json.dumps({"type": "request", "id": "t", "method": "PUT",
                                              "path": f"{V3}/rooms/{room}/typing/{bob.user_id}",
                                              "body": {"typing": True, "timeout": 5000}}))
                while True:
                    frame = await _receive(ws)
                    if frame["type"] == "sync" and any(
                            e["type"] == "m.typing" and e["content"]["user_ids"] == [bob.user_id]
                            for e in frame["body"].get("rooms", {}).get("join", {}).get(room, {})
                                              .get("ephemeral", {}).get("events", [])):
                        return frame["body"]["next_batch"]

    last = await aio(first_session())
    for i in range(3):
        await send(alice, room, f"offline {i}")

    async def resume():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(_ws_url(hs, since=last, access_token=bob.token)) as ws:
                got = []
                while len(got) < 4:
                    frame = await _receive(ws, "sync")
                    got += bodies(frame)
                    if len(got) == 3:
                        await defer.Deferred.asFuture(defer.ensureDeferred(send(alice, room, "live")),
                                                      asyncio.get_event_loop())
                return got

    assert await aio(resume()) == ["offline 0", "offline 1", "offline 2", "live"]


@pytest_twisted.ensureDeferred
async def test_slow_reader_is_closed_with_4008(tmp_path, database_url):
    import support
    hs = await support.start_homeserver(support.make_config(
        tmp_path, database_url, sync={"websocket": {"max_buffer_size": 2048}}))
    try:
        alice = await _user(hs, "alice")
        big = f"{V3}/user/{alice.user_id}/account_data/org.big"
        assert (await alice.put(big, {"x": "a" * 1500}))[0] == 200

        async def scenario():
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(_ws_url(hs, access_token=alice.token)) as ws:
                    await _receive(ws, "sync")
                    # Make the server believe the peer stopped reading (TCP back-pressure).
                    for sock in hs.websocket.connections:
                        sock.pauseProducing()
                    for i in range(4):  # answers pile up past the 2 KiB bound
                        await ws.send_str(json.dumps({"type": "request", "id": i, "method": "GET", "path": big}))
                    while True:
                        msg = await asyncio.wait_for(ws.receive(), 10)
                        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                            return ws.close_code

        assert await aio(scenario()) == 4008
    finally:
        await hs.stop()


@pytest_twisted.ensureDeferred
async def test_members_get_one_message_each_with_their_own_counts(hs):
    """Several sockets woken by one message (the shared-body path): same event, own unread counts."""
    from room_helpers import create
    alice = await _user(hs, "alice")
    others = [await _user(hs, name) for name in ("bob", "carol", "dave")]
    room = await create(alice, preset="public_chat")
    for c in others:
        assert (await c.post(f"{V3}/rooms/{room}/join", {}))[0] == 200

    async def scenario():
        async with aiohttp.ClientSession() as session:
            sockets = [await session.ws_connect(_ws_url(hs, access_token=c.token)) for c in others]
            for ws in sockets:
                await _receive(ws, "sync")
            sending = asyncio.ensure_future(defer.Deferred.asFuture(defer.ensureDeferred(
                alice.put(f"{V3}/rooms/{room}/send/m.room.message/m1",
                          {"msgtype": "m.text", "body": "hello carol",
                           "m.mentions": {"user_ids": [others[1].user_id]}})), asyncio.get_event_loop()))
            rooms = []
            for ws in sockets:
                while True:
                    body = (await _receive(ws, "sync"))["body"]
                    if room in body.get("rooms", {}).get("join", {}):
                        rooms.append(body["rooms"]["join"][room])
                        break
            await sending
            for ws in sockets:
                await ws.close()
            return rooms

    rooms = await aio(scenario())
    assert [[e["content"]["body"] for e in r["timeline"]["events"]] for r in rooms] == [["hello carol"]] * 3
    assert [r["unread_notifications"]["highlight_count"] for r in rooms] == [0, 1, 0]


@pytest_twisted.ensureDeferred
async def test_logout_closes_the_socket_with_4001(hs):
    alice = await _user(hs, "alice")

    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(_ws_url(hs, access_token=alice.token)) as ws:
                await _receive(ws, "sync")
                await ws.send_str(json.dumps({"type": "request", "id": "bye", "method": "POST",
                                              "path": f"{V3}/logout", "body": {}}))
                frames = []
                while True:
                    msg = await asyncio.wait_for(ws.receive(), 10)
                    if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                        return ws.close_code, frames
                    frames.append(json.loads(msg.data))

    code, frames = await aio(scenario())
    assert code == 4001
    assert not hs.websocket.connections
    status, _ = await alice.get(f"{V3}/account/whoami")
    assert status == 401


@pytest_twisted.ensureDeferred
async def test_expired_token_closes_the_socket_at_the_next_frame(hs):
    from room_helpers import create, send
    alice, bob = await _user(hs, "alice"), await _user(hs, "bob")
    room = await create(alice, preset="public_chat")
    assert (await bob.post(f"{V3}/rooms/{room}/join", {}))[0] == 200

    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(_ws_url(hs, access_token=bob.token)) as ws:
                await _receive(ws, "sync")
                # As if bob's token had been issued with an expiry that has now passed.
                for sock in hs.websocket.connections:
                    sock.session.expires_ms = hs.clock.time_msec() - 1
                await defer.Deferred.asFuture(defer.ensureDeferred(send(alice, room, "after expiry")),
                                              asyncio.get_event_loop())
                while True:
                    msg = await asyncio.wait_for(ws.receive(), 10)
                    if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                        return ws.close_code
                    assert "after expiry" not in msg.data

    assert await aio(scenario()) == 4001


@pytest_twisted.ensureDeferred
async def test_shutdown_closes_sockets_with_1001(hs):
    """Stopping the server closes each socket with 1001 (going away), which autobahn's sendClose
    refuses from applications, and goes on to close the database."""
    alice = await _user(hs, "alice")
    stopping = []

    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(_ws_url(hs, access_token=alice.token)) as ws:
                await _receive(ws, "sync")
                stopping.append(defer.ensureDeferred(hs.stop()))
                while True:
                    msg = await asyncio.wait_for(ws.receive(), 10)
                    if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                        return ws.close_code

    assert await aio(scenario()) == 1001
    await stopping[0]
    try:
        await hs.users.count_users()
    except RuntimeError:
        pass
    else:
        raise AssertionError("the database is still open after stop()")
