"""Groups spanning homeservers: joins, messages both ways, moderation, forged events."""
from __future__ import annotations

import pytest_twisted

from fedsupport import eventually, start_federating
from support import Client


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
    # Bob gets the group's history from before his join.
    assert "before bob" in await _bodies(bob, room_id)
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


async def _joined_pair(a, b):
    alice, bob = Client(a), Client(b)
    await alice.register("alice")
    await bob.register("bob")
    code, resp = await alice.post("/_matrix/client/v3/createRoom", {"preset": "public_chat"})
    room_id = resp["room_id"]
    code, resp = await bob.post(f"/_matrix/client/v3/join/{room_id}", {}, params={"server_name": a.server_name})
    assert code == 200, resp
    await eventually(lambda: _joined(a, room_id, bob.user_id))
    return alice, bob, room_id


@pytest_twisted.ensureDeferred
async def test_forged_events_change_nothing(servers):
    from signedjson.key import generate_signing_key

    from homeserver.core.events import Event
    from homeserver.core.signing import add_hashes_and_signatures

    a, b = servers
    alice, bob, room_id = await _joined_pair(a, b)
    room_b = await b.room_states.get(room_id)
    rv = room_b.room_version
    good = b.event_builder.build(room_b, "m.room.message", bob.user_id, {"msgtype": "m.text", "body": "x"})
    base = {k: v for k, v in good.get_pdu_json().items() if k not in ("hashes", "signatures", "unsigned")}

    # 1. signed by a key that is not B's
    forged = add_hashes_and_signatures({**base, "content": {"body": "forged"}}, rv, b.server_name,
                                       generate_signing_key(b.own_keys.key_id.split(":")[1]))
    # 2. content changed after signing: kept, but redacted
    tampered = add_hashes_and_signatures({**base, "content": {"body": "original"}}, rv, b.server_name, b.signing_key)
    tampered["content"] = {"body": "tampered"}
    # 3. Bob (power 0) makes himself admin: rejected
    pl = dict(room_b.get("m.room.power_levels").content)
    pl["users"] = {**pl.get("users", {}), bob.user_id: 100}
    coup = add_hashes_and_signatures({**base, "type": "m.room.power_levels", "state_key": "", "content": pl},
                                     rv, b.server_name, b.signing_key)
    ids = [Event(p, rv).event_id for p in (forged, tampered, coup)]
    resp = await b.federation_client.put_json(a.server_name, "/_matrix/federation/v1/send/forged1",
                                              {"origin": b.server_name, "pdus": [forged, tampered, coup], "edus": []})
    assert resp["pdus"][ids[0]].get("error")
    assert not resp["pdus"][ids[1]].get("error")
    assert resp["pdus"][ids[2]].get("error")
    stored = await a.event_store.get_events(ids, allow_rejected=True)
    assert ids[0] not in stored
    assert stored[ids[1]].event.content == {}
    assert stored[ids[2]].event.rejected
    room_a = await a.room_states.get(room_id)
    assert room_a.get("m.room.power_levels").event_id != ids[2]


