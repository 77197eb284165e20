"""Pure in-memory pieces of realtime delivery: notifier, typing expiry, streams, filters."""
from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer, task

from homeserver.api.errors import MatrixError
from homeserver.storage.streams import ChangeCache, StreamWriter
from homeserver.sync.filters import parse_filter
from homeserver.sync.membership import MembershipIndex
from homeserver.sync.notifier import Notifier
from homeserver.sync.tokens import StreamToken
from homeserver.sync.typing import TypingService
from homeserver.util.clock import Clock


def test_stream_writer_out_of_order_completion():
    w = StreamWriter(10)
    seen = []
    a, b = w.allocate(), w.allocate()
    w.finish(b, lambda: seen.append(b))
    assert w.current() == 10 and seen == []  # 11 still in flight: 12 is not visible yet
    w.finish(a, lambda: seen.append(a))
    assert w.current() == 12 and seen == [11, 12]


def test_change_cache():
    c = ChangeCache(5)
    assert c.has_changed("u", 4)  # before the cache knows anything
    assert not c.has_changed("u", 5)
    c.changed("u", 7)
    assert c.has_changed("u", 6) and not c.has_changed("u", 7)


def test_token_round_trip_and_errors():
    t = StreamToken(1, 2, 3, 4, 5, 6, 7)
    assert StreamToken.parse(str(t)) == t
    for bad in ("x1", "s1_2_3_4_5_6_7_8", "s1_2_3_4_5_6_x", "s-1_2_3_4_5_6_7"):
        with pytest.raises(MatrixError):
            StreamToken.parse(bad)


def _notifier():
    clock = task.Clock()
    membership = MembershipIndex()
    return clock, membership, Notifier(Clock(clock), membership.joined_members)


@pytest_twisted.ensureDeferred
async def test_notifier_wakes_only_room_members_and_times_out():
    clock, membership, notifier = _notifier()
    membership.seed("!r:x", ["@a:x", "@b:x"])
    la, lc = notifier.listen("@a:x"), notifier.listen("@c:x")
    da = defer.ensureDeferred(notifier.wait(la, 30))
    dc = defer.ensureDeferred(notifier.wait(lc, 30))
    notifier.notify("events", 5, rooms=["!r:x"])
    assert da.called and da.result is True
    assert not dc.called
    clock.advance(30)
    assert dc.called and dc.result is False
    assert notifier.listener_count() == 0
    assert notifier.current_token().events == 5


@pytest_twisted.ensureDeferred
async def test_notifier_cancel_cleans_up():
    clock, _m, notifier = _notifier()
    d = defer.ensureDeferred(notifier.wait(notifier.listen("@a:x"), 30))
    d.addErrback(lambda f: f.trap(defer.CancelledError))
    d.cancel()
    assert notifier.listener_count() == 0
    assert not clock.getDelayedCalls()


def test_typing_expires_with_clock():
    clock, membership, notifier = _notifier()
    membership.seed("!r:x", ["@a:x"])
    typing = TypingService(Clock(clock), membership, notifier)
    typing.set_typing("!r:x", "@a:x", True, 10_000)
    assert typing.typing_users("!r:x") == ["@a:x"]
    pos = typing.position()
    clock.advance(9.9)
    assert typing.typing_users("!r:x") == ["@a:x"]
    clock.advance(0.2)
    assert typing.typing_users("!r:x") == []
    assert typing.changed_since("!r:x", pos)
    with pytest.raises(MatrixError) as e:
        typing.set_typing("!r:x", "@b:x", True, 1000)
    assert e.value.status == 403


def test_filter_validation_and_matching():
    f = parse_filter({"room": {"timeline": {"limit": 5, "types": ["m.room.*"], "not_senders": ["@x:y"]},
                               "state": {"lazy_load_members": True}},
                      "event_fields": ["type", "content.body"]})
    assert f.timeline_limit == 5 and f.lazy_load_members
    assert f.timeline.allows({"type": "m.room.message", "sender": "@a:y"})
    assert not f.timeline.allows({"type": "m.reaction", "sender": "@a:y"})
    assert not f.timeline.allows({"type": "m.room.message", "sender": "@x:y"})
    assert f.project({"type": "t", "content": {"body": "b", "x": 1}, "sender": "s"}) == \
        {"type": "t", "content": {"body": "b"}}
    for bad in ({"room": {"timeline": {"limit": "5"}}}, {"event_format": "xml"}, {"room": []},
                {"presence": {"types": [1]}}, {"room": {"include_leave": "yes"}}):
        with pytest.raises(MatrixError) as e:
            parse_filter(bad)
        assert e.value.errcode == "M_BAD_JSON"


def test_recent_events_span_knows_when_a_range_is_one_rooms_messages():
    from homeserver.sync.events import SyncEvent
    from homeserver.sync.recent import RecentEvents

    def ev(pos, room="!a:x", state_key=None, sender="@s:x", txn=None):
        return SyncEvent(room_id=room, event_id=f"$e{pos}", type="m.room.message", state_key=state_key,
                         sender=sender, stream_ordering=pos, topological_ordering=pos, client={}, txn_key=txn)

    recent = RecentEvents(start_position=0)
    recent.add([ev(1), ev(2, sender="@t:x", txn=("@t:x", "D", "t1")), ev(3, room="!b:x"), ev(4, state_key=""),
                ev(6)])
    assert recent.span(0, 2) == ("!a:x", frozenset({"@t:x"}), frozenset({"@s:x", "@t:x"}))
    assert recent.span(1, 2) == ("!a:x", frozenset({"@t:x"}), frozenset({"@t:x"}))
    assert recent.span(1, 3) is None  # two rooms
    assert recent.span(3, 4) is None  # a state event
    assert recent.span(4, 6) is None  # position 5 never came through here
    assert recent.span(5, 6) == ("!a:x", frozenset(), frozenset({"@s:x"}))
    assert recent.span(6, 6) is None


def test_one_sync_event_per_stored_event_until_a_redaction():
    """The ring, the builder's reads and the redaction path share one SyncEvent per stored event;
    the StoredEvent keeps it, and it does not keep the StoredEvent (no reference cycle)."""
    import gc

    from core_builder import ALICE, RoomBuilder
    from homeserver.storage.events import StoredEvent
    from homeserver.sync.room_source import to_sync_event

    b = RoomBuilder("10")
    b.create_room()
    message = b.add("m.room.message", ALICE, {"body": "hi", "msgtype": "m.text"})
    stored = StoredEvent(message, 7, message.depth)
    sent = to_sync_event(stored, (ALICE, "DEV", "txn1"))
    assert to_sync_event(stored) is sent and stored.sync_cache is sent
    assert sent.for_viewer(ALICE, "DEV")["unsigned"]["transaction_id"] == "txn1"
    assert sent.for_viewer(ALICE, "OTHER") is sent.client
    assert sent.for_viewer(ALICE, "DEV", "federation")["content"] == {"body": "hi", "msgtype": "m.text"}
    assert stored not in gc.get_referents(sent)

    redaction = b.add("m.room.redaction", ALICE, {}, extra={"redacts": message.event_id})
    stored.redacted_because, stored.client_cache = redaction, None
    redacted = to_sync_event(stored)
    assert redacted is not sent and redacted.redacted and redacted.client["content"] == {}
    assert redacted.txn_key == (ALICE, "DEV", "txn1") and to_sync_event(stored) is redacted
