"""/sync with rooms: timelines, state, invites, leaves, gaps, lazy loading, ephemeral, unread counts."""
from __future__ import annotations

import json

import pytest_twisted
from twisted.internet import defer

from room_helpers import create, send, users

V3 = "/_matrix/client/v3"


async def _sync(c, since=None, **params):
    if since:
        params["since"] = since
    status, body = await c.get(f"{V3}/sync", params=params)
    assert status == 200, body
    return body


async def _tick():
    from twisted.internet import reactor
    d = defer.Deferred()
    reactor.callLater(0.01, d.callback, None)
    await d


def _types(room):
    return [e["type"] for e in room["timeline"]["events"]]


@pytest_twisted.ensureDeferred
async def test_initial_and_incremental_sync_with_invite_and_leave(hs):
    alice, bob = await users(hs, "alice", "bob")
    room = await create(alice, name="Group")
    first = await _sync(alice)
    joined = first["rooms"]["join"][room]
    state_types = {e["type"] for e in joined["state"]["events"]} | set(_types(joined))
    assert {"m.room.create", "m.room.member", "m.room.power_levels", "m.room.name"} <= state_types
    assert "prev_batch" in joined["timeline"]
    b0 = await _sync(bob)
    # invite: bob sees it with stripped state
    assert (await alice.post(f"{V3}/rooms/{room}/invite", {"user_id": bob.user_id}))[0] == 200
    b1 = await _sync(bob, b0["next_batch"])
    invite = b1["rooms"]["invite"][room]["invite_state"]["events"]
    assert any(e["type"] == "m.room.member" and e["state_key"] == bob.user_id
               and e["content"]["membership"] == "invite" for e in invite)
    assert any(e["type"] == "m.room.name" for e in invite)
    # join: the room moves to join with full state
    assert (await bob.post(f"{V3}/rooms/{room}/join", {}))[0] == 200
    b2 = await _sync(bob, b1["next_batch"])
    assert room in b2["rooms"]["join"] and room not in b2["rooms"].get("invite", {})
    # a message reaches both incrementally, with transaction_id only for the sender's device
    status, sent = await send(alice, room, "hello", txn="tx1")
    a2 = await _sync(alice, first["next_batch"])
    mine = [e for e in a2["rooms"]["join"][room]["timeline"]["events"] if e["event_id"] == sent["event_id"]]
    assert mine[0]["unsigned"]["transaction_id"] == "tx1"
    b3 = await _sync(bob, b2["next_batch"])
    theirs = b3["rooms"]["join"][room]["timeline"]["events"]
    assert [e["content"].get("body") for e in theirs] == ["hello"]
    assert "transaction_id" not in theirs[0]["unsigned"]
    assert b3["rooms"]["join"][room]["unread_notifications"]["notification_count"] == 1
    # bob leaves: the room appears under leave, then never again
    assert (await bob.post(f"{V3}/rooms/{room}/leave", {}))[0] == 200
    b4 = await _sync(bob, b3["next_batch"])
    left = b4["rooms"]["leave"][room]
    assert left["timeline"]["events"][-1]["content"]["membership"] == "leave"
    await send(alice, room, "after")
    b5 = await _sync(bob, b4["next_batch"], timeout="0")
    assert room not in b5.get("rooms", {}).get("leave", {}) and room not in b5.get("rooms", {}).get("join", {})
    # include_leave shows it in an initial sync
    f = json.dumps({"room": {"include_leave": True}})
    assert room in (await _sync(bob, filter=f))["rooms"]["leave"]
    assert room not in (await _sync(bob)).get("rooms", {}).get("leave", {})


@pytest_twisted.ensureDeferred
async def test_long_poll_woken_by_send_only_for_members(hs):
    alice, bob, carol = await users(hs, "alice", "bob", "carol")
    room = await create(alice)
    assert (await alice.post(f"{V3}/rooms/{room}/invite", {"user_id": bob.user_id}))[0] == 200
    assert (await bob.post(f"{V3}/rooms/{room}/join", {}))[0] == 200
    b0, c0 = await _sync(bob), await _sync(carol)
    bob_poll = defer.ensureDeferred(_sync(bob, b0["next_batch"], timeout="30000"))
    carol_poll = defer.ensureDeferred(_sync(carol, c0["next_batch"], timeout="30000"))
    while hs.notifier.waiting_users() < 2:
        await _tick()
    await send(alice, room, "wake up")
    body = await bob_poll
    assert [e["content"]["body"] for e in body["rooms"]["join"][room]["timeline"]["events"]] == ["wake up"]
    assert not carol_poll.called  # carol is not in the room: still waiting
    assert hs.notifier.waiting_users() == 1
    carol_poll.cancel()
    carol_poll.addErrback(lambda f: None)


