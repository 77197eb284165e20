"""Unread counts for many members, receipts, do-not-disturb, and GET /notifications."""
from __future__ import annotations

from urllib.parse import quote

import pytest_twisted

from homeserver.push.notifications import NotificationService
from push_support import FakeEvent, FakeRoomView, check
from room_helpers import V3, create, send, users

ROOM = "!group:test.local"


def use_rooms(hs, view):
    hs.notifications._rooms = view
    hs.pushers.rooms = view


@pytest_twisted.ensureDeferred
async def test_counts_for_500_members_and_receipts(hs):
    view = FakeRoomView()
    members = [f"@u{i}:test.local" for i in range(500)] + ["@remote:elsewhere.org"]
    view.add_room(ROOM, members, names={"@u3:test.local": "Third User"})
    use_rooms(hs, view)
    n = hs.notifications
    first = FakeEvent(ROOM, "@u0:test.local", "hello all")
    mention = FakeEvent(ROOM, "@u1:test.local", "hi", content={
        "msgtype": "m.text", "body": "hi", "m.mentions": {"user_ids": ["@u7:test.local"]}})
    legacy = FakeEvent(ROOM, "@remote:elsewhere.org", "ask third user")
    n.on_events([first, mention, legacy])
    assert n.counts("@u0:test.local", ROOM) == (2, 0)  # two from others after their own
    assert n.counts("@u1:test.local", ROOM) == (1, 0)
    assert n.counts("@u7:test.local", ROOM) == (3, 1)
    assert n.counts("@u3:test.local", ROOM) == (3, 1)
    assert n.counts("@u200:test.local", ROOM) == (3, 0)
    assert n.counts("@remote:elsewhere.org", ROOM) == (0, 0)
    assert sum(n.counts(m, ROOM)[0] for m in members) == 3 * 500 - 3  # sender skipped twice; u1 read "first" by sending
    # receipts reset the counts to what is after the receipted event
    n.on_receipt(ROOM, "@u7:test.local", mention.event_id)
    assert n.counts("@u7:test.local", ROOM) == (1, 0)
    n.on_receipt(ROOM, "@u7:test.local", first.event_id)  # an older receipt changes nothing
    assert n.counts("@u7:test.local", ROOM) == (1, 0)
    n.on_receipt(ROOM, "@u3:test.local", legacy.event_id)
    assert n.counts("@u3:test.local", ROOM) == (0, 0)
    assert n.totals("@u200:test.local") == (3, 0)
    # the same counts come back from the database (a restart)
    await n.flush()
    again = NotificationService(hs.push_store, hs.push_rules, view, hs.clock, n._is_local)
    await again.load()
    for user in ("@u0:test.local", "@u7:test.local", "@u3:test.local", "@u200:test.local"):
        assert again.counts(user, ROOM) == n.counts(user, ROOM), user
    await again.stop()


@pytest_twisted.ensureDeferred
async def test_do_not_disturb_room(hs, client_factory):
    alice = client_factory()
    await alice.register("alice")
    view = FakeRoomView()
    view.add_room(ROOM, ["@alice:test.local", "@bob:test.local", "@carol:test.local"],
                  names={"@alice:test.local": "Alice"})
    view.add_room("!other:test.local", ["@alice:test.local", "@bob:test.local", "@carol:test.local"])
    use_rooms(hs, view)
    status, _ = await alice.put(f"/_matrix/client/v3/pushrules/global/room/{quote(ROOM)}",
                                {"actions": ["dont_notify"]})
    assert status == 200
    n = hs.notifications
    n.on_events([FakeEvent(ROOM, "@bob:test.local", "lunch?"),
                 FakeEvent("!other:test.local", "@bob:test.local", "lunch?")])
    assert n.counts("@alice:test.local", ROOM) == (0, 0)  # silenced group
    assert n.counts("@carol:test.local", ROOM) == (1, 0)  # only for alice
    assert n.counts("@alice:test.local", "!other:test.local") == (1, 0)
    # a mention still notifies and highlights: override rules come before room rules
    n.on_events([FakeEvent(ROOM, "@bob:test.local", "x", content={
        "body": "x", "msgtype": "m.text", "m.mentions": {"user_ids": ["@alice:test.local"]}})])
    n.on_events([FakeEvent(ROOM, "@bob:test.local", "Alice, lunch?")])
    assert n.counts("@alice:test.local", ROOM) == (2, 2)
    # lifting do-not-disturb
    status, _ = await alice.request("DELETE", f"/_matrix/client/v3/pushrules/global/room/{quote(ROOM)}")
    assert status == 200
    n.on_events([FakeEvent(ROOM, "@bob:test.local", "back")])
    assert n.counts("@alice:test.local", ROOM) == (3, 2)