@pytest_twisted.ensureDeferred
async def test_partition_fork_resolves_identically(servers):
    a, b = servers
    alice, bob, room_id = await _joined_pair(a, b)
    code, pl = await alice.get(f"/_matrix/client/v3/rooms/{room_id}/state/m.room.power_levels/")
    pl["users"][bob.user_id] = 50
    code, resp = await alice.put(f"/_matrix/client/v3/rooms/{room_id}/state/m.room.power_levels/", pl)
    await eventually(lambda: _state_is(b, room_id, resp["event_id"]))

    class Down:
        async def put_json(self, *args, **kw):
            raise ConnectionError("partitioned")

    real = a.federation_sender._client, b.federation_sender._client
    a.federation_sender._client = b.federation_sender._client = Down()
    code, _ = await alice.put(f"/_matrix/client/v3/rooms/{room_id}/state/m.room.name/", {"name": "from A"})
    assert code == 200
    code, _ = await bob.put(f"/_matrix/client/v3/rooms/{room_id}/state/m.room.name/", {"name": "from B"})
    assert code == 200
    await bob.put(f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/p1", {"msgtype": "m.text", "body": "b"})
    a.federation_sender._client, b.federation_sender._client = real
    a.federation_sender.wake(b.server_name)
    b.federation_sender.wake(a.server_name)

    async def converged():
        ra, rb = await a.room_states.get(room_id), await b.room_states.get(room_id)
        return ra.state_ids() == rb.state_ids() and len(ra.extremities) >= 1 and \
            sorted(ra.extremities) == sorted(rb.extremities)

    await eventually(converged)
    # Both write again on the merged DAG and stay in agreement.
    await alice.put(f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/a9", {"msgtype": "m.text", "body": "after"})
    await eventually(lambda: _has_body(bob, room_id, "after"))
    await eventually(converged)
    room = await a.room_states.get(room_id)
    assert room.get("m.room.name").content["name"] in ("from A", "from B")


@pytest_twisted.ensureDeferred
async def test_three_servers_and_a_server_down(tmp_path, db_url_for):
    from fedsupport import federation_config
    from support import start_homeserver

    a = await start_federating(tmp_path, db_url_for("a"), "a")
    b = await start_federating(tmp_path, db_url_for("b"), "b")
    c_config = federation_config(tmp_path, db_url_for("c"), "c")
    c = await start_homeserver(c_config)
    try:
        alice, bob, room_id = await _joined_pair(a, b)
        carol = Client(c)
        await carol.register("carol")
        code, resp = await carol.post(f"/_matrix/client/v3/join/{room_id}", {}, params={"server_name": a.server_name})
        assert code == 200, resp
        await eventually(lambda: _joined(b, room_id, carol.user_id))  # A relayed Carol's join to B
        await bob.put(f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/b1", {"msgtype": "m.text", "body": "b1"})
        await eventually(lambda: _has_body(carol, room_id, "b1"))  # B sends to C directly
        # C goes down; A and B keep writing; C comes back and catches up with nothing lost.
        await c.stop()
        for i in range(3):
            await alice.put(f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/d{i}",
                            {"msgtype": "m.text", "body": f"while down {i}"})
        await bob.put(f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/b2", {"msgtype": "m.text", "body": "b2"})
        c = await start_homeserver(c_config)
        carol = Client(c)
        code, resp = await carol.post("/_matrix/client/v3/login", {
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "carol"},
            "password": "correct horse battery"})
        assert code == 200, resp
        carol.token = resp["access_token"]
        for hs in (a, b):  # C contacts them (any authenticated request wakes their queues)
            try:
                await c.federation_client.get_json(hs.server_name, "/_matrix/federation/v1/event/$none")
            except Exception:
                pass

        async def all_there():
            bodies = await _bodies(carol, room_id)
            return all(f"while down {i}" in bodies for i in range(3)) and "b2" in bodies

        await eventually(all_there)
        await eventually(lambda: _same_state(a, c, room_id))
    finally:
        for hs in (a, b, c):
            await hs.stop()


async def _same_state(x, y, room_id):
    rx, ry = await x.room_states.get(room_id), await y.room_states.get(room_id)
    return rx.state_ids() == ry.state_ids()


@pytest_twisted.ensureDeferred
async def test_invite_join_ban_across_servers(servers):
    a, b = servers
    alice, bob = Client(a), Client(b)
    await alice.register("alice")
    await bob.register("bob")
    code, resp = await alice.post("/_matrix/client/v3/createRoom", {"preset": "private_chat"})
    room_id = resp["room_id"]
    # Without an invite, Bob can't join an invite-only group.
    code, resp = await bob.post(f"/_matrix/client/v3/join/{room_id}", {}, params={"server_name": a.server_name})
    assert code == 403, resp
    code, resp = await alice.post(f"/_matrix/client/v3/rooms/{room_id}/invite", {"user_id": bob.user_id})
    assert code == 200, resp
    m = await b.state_store.get_membership(room_id, bob.user_id)
    assert m is not None and m.membership == "invite"
    code, resp = await bob.post(f"/_matrix/client/v3/join/{room_id}", {}, params={"server_name": a.server_name})
    assert code == 200, resp
    await eventually(lambda: _joined(a, room_id, bob.user_id))
    code, resp = await alice.post(f"/_matrix/client/v3/rooms/{room_id}/ban", {"user_id": bob.user_id})
    assert code == 200, resp

    async def banned():
        room = await b.room_states.get(room_id)
        return room.membership(bob.user_id) == "ban"

    await eventually(banned)
    code, resp = await bob.put(f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/x", {"body": "x", "msgtype": "m.text"})
    assert code == 403


@pytest_twisted.ensureDeferred
async def test_remote_profile_and_directory_queries(servers):
    a, b = servers
    alice, bob = Client(a), Client(b)
    await alice.register("alice")
    await bob.register("bob")
    await alice.put(f"/_matrix/client/v3/profile/{alice.user_id}/displayname", {"displayname": "Alice A"})
    code, resp = await bob.get(f"/_matrix/client/v3/profile/{alice.user_id}")
    assert code == 200 and resp.get("displayname") == "Alice A", resp
    code, resp = await bob.get(f"/_matrix/client/v3/profile/@nobody:{a.server_name}")
    assert code == 404
    code, resp = await alice.post("/_matrix/client/v3/createRoom", {"preset": "public_chat", "room_alias_name": "grp"})
    room_id = resp["room_id"]
    alias = f"#grp:{a.server_name}"
    from urllib.parse import quote

    code, resp = await bob.post(f"/_matrix/client/v3/join/{quote(alias)}", {})
    assert code == 200 and resp["room_id"] == room_id, resp
