"""Restricted rooms across servers: the resident server checks the allow conditions and signs the join."""
from __future__ import annotations

import pytest
import pytest_twisted

from federation.transport.client import HttpResponseError, encode_path

from fedsupport import eventually
from support import Client

V3 = "/_matrix/client/v3"


def restricted(allowed_room: str) -> dict:
    return {"type": "m.room.join_rules", "state_key": "",
            "content": {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": allowed_room}]}}


async def create(client: Client, **body) -> str:
    code, resp = await client.post(f"{V3}/createRoom", body)
    assert code == 200, resp
    return resp["room_id"]


async def joined(hs, room_id: str, user_id: str) -> bool:
    room = await hs.room_states.get(room_id)
    return room is not None and user_id in room.joined


@pytest_twisted.ensureDeferred
async def test_restricted_join_over_federation(servers):
    a, b = servers
    alice = Client(a)
    await alice.register("alice")
    bob, carol = Client(b), Client(b)
    await bob.register("bob")
    await carol.register("carol")
    space = await create(alice, preset="public_chat")
    room = await create(alice, preset="private_chat", initial_state=[restricted(space)])
    code, resp = await bob.post(f"{V3}/join/{space}", {}, params={"server_name": a.server_name})
    assert code == 200, resp
    await eventually(lambda: joined(a, space, bob.user_id))

    # Bob is in the allowed room, as A sees it: A names Alice as the authoriser and signs the join.
    code, resp = await bob.post(f"{V3}/join/{room}", {}, params={"server_name": a.server_name})
    assert code == 200, resp
    await eventually(lambda: joined(a, room, bob.user_id))
    for hs in (a, b):
        member = (await hs.room_states.get(room)).get("m.room.member", bob.user_id)
        assert member.content["join_authorised_via_users_server"] == alice.user_id
        assert {a.server_name, b.server_name} <= set(member.pdu["signatures"])
    code, resp = await bob.put(f"{V3}/rooms/{room}/send/m.room.message/1", {"msgtype": "m.text", "body": "in"})
    assert code == 200, resp

    async def alice_sees() -> bool:
        code, resp = await alice.get(f"{V3}/rooms/{room}/messages", params={"dir": "b", "limit": "5"})
        return any(e["content"].get("body") == "in" for e in resp["chunk"])

    await eventually(alice_sees)

    # Carol is in no allowed room: A refuses, and the reason reaches her client.
    code, err = await carol.post(f"{V3}/join/{room}", {}, params={"server_name": a.server_name})
    assert code == 403 and err["errcode"] == "M_FORBIDDEN" and "member of a room" in err["error"], err
    assert not await joined(a, room, carol.user_id)

    # A room restricted to a room A is not in: A cannot check, and says so.
    elsewhere = await create(carol, preset="public_chat")
    other = await create(alice, preset="private_chat", initial_state=[restricted(elsewhere)])
    code, err = await carol.post(f"{V3}/join/{other}", {}, params={"server_name": a.server_name})
    assert code == 400 and err["errcode"] == "M_UNABLE_TO_AUTHORISE_JOIN", err


@pytest_twisted.ensureDeferred
async def test_send_join_with_a_forged_authoriser_is_refused(servers):
    """A joining server cannot name an authoriser without the resident server's checks."""
    a, b = servers
    alice = Client(a)
    await alice.register("alice")
    carol = Client(b)
    await carol.register("carol")
    space = await create(alice, preset="public_chat")
    room = await create(alice, preset="private_chat", initial_state=[restricted(space)])
    # A join template as A would make for an allowed user, filled in and signed by B.
    room_a = await a.room_states.get(room)
    forged = a.event_builder.build(room_a, "m.room.member", carol.user_id,
                                   {"membership": "join", "join_authorised_via_users_server": alice.user_id},
                                   carol.user_id)
    template = {k: v for k, v in forged.get_pdu_json().items() if k not in ("hashes", "signatures", "unsigned")}
    event = b.membership.remote._fill(template, room_a.room_version, {"membership": "join"})
    assert event.content["join_authorised_via_users_server"] == alice.user_id
    with pytest.raises(HttpResponseError) as refused:
        await b.federation_client.put_json(
            a.server_name, encode_path("/_matrix/federation/v2/send_join/%s/%s", room, event.event_id),
            {k: v for k, v in event.get_pdu_json().items() if k != "unsigned"})
    assert refused.value.code == 403 and refused.value.body["errcode"] == "M_FORBIDDEN"
    assert "member of a room" in refused.value.body["error"]
    assert not await joined(a, room, carol.user_id)