@pytest_twisted.ensureDeferred
async def test_get_notifications_from_real_room_sends(hs):
    alice, bob = await users(hs, "alice", "bob")
    room = await create(alice, preset="public_chat", name="Lunch")
    status, _ = await bob.post(f"{V3}/join/{room}")
    assert status == 200
    ids = []
    for i in range(5):
        status, resp = await send(bob, room, f"m{i}" if i != 2 else "hey alice")
        assert status == 200
        ids.append(resp["event_id"])
    assert hs.notifications.counts(alice.user_id, room) == (5, 1)
    assert hs.notifications.counts(bob.user_id, room) == (0, 0)
    hs.notifications.on_receipt(room, alice.user_id, ids[1])
    await _eventually(lambda: hs.notifications.counts(alice.user_id, room) == (3, 1))
    status, body = await alice.get(f"{V3}/notifications", params={"limit": "3"})
    assert status == 200, body
    check("/notifications", "get", 200, body)
    got = body["notifications"]
    assert [x["event"]["event_id"] for x in got] == list(reversed(ids[2:]))
    assert [x["read"] for x in got] == [False, False, False]
    assert got[0]["room_id"] == room and "room_id" not in got[0]["event"]
    assert got[0]["actions"] == ["notify", {"set_tweak": "sound", "value": "default"}]  # a 1:1 room
    assert got[2]["actions"] == ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]
    status, body = await alice.get(f"{V3}/notifications", params={"from": body["next_token"], "limit": "3"})
    assert [x["event"]["event_id"] for x in body["notifications"]] == [ids[1], ids[0]]
    assert [x["read"] for x in body["notifications"]] == [True, True]
    assert "next_token" not in body
    status, body = await alice.get(f"{V3}/notifications", params={"only": "highlight"})
    assert [x["event"]["event_id"] for x in body["notifications"]] == [ids[2]]
    status, body = await alice.get(f"{V3}/notifications", params={"from": "abc"})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    # alice answering reads everything before her message
    await send(alice, room, "coming")
    assert hs.notifications.counts(alice.user_id, room) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_do_not_disturb_with_real_rooms(hs):
    alice, bob, carol = await users(hs, "alice", "bob", "carol")
    room = await create(alice, preset="public_chat")
    for u in (bob, carol):
        await u.post(f"{V3}/join/{room}")
    status, _ = await alice.put(f"{V3}/pushrules/global/room/{quote(room)}", {"actions": []})
    assert status == 200
    await send(bob, room, "lunch?")
    assert hs.notifications.counts(alice.user_id, room) == (0, 0)
    assert hs.notifications.counts(carol.user_id, room) == (1, 0)
    await send(bob, room, content={"msgtype": "m.text", "body": "you?",
                                   "m.mentions": {"user_ids": [alice.user_id]}})
    assert hs.notifications.counts(alice.user_id, room) == (1, 1)
    # @room needs the notifications.room power (50): bob (0) has not, so the group policy refuses
    # his @room outright (docs/groups.md); alice (creator, 100) has, and it highlights for carol.
    status, body = await send(bob, room, content={"msgtype": "m.text", "body": "all", "m.mentions": {"room": True}})
    assert (status, body["errcode"]) == (403, "IM.QUN_ROOM_MENTION_FORBIDDEN")
    assert hs.notifications.counts(carol.user_id, room) == (2, 0)
    await send(alice, room, content={"msgtype": "m.text", "body": "all", "m.mentions": {"room": True}})
    assert hs.notifications.counts(carol.user_id, room) == (3, 1)


async def _eventually(fn, timeout_s: float = 10.0):
    from twisted.internet import reactor, task
    waited = 0.0
    while not fn():
        assert waited < timeout_s, "condition not reached"
        await task.deferLater(reactor, 0.02, lambda: None)
        waited += 0.02


@pytest_twisted.ensureDeferred
async def test_invite_notifies_the_invitee_and_leaving_clears_counts(hs):
    alice, bob, carol = await users(hs, "alice", "bob", "carol")
    room = await create(alice, preset="private_chat")
    status, _ = await alice.post(f"{V3}/rooms/{room}/invite", {"user_id": bob.user_id})
    assert status == 200
    assert hs.notifications.counts(bob.user_id, room) == (1, 0)  # .m.rule.invite_for_me
    await bob.post(f"{V3}/join/{room}")
    assert hs.notifications.counts(bob.user_id, room) == (0, 0)  # joining is reading
    await alice.post(f"{V3}/rooms/{room}/invite", {"user_id": carol.user_id})
    await carol.post(f"{V3}/join/{room}")
    await send(alice, room, "one")
    await send(alice, room, "two")
    assert hs.notifications.counts(carol.user_id, room) == (2, 0)
    status, _ = await carol.post(f"{V3}/rooms/{room}/leave")
    assert status == 200
    assert hs.notifications.counts(carol.user_id, room) == (0, 0)
    assert hs.notifications.totals(carol.user_id) == (0, 0)
