"""Groups spanning homeservers: joins, messages both ways, moderation, forged events."""
from __future__ import annotations

import pytest_twisted

from fedsupport import start_federating
from support import Client


async def eventually(check, tries: int = 200):
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    for _ in range(tries):
        result = await check()
        if result:
            return result
        await deferLater(reactor, 0.05, lambda: None)
    raise AssertionError("condition not met")


@pytest_twisted.async_yield_fixture
async def servers(tmp_path, db_url_for):
    started = []
    for name in ("a", "b"):
        started.append(await start_federating(tmp_path, db_url_for(name), name))
    yield started
    for hs in started:
        await hs.stop()


async def _bodies(client: Client, room_id: str) -> list[str]:
    code, resp = await client.get(f"/_matrix/client/v3/rooms/{room_id}/messages",
                                  params={"dir": "b", "limit": "50"})
    assert code == 200, resp
    return [e["content"].get("body") for e in resp["chunk"] if e["type"] == "m.room.message"]


@pytest_twisted.ensureDeferred
async def test_remote_join_and_messages_both_ways(servers):
    a, b = servers
    alice, bob = Client(a), Client(b)
    await alice.register("alice")
    await bob.register("bob")
    code, resp = await alice.post("/_matrix/client/v3/createRoom", {"preset": "public_chat", "name": "G"})
    assert code == 200, resp
    room_id = resp["room_id"]
    await alice.put(f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1",
                    {"msgtype": "m.text", "body": "before bob"})
    code, resp = await bob.post(f"/_matrix/client/v3/join/{room_id}", {}, params={"server_name": a.server_name})
    assert code == 200, resp
    # B has the room state; A sees Bob joined.
    room_b = await b.room_states.get(room_id)
    assert room_b is not None and {alice.user_id, bob.user_id} <= room_b.joined
    await eventually(lambda: _joined(a, room_id, bob.user_id))
    # Messages both ways.
    code, resp = await bob.put(f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/b1",
                               {"msgtype": "m.text", "body": "hello from b"})
    assert code == 200, resp
    await eventually(lambda: _has_body(alice, room_id, "hello from b"))
    await alice.put(f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/a2",
                    {"msgtype": "m.text", "body": "hello from a"})
    await eventually(lambda: _has_body(bob, room_id, "hello from a"))
    # A power-level change on A holds on B: Bob can no longer send messages.
    code, pl = await alice.get(f"/_matrix/client/v3/rooms/{room_id}/state/m.room.power_levels/")
    pl["events"] = {**pl.get("events", {}), "m.room.message": 50}
    code, resp = await alice.put(f"/_matrix/client/v3/rooms/{room_id}/state/m.room.power_levels/", pl)
    assert code == 200, resp
    await eventually(lambda: _state_is(b, room_id, resp["event_id"]))
    code, resp = await bob.put(f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/b2",
                               {"msgtype": "m.text", "body": "not allowed"})
    assert code == 403, resp
    # Kick across servers: Bob's server learns he is out.
    code, resp = await alice.post(f"/_matrix/client/v3/rooms/{room_id}/kick", {"user_id": bob.user_id})
    assert code == 200, resp
    await eventually(lambda: _not_joined(b, room_id, bob.user_id))


async def _joined(hs, room_id, user_id):
    room = await hs.room_states.get(room_id)
    return room is not None and user_id in room.joined


async def _not_joined(hs, room_id, user_id):
    room = await hs.room_states.get(room_id)
    return room is not None and user_id not in room.joined


async def _state_is(hs, room_id, event_id):
    room = await hs.room_states.get(room_id)
    pl = room.get("m.room.power_levels") if room else None
    return pl is not None and pl.event_id == event_id


async def _has_body(client, room_id, body):
    return body in await _bodies(client, room_id)