@pytest_twisted.ensureDeferred
async def test_limited_timeline_gap_state_and_messages_pagination(hs):
    alice, bob = await users(hs, "alice", "bob")
    room = await create(alice)
    assert (await alice.post(f"{V3}/rooms/{room}/invite", {"user_id": bob.user_id}))[0] == 200
    assert (await bob.post(f"{V3}/rooms/{room}/join", {}))[0] == 200
    f = json.dumps({"room": {"timeline": {"limit": 2}}})
    b0 = await _sync(bob, filter=f)
    # a state change inside the gap, then more messages than the limit
    assert (await alice.put(f"{V3}/rooms/{room}/state/m.room.topic/", {"topic": "gap topic"}))[0] == 200
    for i in range(5):
        await send(alice, room, f"m{i}")
    b1 = await _sync(bob, b0["next_batch"], filter=f)
    joined = b1["rooms"]["join"][room]
    assert joined["timeline"]["limited"] is True
    assert [e["content"]["body"] for e in joined["timeline"]["events"]] == ["m3", "m4"]
    assert any(e["type"] == "m.room.topic" for e in joined["state"]["events"])
    # prev_batch pages back through /messages to the gap
    status, page = await bob.get(f"{V3}/rooms/{room}/messages",
                                 params={"dir": "b", "from": joined["timeline"]["prev_batch"], "limit": "3"})
    assert status == 200, page
    assert [e["content"].get("body") for e in page["chunk"]] == ["m2", "m1", "m0"]


@pytest_twisted.ensureDeferred
async def test_lazy_loading_members_and_filters(hs):
    alice, bob, carol = await users(hs, "alice", "bob", "carol")
    room = await create(alice, preset="public_chat")
    for c in (bob, carol):
        assert (await c.post(f"{V3}/rooms/{room}/join", {}))[0] == 200
    await send(bob, room, "from bob")
    lazy = json.dumps({"room": {"timeline": {"limit": 1}, "state": {"lazy_load_members": True}}})
    c0 = await _sync(carol, filter=lazy)
    joined = c0["rooms"]["join"][room]
    members = {e["state_key"] for e in joined["state"]["events"] if e["type"] == "m.room.member"}
    assert bob.user_id in members and alice.user_id not in members
    assert joined["summary"]["m.joined_member_count"] == 3
    # incremental: alice speaks; her member event comes with it, bob's is not repeated
    await send(alice, room, "from alice")
    await send(bob, room, "bob again")
    lazy2 = json.dumps({"room": {"timeline": {"limit": 2}, "state": {"lazy_load_members": True}}})
    c1 = await _sync(carol, c0["next_batch"], filter=lazy2)
    members = {e["state_key"] for e in c1["rooms"]["join"][room]["state"]["events"] if e["type"] == "m.room.member"}
    assert alice.user_id in members and bob.user_id not in members
    # timeline type and sender filters, not_rooms and event_fields
    only = json.dumps({"room": {"timeline": {"types": ["m.room.message"], "senders": [bob.user_id]}},
                       "event_fields": ["type", "content.body"]})
    c2 = await _sync(carol, filter=only)
    events = c2["rooms"]["join"][room]["timeline"]["events"]
    assert events and all(e == {"type": "m.room.message", "content": {"body": e["content"]["body"]}} for e in events)
    none = await _sync(carol, filter=json.dumps({"room": {"not_rooms": [room]}}))
    assert room not in none.get("rooms", {}).get("join", {})
    fed = await _sync(carol, filter=json.dumps({"event_format": "federation", "room": {"timeline": {"limit": 1}}}))
    assert "hashes" in fed["rooms"]["join"][room]["timeline"]["events"][0]


