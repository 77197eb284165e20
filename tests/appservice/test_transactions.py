"""Pushing events to a real application service on loopback: interest, order, retries, restarts."""
from __future__ import annotations

from urllib.parse import quote

import pytest_twisted

import support
from fake_appservice import HS_TOKEN

AS_LOGIN = "m.login.application_service"
C = "/_matrix/client/v3"


async def puppet(bridge, localpart):
    status, body = await bridge.post(C + "/register", {"type": AS_LOGIN, "username": localpart,
                                                       "inhibit_login": True})
    assert status == 200, body
    return body["user_id"]


async def send(client, room_id, text, txn, **kw):
    status, body = await client.put(f"{C}/rooms/{quote(room_id)}/send/m.room.message/{txn}",
                                    {"msgtype": "m.text", "body": text}, **kw)
    assert status == 200, body
    return body["event_id"]


async def room_with_puppet(hs, bridge, human_name="alice"):
    human = support.Client(hs)
    await human.register(human_name)
    alice_wx = await puppet(bridge, "wechat_alice")
    status, body = await human.post(C + "/createRoom", {"preset": "private_chat"})
    room_id = body["room_id"]
    status, body = await human.post(f"{C}/rooms/{quote(room_id)}/invite", {"user_id": alice_wx})
    assert status == 200, body
    status, body = await bridge.post(f"{C}/join/{quote(room_id)}", {}, params={"user_id": alice_wx})
    assert status == 200, body
    return human, alice_wx, room_id


def messages(fake_as):
    return [e["content"]["body"] for e in fake_as.events() if e["type"] == "m.room.message"]


@pytest_twisted.ensureDeferred
async def test_events_of_interest_are_pushed(as_hs, bridge, fake_as):
    human, alice_wx, room_id = await room_with_puppet(as_hs, bridge)
    other = support.Client(as_hs)
    await other.register("bob")
    status, body = await other.post(C + "/createRoom", {})
    await send(other, body["room_id"], "not for the bridge", "t0")
    await send(human, room_id, "hello bridge", "t1")
    await fake_as.wait_for(lambda: "hello bridge" in messages(fake_as))
    events = fake_as.events()
    kinds = [(e["type"], e.get("state_key")) for e in events if e["room_id"] == room_id]
    assert ("m.room.member", alice_wx) in kinds  # the invite and the join of the puppet
    assert all(e["room_id"] == room_id for e in events if e["type"] == "m.room.message")
    assert "not for the bridge" not in messages(fake_as)
    for method, path, auth in fake_as.requests:
        assert auth == f"Bearer {HS_TOKEN}" and "access_token" not in path
    # client format with room_id and unsigned
    msg = next(e for e in events if e["type"] == "m.room.message")
    assert msg["sender"] == "@alice:test.local" and msg["room_id"] == room_id and "event_id" in msg


@pytest_twisted.ensureDeferred
async def test_masquerade_with_timestamp(as_hs, bridge, fake_as):
    human, alice_wx, room_id = await room_with_puppet(as_hs, bridge)
    await send(bridge, room_id, "from wechat", "w1", params={"user_id": alice_wx, "ts": "1234567890"})
    await fake_as.wait_for(lambda: "from wechat" in messages(fake_as))
    msg = next(e for e in fake_as.events() if e["type"] == "m.room.message")
    assert msg["sender"] == alice_wx and msg["origin_server_ts"] == 1234567890
    status, body = await bridge.put(f"{C}/rooms/{quote(room_id)}/send/m.room.message/w2", {"body": "x"},
                                    params={"user_id": alice_wx, "ts": "soon"})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    # a human's ts is ignored
    await send(human, room_id, "human", "h1", params={"ts": "5"})
    await fake_as.wait_for(lambda: "human" in messages(fake_as))
    human_msg = [e for e in fake_as.events() if e.get("content", {}).get("body") == "human"][0]
    assert human_msg["origin_server_ts"] != 5


