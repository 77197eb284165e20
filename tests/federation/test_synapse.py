"""Interop with stock Synapse (from PyPI, in its own venv): joins and messages both ways.

Skips unless ``SYNAPSE_VENV`` names a venv with matrix-synapse installed
(``.ci/run`` sets it up).
"""
from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import threads

from fedsupport import eventually as fed_eventually, free_port, start_federating
from support import Client
from synapse_support import Synapse, synapse_python

pytestmark = pytest.mark.skipif(
    synapse_python() is None,
    reason="Synapse interop needs SYNAPSE_VENV pointing at a venv with matrix-synapse (.ci/run creates it)")


async def eventually(check, tries: int = 400):
    await fed_eventually(check, tries, interval_s=0.1)


async def bodies(client, room_id):
    code, resp = await client.get(f"/_matrix/client/v3/rooms/{room_id}/messages", params={"dir": "b", "limit": "50"})
    return [e["content"].get("body") for e in resp.get("chunk", []) if e.get("type") == "m.room.message"] \
        if code == 200 else []


@pytest_twisted.ensureDeferred
async def test_synapse_interop(tmp_path, database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("one engine is enough for the Synapse interop test")
    syn = Synapse(str(tmp_path / "synapse"), free_port(), free_port())
    await threads.deferToThread(syn.configure)
    await threads.deferToThread(syn.start)
    ours = await start_federating(tmp_path, database_url, "ours")
    try:
        alice = Client(ours)
        await alice.register("alice")
        sam = Client(syn.base)
        await sam.register("sam")

        # A Synapse user joins a group here.
        code, resp = await alice.post("/_matrix/client/v3/createRoom", {"preset": "public_chat", "name": "ours"})
        room_here = resp["room_id"]
        await alice.put(f"/_matrix/client/v3/rooms/{room_here}/send/m.room.message/1",
                        {"msgtype": "m.text", "body": "hi from qun"})
        code, resp = await sam.post(f"/_matrix/client/v3/join/{room_here}", {},
                                    params={"server_name": ours.server_name})
        assert code == 200, resp

        async def sam_joined_here():
            room = await ours.room_states.get(room_here)
            return sam.user_id in room.joined

        await eventually(sam_joined_here)
        await sam.put(f"/_matrix/client/v3/rooms/{room_here}/send/m.room.message/s1",
                      {"msgtype": "m.text", "body": "hi from synapse"})

        async def alice_sees():
            return "hi from synapse" in await bodies(alice, room_here)

        await eventually(alice_sees)
        await alice.put(f"/_matrix/client/v3/rooms/{room_here}/send/m.room.message/2",
                        {"msgtype": "m.text", "body": "second from qun"})

        async def sam_sees():
            return "second from qun" in await bodies(sam, room_here)

        await eventually(sam_sees)

        # A user here joins a group on Synapse.
        code, resp = await sam.post("/_matrix/client/v3/createRoom", {"preset": "public_chat", "name": "theirs"})
        room_there = resp["room_id"]
        code, resp = await alice.post(f"/_matrix/client/v3/join/{room_there}", {},
                                      params={"server_name": syn.server_name})
        assert code == 200, resp
        await alice.put(f"/_matrix/client/v3/rooms/{room_there}/send/m.room.message/3",
                        {"msgtype": "m.text", "body": "qun in synapse room"})

        async def sam_sees_there():
            return "qun in synapse room" in await bodies(sam, room_there)

        await eventually(sam_sees_there)
        await sam.put(f"/_matrix/client/v3/rooms/{room_there}/send/m.room.message/s2",
                      {"msgtype": "m.text", "body": "synapse in its room"})

        async def alice_sees_there():
            return "synapse in its room" in await bodies(alice, room_there)

        await eventually(alice_sees_there)

        # Restricted rooms both ways: the resident server checks the allow condition and signs the join.
        def restricted(allowed: str) -> dict:
            return {"type": "m.room.join_rules", "state_key": "", "content": {
                "join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": allowed}]}}

        code, resp = await alice.post("/_matrix/client/v3/createRoom", {
            "preset": "private_chat", "room_version": "10", "initial_state": [restricted(room_here)]})
        assert code == 200, resp
        restricted_here = resp["room_id"]
        code, resp = await sam.post(f"/_matrix/client/v3/join/{restricted_here}", {},
                                    params={"server_name": ours.server_name})
        assert code == 200, resp
        room = await ours.room_states.get(restricted_here)
        assert room.get("m.room.member", sam.user_id).content["join_authorised_via_users_server"] == alice.user_id
        code, resp = await sam.post("/_matrix/client/v3/createRoom", {
            "preset": "private_chat", "room_version": "10", "initial_state": [restricted(room_there)]})
        assert code == 200, resp
        restricted_there = resp["room_id"]
        code, resp = await alice.post(f"/_matrix/client/v3/join/{restricted_there}", {},
                                      params={"server_name": syn.server_name})
        assert code == 200, resp
        room = await ours.room_states.get(restricted_there)
        member = room.get("m.room.member", alice.user_id)
        assert member.content["join_authorised_via_users_server"] == sam.user_id
        assert syn.server_name in member.pdu["signatures"]
    finally:
        await ours.stop()
        await threads.deferToThread(syn.stop)