@pytest_twisted.ensureDeferred
async def test_typing_receipts_and_unread_counts(hs):
    alice, bob = await users(hs, "alice", "bob")
    room = await create(alice)
    assert (await alice.post(f"{V3}/rooms/{room}/invite", {"user_id": bob.user_id}))[0] == 200
    assert (await bob.post(f"{V3}/rooms/{room}/join", {}))[0] == 200
    b0 = await _sync(bob)
    _s, e1 = await send(alice, room, "plain")
    _s, e2 = await send(alice, room, "hey", content={"msgtype": "m.text", "body": "hey bob",
                                                      "m.mentions": {"user_ids": [bob.user_id]}})
    _s, e3 = await send(alice, room, "legacy", content={"msgtype": "m.text", "body": "ping bob please"})
    await send(alice, room, "n", content={"msgtype": "m.notice", "body": "a notice"})
    b1 = await _sync(bob, b0["next_batch"])
    assert b1["rooms"]["join"][room]["unread_notifications"] == {"notification_count": 3, "highlight_count": 2}
    # typing, members only
    assert (await alice.put(f"{V3}/rooms/{room}/typing/{alice.user_id}", {"typing": True, "timeout": 20000}))[0] == 200
    b2 = await _sync(bob, b1["next_batch"])
    ephemeral = b2["rooms"]["join"][room]["ephemeral"]["events"]
    assert {"type": "m.typing", "content": {"user_ids": [alice.user_id]}} in ephemeral
    # receipts: public one visible to others, private one only to its owner; counts reset
    assert (await bob.post(f"{V3}/rooms/{room}/receipt/m.read/{e2['event_id']}", {}))[0] == 200
    assert (await bob.post(f"{V3}/rooms/{room}/receipt/m.read.private/{e3['event_id']}", {}))[0] == 200
    status, body = await bob.post(f"{V3}/rooms/{room}/receipt/m.read/$unknown", {})
    assert status == 404
    a_since = (await _sync(alice))["next_batch"]
    b3 = await _sync(bob, b2["next_batch"])
    receipts = [e for e in b3["rooms"]["join"][room]["ephemeral"]["events"] if e["type"] == "m.receipt"]
    assert receipts[0]["content"][e3["event_id"]]["m.read.private"][bob.user_id]["ts"] > 0
    assert b3["rooms"]["join"][room]["unread_notifications"]["notification_count"] == 0
    # threaded receipt and read markers
    assert (await bob.post(f"{V3}/rooms/{room}/receipt/m.read/{e1['event_id']}", {"thread_id": "main"}))[0] == 200
    assert (await bob.post(f"{V3}/rooms/{room}/read_markers",
                           {"m.fully_read": e3["event_id"], "m.read": e3["event_id"]}))[0] == 200
    a1 = await _sync(alice, a_since)
    content = {}
    for e in a1["rooms"]["join"][room]["ephemeral"]["events"]:
        if e["type"] == "m.receipt":
            content.update(e["content"])
    assert "m.read.private" not in json.dumps(content)
    assert content[e3["event_id"]]["m.read"][bob.user_id]
    assert content[e1["event_id"]]["m.read"][bob.user_id]["thread_id"] == "main"
    b4 = await _sync(bob, b3["next_batch"])
    ad = b4["rooms"]["join"][room]["account_data"]["events"]
    assert {"type": "m.fully_read", "content": {"event_id": e3["event_id"]}} in ad


@pytest_twisted.ensureDeferred
async def test_device_lists_changed_and_left(hs):
    alice, bob = await users(hs, "alice", "bob")
    room = await create(alice, preset="public_chat")
    a0 = await _sync(alice)
    assert (await bob.post(f"{V3}/rooms/{room}/join", {}))[0] == 200
    a1 = await _sync(alice, a0["next_batch"])
    assert bob.user_id in a1["device_lists"]["changed"]  # started sharing a room
    await hs.device_lists.on_device_change(bob.user_id)  # the accounts/keys hook
    a2 = await _sync(alice, a1["next_batch"])
    assert a2["device_lists"] == {"changed": [bob.user_id], "left": []}
    assert (await bob.post(f"{V3}/rooms/{room}/leave", {}))[0] == 200
    a3 = await _sync(alice, a2["next_batch"])
    assert a3["device_lists"]["left"] == [bob.user_id]