@pytest_twisted.ensureDeferred
async def test_retry_after_service_was_down(as_hs, bridge, fake_as):
    human, alice_wx, room_id = await room_with_puppet(as_hs, bridge)
    await fake_as.wait_for(lambda: any(e["type"] == "m.room.member" and e["content"]["membership"] == "join"
                                       and e["state_key"] == alice_wx for e in fake_as.events()))
    scheduler = as_hs.appservice_scheduler
    scheduler.backoff_base_s = 0.01
    scheduler.backoff_max_s = 0.05
    fake_as.down = True
    before = len(fake_as.requests)
    for i in range(5):
        await send(human, room_id, f"m{i}", f"d{i}")
    await fake_as.wait_for(lambda: len(fake_as.requests) >= before + 2)  # at least one retry happened
    fake_as.down = False
    await fake_as.wait_for(lambda: messages(fake_as) == [f"m{i}" for i in range(5)])
    assert fake_as.max_in_flight == 1
    txn_ids = [int(t) for t, _ in fake_as.transactions]
    assert txn_ids == sorted(txn_ids) and len(set(txn_ids)) == len(txn_ids)


@pytest_twisted.ensureDeferred
async def test_queue_survives_a_restart(as_config, bridge, fake_as, as_hs):
    human, alice_wx, room_id = await room_with_puppet(as_hs, bridge)
    await fake_as.wait_for(lambda: any(e.get("state_key") == alice_wx and e["content"].get("membership") == "join"
                                       for e in fake_as.events()))
    fake_as.down = True
    attempted = len(fake_as.requests)
    for i in range(3):
        await send(human, room_id, f"r{i}", f"r{i}")
    await fake_as.wait_for(lambda: len(fake_as.requests) > attempted)  # a transaction is stored and in flight
    await as_hs.stop()
    acked = len(fake_as.transactions)
    tried = [p for m, p, _ in fake_as.requests if m == "PUT"][-1]

    fake_as.down = False
    hs2 = await support.start_homeserver(as_config)
    try:
        human2 = support.Client(hs2)
        human2.token = human.token
        await send(human2, room_id, "after restart", "r9")
        await fake_as.wait_for(lambda: messages(fake_as) == ["r0", "r1", "r2", "after restart"])
        txn_ids = [int(t) for t, _ in fake_as.transactions]
        assert txn_ids == sorted(txn_ids) and len(fake_as.transactions) > acked
        # the transaction in flight at shutdown was resent with the same ID and the same events
        assert fake_as.transactions[acked][0] == tried.rsplit("/", 1)[1]
    finally:
        await hs2.stop()


@pytest_twisted.ensureDeferred
async def test_alias_query_creates_room_on_demand(as_hs, bridge, fake_as):
    async def create(alias: str) -> bool:
        name = alias[1:].split(":")[0]
        status, body = await bridge.post(C + "/createRoom", {"room_alias_name": name, "preset": "public_chat"})
        return status == 200
    fake_as.alias_query = create
    human = support.Client(as_hs)
    await human.register("carol")
    status, body = await human.post(f"{C}/join/{quote('#wechat_group1:test.local')}", {})
    assert status == 200, body
    assert ("GET", "/_matrix/app/v1/rooms/%23wechat_group1%3Atest.local", f"Bearer {HS_TOKEN}") in fake_as.requests
    status, body = await human.get(f"{C}/directory/room/{quote('#wechat_group1:test.local')}")
    assert status == 200 and body["room_id"]
    fake_as.alias_query = None
    status, body = await human.get(f"{C}/directory/room/{quote('#wechat_nothing:test.local')}")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = await human.get(f"{C}/directory/room/{quote('#elsewhere:test.local')}")
    assert status == 404
    assert not any("elsewhere" in p for _, p, _ in fake_as.requests)  # outside every namespace: not asked


