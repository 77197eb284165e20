"""History visibility on the serving side: /event, /backfill and /get_missing_events as another server sees them."""
from __future__ import annotations

from typing import Any

import pytest_twisted

from federation.backfill import check_pdus
from federation.transport.client import HttpResponseError, encode_path
from homeserver.core.events import check_content_hash, redact_pdu
from homeserver.rooms import visibility
from support import Client


async def room_with(a: Any, alice: Client, hv: str, preset: str = "public_chat") -> str:
    code, resp = await alice.post("/_matrix/client/v3/createRoom", {
        "preset": preset, "name": "G",
        "initial_state": [{"type": "m.room.history_visibility", "state_key": "",
                           "content": {"history_visibility": hv}}]})
    assert code == 200, resp
    return resp["room_id"]


async def say(a: Any, alice: Client, room_id: str, body: str) -> str:
    return await a.event_sender.send(alice.user_id, room_id, "m.room.message", {"msgtype": "m.text", "body": body})


async def fetch_backfill(b: Any, a: Any, room_id: str, latest: str) -> list[dict[str, Any]]:
    resp = await b.federation_client.get_json(
        a.server_name, encode_path("/_matrix/federation/v1/backfill/%s", room_id), {"v": [latest], "limit": "100"})
    return resp["pdus"]


async def fetch_event(b: Any, a: Any, event_id: str) -> dict[str, Any]:
    resp = await b.federation_client.get_json(a.server_name,
                                              encode_path("/_matrix/federation/v1/event/%s", event_id))
    assert len(resp["pdus"]) == 1
    return resp["pdus"][0]


async def fetch_missing(b: Any, a: Any, room_id: str, latest: str) -> list[dict[str, Any]]:
    resp = await b.federation_client.post_json(
        a.server_name, encode_path("/_matrix/federation/v1/get_missing_events/%s", room_id),
        {"earliest_events": [], "latest_events": [latest], "limit": 50})
    return resp["events"]


