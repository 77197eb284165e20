"""Unread counts in /sync from push rules: a group, do-not-disturb, receipts, m.push_rules."""
from __future__ import annotations

from urllib.parse import quote

import pytest_twisted

from room_helpers import V3, create, send, users


async def _sync(c, since=None, **params):
    if since:
        params["since"] = since
        params.setdefault("timeout", "0")
    status, body = await c.get(f"{V3}/sync", params=params)
    assert status == 200, body
    return body


def _counts(body, room):
    return body["rooms"]["join"][room]["unread_notifications"]


@pytest_twisted.ensureDeferred
async def test_group_counts_do_not_disturb_and_receipts_in_sync(hs):
    alice, bob, carol, dave = await users(hs, "alice", "bob", "carol", "dave")
    room = await create(alice, preset="public_chat", name="Team")
    for u in (bob, carol, dave):
        assert (await u.post(f"{V3}/join/{room}"))[0] == 200
    d0 = await _sync(dave)
    c0 = await _sync(carol)
    _, e1 = await send(bob, room, content={"msgtype": "m.text", "body": "standup?",
                                           "m.mentions": {"user_ids": [dave.user_id]}})
    _, e2 = await send(bob, room, "in five")
    _, e3 = await send(alice, room, "ok")
    await send(bob, room, content={"msgtype": "m.notice", "body": "bot says hi"})
    d1 = await _sync(dave, d0["next_batch"])
    assert _counts(d1, room) == {"notification_count": 3, "highlight_count": 1}
    c1 = await _sync(carol, c0["next_batch"])
    assert _counts(c1, room) == {"notification_count": 3, "highlight_count": 0}
    # carol silences the group: plain messages stop counting for her only
    status, _ = await carol.put(f"{V3}/pushrules/global/room/{quote(room)}", {"actions": []})
    assert status == 200
    await send(bob, room, "lunch")
    c2 = await _sync(carol, c1["next_batch"])
    assert _counts(c2, room) == {"notification_count": 3, "highlight_count": 0}
    # ... but a mention still counts and highlights
    await send(bob, room, content={"msgtype": "m.text", "body": "carol?",
                                   "m.mentions": {"user_ids": [carol.user_id]}})
    c3 = await _sync(carol, c2["next_batch"])
    assert _counts(c3, room) == {"notification_count": 4, "highlight_count": 1}
    # the rule change reached carol's clients as m.push_rules account data
    pushed = [e for e in c2["account_data"]["events"] if e["type"] == "m.push_rules"]
    assert pushed and pushed[-1]["content"]["global"]["room"][0]["rule_id"] == room
    # dave reads up to e2: only e3 and the two later messages are left, the mention is read
    assert (await dave.post(f"{V3}/rooms/{room}/receipt/m.read/{e2['event_id']}", {}))[0] == 200
    d2 = await _sync(dave, d1["next_batch"])
    assert _counts(d2, room) == {"notification_count": 3, "highlight_count": 0}
    # a private receipt further on wins over the public one behind it
    assert (await dave.post(f"{V3}/rooms/{room}/receipt/m.read.private/{e3['event_id']}", {}))[0] == 200
    d3 = await _sync(dave, d2["next_batch"])
    assert _counts(d3, room) == {"notification_count": 2, "highlight_count": 0}
    # and an older public receipt does not bring counts back
    assert (await dave.post(f"{V3}/rooms/{room}/receipt/m.read/{e1['event_id']}", {}))[0] == 200
    d4 = await _sync(dave)
    assert _counts(d4, room) == {"notification_count": 2, "highlight_count": 0}
    # GET /notifications agrees on what is read
    status, body = await dave.get(f"{V3}/notifications")
    assert status == 200
    read = {n["event"]["event_id"]: n["read"] for n in body["notifications"]}
    assert read[e1["event_id"]] is True and read[e3["event_id"]] is True
    assert sorted(read.values()).count(False) == 2


@pytest_twisted.ensureDeferred
async def test_count_is_in_the_same_sync_as_the_event(hs):
    alice, bob = await users(hs, "alice", "bob")
    room = await create(alice, preset="public_chat")
    await bob.post(f"{V3}/join/{room}")
    b0 = await _sync(bob)
    from twisted.internet import defer
    waiting = defer.ensureDeferred(bob.get(f"{V3}/sync", params={"since": b0["next_batch"], "timeout": "10000"}))
    await send(alice, room, "wake up")
    status, body = await waiting
    assert status == 200
    timeline = body["rooms"]["join"][room]["timeline"]["events"]
    assert [e["content"].get("body") for e in timeline] == ["wake up"]
    assert _counts(body, room)["notification_count"] == 1
