"""Unread counts for many members, receipts, do-not-disturb, and GET /notifications."""
from __future__ import annotations

from urllib.parse import quote

import pytest_twisted

from homeserver.push.notifications import NotificationService
from push_support import FakeEvent, FakeRoomView, check

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
async def test_get_notifications(hs, client_factory):
    alice = client_factory()
    await alice.register("alice")
    view = FakeRoomView()
    view.add_room(ROOM, ["@alice:test.local", "@bob:test.local"])
    use_rooms(hs, view)
    events = [FakeEvent(ROOM, "@bob:test.local", f"m{i}" if i != 2 else "hey alice") for i in range(5)]
    hs.notifications.on_events(events)
    hs.notifications.on_receipt(ROOM, "@alice:test.local", events[1].event_id)
    status, body = await alice.get("/_matrix/client/v3/notifications", params={"limit": "3"})
    assert status == 200, body
    check("/notifications", "get", 200, body)
    got = body["notifications"]
    assert [x["event"]["event_id"] for x in got] == [e.event_id for e in reversed(events[2:])]
    assert [x["read"] for x in got] == [False, False, False]
    assert got[0]["room_id"] == ROOM  # a 1:1 room: .m.rule.room_one_to_one
    assert got[0]["actions"] == ["notify", {"set_tweak": "sound", "value": "default"}]
    assert got[2]["actions"] == ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]
    status, body = await alice.get("/_matrix/client/v3/notifications",
                                   params={"from": body["next_token"], "limit": "3"})
    assert [x["event"]["event_id"] for x in body["notifications"]] == [events[1].event_id, events[0].event_id]
    assert [x["read"] for x in body["notifications"]] == [True, True]
    assert "next_token" not in body
    status, body = await alice.get("/_matrix/client/v3/notifications", params={"only": "highlight"})
    assert [x["event"]["event_id"] for x in body["notifications"]] == [events[2].event_id]
    status, body = await alice.get("/_matrix/client/v3/notifications", params={"from": "abc"})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
