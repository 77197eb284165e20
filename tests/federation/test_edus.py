"""Typing, receipts, presence and to-device cross servers as EDUs, both ways."""
from __future__ import annotations

from urllib.parse import quote

import pytest_twisted

from fedsupport import eventually, start_federating
from support import Client

V3 = "/_matrix/client/v3"


@pytest_twisted.ensureDeferred
async def test_ephemeral_data_crosses_servers(servers):
    a, b = servers
    alice, bob = Client(a), Client(b)
    await alice.register("alice")
    await bob.register("bob")
    code, resp = await alice.post(f"{V3}/createRoom", {"preset": "public_chat"})
    room = resp["room_id"]
    code, resp = await bob.post(f"{V3}/join/{room}", {}, params={"server_name": a.server_name})
    assert code == 200, resp

    async def joined_on_a():
        return bob.user_id in a.member_index.joined_members(room)
    await eventually(joined_on_a)

    # typing on A is seen by B's sync services
    code, _ = await alice.put(f"{V3}/rooms/{room}/typing/{quote(alice.user_id)}", {"typing": True, "timeout": 20000})
    assert code == 200

    async def b_sees_typing():
        return b.typing.typing_users(room) == [alice.user_id]
    await eventually(b_sees_typing)

    # a receipt from B reaches A
    code, resp = await alice.put(f"{V3}/rooms/{room}/send/m.room.message/t1", {"msgtype": "m.text", "body": "hi"})
    event_id = resp["event_id"]

    async def b_has_event():
        return (await bob.get(f"{V3}/rooms/{room}/event/{event_id}"))[0] == 200
    await eventually(b_has_event)
    code, _ = await bob.post(f"{V3}/rooms/{room}/receipt/m.read/{quote(event_id)}", {})
    assert code == 200

    async def a_has_receipt():
        code, body = await alice.get(f"{V3}/sync", params={"timeout": "0"})
        ephemeral = body.get("rooms", {}).get("join", {}).get(room, {}).get("ephemeral", {}).get("events", [])
        return any(e["type"] == "m.receipt" and bob.user_id in e["content"].get(event_id, {}).get("m.read", {})
                   for e in ephemeral)
    await eventually(a_has_receipt)

    # presence from B reaches A (they share a room)
    code, _ = await bob.put(f"{V3}/presence/{quote(bob.user_id)}/status", {"presence": "unavailable"})
    assert code == 200

    async def a_sees_presence():
        code, body = await alice.get(f"{V3}/presence/{quote(bob.user_id)}/status")
        return code == 200 and body.get("presence") == "unavailable"
    await eventually(a_sees_presence)

    # to-device from A to B's device
    code, _ = await alice.put(f"{V3}/sendToDevice/m.test/txn1",
                              {"messages": {bob.user_id: {bob.device_id: {"hello": "b"}}}})
    assert code == 200

    async def b_gets_to_device():
        code, body = await bob.get(f"{V3}/sync", params={"timeout": "0"})
        return any(e["type"] == "m.test" and e["content"] == {"hello": "b"} and e["sender"] == alice.user_id
                   for e in body.get("to_device", {}).get("events", []))
    await eventually(b_gets_to_device)


@pytest_twisted.ensureDeferred
async def test_edus_for_users_of_other_servers_are_ignored(servers):
    a, _b = servers
    bridge = a.federation_edus
    await bridge.dispatch("b.example", "m.typing", {"room_id": "!r:a", "user_id": "@mallory:evil.example",
                                                     "typing": True})
    await bridge.dispatch("b.example", "m.presence", {"push": [{"user_id": "@x:evil.example", "presence": "online"}]})
    await bridge.dispatch("b.example", "m.receipt", "garbage")
    assert a.typing.typing_users("!r:a") == []


@pytest_twisted.ensureDeferred
async def test_member_cap_holds_for_remote_joins(tmp_path, db_url_for):
    from fedsupport import free_port
    from support import make_config, start_homeserver

    port = free_port()
    a = await start_homeserver(make_config(
        tmp_path / "capped", db_url_for("capped"), server_name=f"localhost:{port}",
        federation={"port": port, "bind": "127.0.0.1", "insecure": True}, groups={"max_members": 1}))
    b = await start_federating(tmp_path, db_url_for("b"), "b")
    try:
        alice, bob = Client(a), Client(b)
        await alice.register("alice")
        await bob.register("bob")
        code, resp = await alice.post(f"{V3}/createRoom", {"preset": "public_chat"})
        room = resp["room_id"]
        code, resp = await bob.post(f"{V3}/join/{room}", {}, params={"server_name": a.server_name})
        # The remote refusal reaches the joining user as a 403 naming the reason.
        assert code == 403 and "group is full" in resp["error"], resp
        assert bob.user_id not in a.member_index.joined_members(room)
    finally:
        await a.stop()
        await b.stop()