async def verified(b: Any, a: Any, room_id: str, pdus: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The PDUs by event ID, after the checks received history goes through (format, signatures, hashes, auth)."""
    room = await a.room_states.get(room_id)
    rv = room.room_version
    checked = await check_pdus(pdus, rv, room_id, b.keyring.get_verify_key, b.federation_rooms)
    assert len(checked) == len(pdus) and not [e for e in checked.values() if e.rejected_reason]
    stored = {e.event_id: e for e in (await a.event_store.get_events(list(checked))).values()}
    out = {}
    for eid, ev in checked.items():
        pdu = ev.get_pdu_json()
        pdu.pop("unsigned", None)
        out[eid] = pdu
        original = stored[eid].event.get_pdu_json()
        original.pop("unsigned", None)
        # Either the event as stored on A or its redacted form, under the same ID, hashes and signatures.
        assert pdu in (original, redact_pdu(original, rv)), eid
        assert pdu["hashes"] == original["hashes"] and pdu["signatures"] == original["signatures"]
    return out


def is_redacted(pdu: dict[str, Any]) -> bool:
    return pdu["content"] == {} and not check_content_hash(pdu)


@pytest_twisted.ensureDeferred
async def test_joined_history_reaches_a_late_server_redacted(servers):
    a, b = servers
    alice, bob = Client(a), Client(b)
    await alice.register("alice")
    await bob.register("bob")
    room_id = await room_with(a, alice, "joined")
    before = [await say(a, alice, room_id, f"before {i}") for i in range(3)]
    code, resp = await bob.post(f"/_matrix/client/v3/join/{room_id}", {}, params={"server_name": a.server_name})
    assert code == 200, resp
    after = await say(a, alice, room_id, "after")

    for pdus in (await fetch_backfill(b, a, room_id, after), await fetch_missing(b, a, room_id, after)):
        got = await verified(b, a, room_id, pdus)
        assert all(e in got for e in before)
        for eid, pdu in got.items():
            if eid in before:
                assert is_redacted(pdu), pdu
            elif pdu["type"] == "m.room.message":
                assert pdu["content"]["body"] == "after"
            else:
                # State is never hidden: the room's name keeps its content.
                assert pdu.get("state_key") is not None and not is_redacted(pdu)
                if pdu["type"] == "m.room.name":
                    assert pdu["content"] == {"name": "G"}
    one = await fetch_event(b, a, before[0])
    assert is_redacted(one) and list(await verified(b, a, room_id, [one])) == [before[0]]
    assert (await fetch_event(b, a, after))["content"]["body"] == "after"

    # Once Bob's server has nobody left in the room, it reads nothing more of it.
    code, resp = await alice.post(f"/_matrix/client/v3/rooms/{room_id}/kick", {"user_id": bob.user_id})
    assert code == 200, resp
    for fetch in (fetch_event(b, a, after), fetch_backfill(b, a, room_id, after)):
        try:
            await fetch
            raise AssertionError("served to a server that left")
        except HttpResponseError as e:
            assert e.code == 403 and e.body["errcode"] == "M_FORBIDDEN"


@pytest_twisted.ensureDeferred
async def test_invited_and_shared_history_for_an_invited_server(servers, monkeypatch):
    """``invited``: from the invite on. ``shared``: all of it, once the server has a joined user."""
    # Memberships read from whole state groups, the path taken for servers with many users in a room.
    monkeypatch.setattr(visibility, "MAX_KEYS_PER_QUERY", 1)
    a, b = servers
    alice, bob = Client(a), Client(b)
    await alice.register("alice")
    await bob.register("bob")
    rooms = {hv: await room_with(a, alice, hv, "private_chat") for hv in ("invited", "shared")}
    early = {hv: await say(a, alice, r, "early") for hv, r in rooms.items()}
    for room_id in rooms.values():
        code, resp = await alice.post(f"/_matrix/client/v3/rooms/{room_id}/invite", {"user_id": bob.user_id})
        assert code == 200, resp
    late = {hv: await say(a, alice, r, "late") for hv, r in rooms.items()}

    # Invited only: "invited" history shows from the invite on; "shared" waits for a join (as for a user).
    for hv, room_id in rooms.items():
        got = await verified(b, a, room_id, await fetch_backfill(b, a, room_id, late[hv]))
        assert is_redacted(got[early[hv]])
        if hv == "invited":
            assert got[late[hv]]["content"]["body"] == "late"
        else:
            assert is_redacted(got[late[hv]])

    for room_id in rooms.values():
        code, resp = await bob.post(f"/_matrix/client/v3/join/{room_id}", {}, params={"server_name": a.server_name})
        assert code == 200, resp
    got = await verified(b, a, rooms["shared"], await fetch_backfill(b, a, rooms["shared"], late["shared"]))
    assert got[early["shared"]]["content"]["body"] == "early" and got[late["shared"]]["content"]["body"] == "late"
    # The visibility of "invited" history is fixed by the state at each event: the join reveals nothing earlier.
    assert is_redacted(await fetch_event(b, a, early["invited"]))


@pytest_twisted.ensureDeferred
async def test_a_server_never_in_the_room_is_refused(servers):
    a, b = servers
    alice = Client(a)
    await alice.register("alice")
    for hv in ("shared", "world_readable"):
        room_id = await room_with(a, alice, hv)
        msg = await say(a, alice, room_id, "hello")
        for fetch in (fetch_event(b, a, msg), fetch_backfill(b, a, room_id, msg), fetch_missing(b, a, room_id, msg)):
            try:
                await fetch
                raise AssertionError("served to a server with no member")
            except HttpResponseError as e:
                assert e.code == 403 and e.body["errcode"] == "M_FORBIDDEN", (hv, e.body)


@pytest_twisted.ensureDeferred
async def test_a_redacted_event_is_served_redacted(servers):
    a, b = servers
    alice, bob = Client(a), Client(b)
    await alice.register("alice")
    await bob.register("bob")
    room_id = await room_with(a, alice, "shared")
    code, resp = await bob.post(f"/_matrix/client/v3/join/{room_id}", {}, params={"server_name": a.server_name})
    assert code == 200, resp
    msg = await say(a, alice, room_id, "oops")
    code, resp = await alice.put(f"/_matrix/client/v3/rooms/{room_id}/redact/{msg}/t1", {})
    assert code == 200, resp
    one = await fetch_event(b, a, msg)
    assert is_redacted(one) and list(await verified(b, a, room_id, [one])) == [msg]