@pytest_twisted.ensureDeferred
async def test_exclusive_alias_namespace(as_hs, bridge):
    human = support.Client(as_hs)
    await human.register("dave")
    status, body = await human.post(C + "/createRoom", {"room_alias_name": "wechat_mine"})
    assert (status, body["errcode"]) == (400, "M_EXCLUSIVE")
    status, body = await human.post(C + "/createRoom", {})
    room_id = body["room_id"]
    status, body = await human.put(f"{C}/directory/room/{quote('#wechat_x:test.local')}", {"room_id": room_id})
    assert (status, body["errcode"]) == (400, "M_EXCLUSIVE")
    status, body = await human.put(f"{C}/directory/room/{quote('#dave:test.local')}", {"room_id": room_id})
    assert status == 200
    status, body = await bridge.post(C + "/createRoom", {"room_alias_name": "outside"})
    assert (status, body["errcode"]) == (400, "M_EXCLUSIVE")
    status, body = await bridge.post(C + "/createRoom", {"room_alias_name": "wechat_ok"})
    assert status == 200, body


@pytest_twisted.ensureDeferred
async def test_user_query_on_invite(as_hs, bridge, fake_as):
    async def create(user_id: str) -> bool:
        await puppet(bridge, user_id[1:].split(":")[0])
        return True
    fake_as.user_query = create
    human = support.Client(as_hs)
    await human.register("erin")
    status, body = await human.post(C + "/createRoom", {})
    room_id = body["room_id"]
    status, body = await human.post(f"{C}/rooms/{quote(room_id)}/invite", {"user_id": "@wechat_new:test.local"})
    assert status == 200, body
    status, who = await bridge.get(C + "/account/whoami", params={"user_id": "@wechat_new:test.local"})
    assert who["user_id"] == "@wechat_new:test.local"
    assert any(p == "/_matrix/app/v1/users/%40wechat_new%3Atest.local" for _, p, _ in fake_as.requests)


@pytest_twisted.ensureDeferred
async def test_user_query_on_profile_lookup(as_hs, bridge, fake_as):
    async def create(user_id: str) -> bool:
        await puppet(bridge, user_id[1:].split(":")[0])
        return True
    fake_as.user_query = create
    human = support.Client(as_hs)
    await human.register("gina")
    status, body = await human.get(f"{C}/profile/{quote('@wechat_prof:test.local')}")
    assert status == 200 and body == {"displayname": "wechat_prof"}
    fake_as.user_query = None
    status, body = await human.get(f"{C}/profile/{quote('@wechat_ghost:test.local')}")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")


def ephemeral(fake_as):
    return [e for _, body in fake_as.transactions for e in body.get("ephemeral", [])]


@pytest_twisted.ensureDeferred
async def test_typing_receipts_and_presence_reach_the_service(as_hs, bridge, fake_as):
    """The sync services' hooks are wired to the scheduler in server.py (receive_ephemeral is on)."""
    human, alice_wx, room_id = await room_with_puppet(as_hs, bridge)
    event_id = await send(human, room_id, "read me", "r1")
    status, _ = await human.put(f"{C}/rooms/{quote(room_id)}/typing/{quote(human.user_id)}",
                                {"typing": True, "timeout": 10000})
    assert status == 200
    await fake_as.wait_for(lambda: any(e["type"] == "m.typing" for e in ephemeral(fake_as)))
    typing = next(e for e in ephemeral(fake_as) if e["type"] == "m.typing")
    assert typing["room_id"] == room_id and typing["content"]["user_ids"] == [human.user_id]
    status, _ = await human.post(f"{C}/rooms/{quote(room_id)}/receipt/m.read/{quote(event_id)}", {})
    assert status == 200
    await fake_as.wait_for(lambda: any(e["type"] == "m.receipt" for e in ephemeral(fake_as)))
    receipt = next(e for e in ephemeral(fake_as) if e["type"] == "m.receipt")
    assert human.user_id in receipt["content"][event_id]["m.read"]
    status, _ = await human.put(f"{C}/presence/{quote(human.user_id)}/status", {"presence": "unavailable"})
    assert status == 200
    await fake_as.wait_for(lambda: any(e["type"] == "m.presence" for e in ephemeral(fake_as)))
    presence = [e for e in ephemeral(fake_as) if e["type"] == "m.presence"]
    assert any(e["sender"] == human.user_id and e["content"]["presence"] == "unavailable" for e in presence)
