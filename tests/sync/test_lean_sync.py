"""The lean /sync path (api/client/sync.py ``LeanSync``): long-polls parked without a coroutine.

Over real HTTP: what a parked poll answers (a message, a timeout, a change
only the ordinary build can answer), what it leaves behind (nothing), and
that it never answers for a token that was revoked. As plain functions: the
token cache it asks and the coarse timers it waits on.
"""
from __future__ import annotations

import pytest_twisted
from twisted.internet import defer, task

from homeserver.storage.users import TokenInfo, hash_token
from homeserver.users.auth import Authenticator
from homeserver.util.clock import Clock, CoarseTimers
from support import Client

V3 = "/_matrix/client/v3"


async def _tick():
    from twisted.internet import reactor
    d = defer.Deferred()
    reactor.callLater(0.01, d.callback, None)
    await d


async def _until(check):
    for _ in range(500):
        if check():
            return
        await _tick()
    raise AssertionError("condition not reached")


async def _group(hs):
    alice, bob = Client(hs), Client(hs)
    await alice.register("alice")
    await bob.register("bob")
    _s, room = await alice.post(f"{V3}/createRoom", {"preset": "public_chat"})
    room_id = room["room_id"]
    assert (await bob.post(f"{V3}/join/{room_id}"))[0] == 200
    return alice, bob, room_id


def _parked_poll(hs, client):
    """``client``'s parked lean long-poll (its notifier listener), if it has one."""
    from homeserver.sync.service import ParkedPoll
    found = [p for p in hs.notifier._listeners.get(client.user_id, ()) if isinstance(p, ParkedPoll)]
    return found[0] if found else None


def _poll(client, since, timeout="30000", **params):
    return defer.ensureDeferred(client.get(f"{V3}/sync", params={"since": since, "timeout": timeout, **params}))


async def _parked(hs, client, **params):
    """A long-poll from ``client``'s current token, once the lean path has parked it."""
    _s, first = await client.get(f"{V3}/sync", params=params)
    poll = _poll(client, first["next_batch"], **params)
    await _until(lambda: hs.sync.timeouts.pending() == 1)
    return poll


@pytest_twisted.ensureDeferred
async def test_parked_polls_get_a_message_and_leave_nothing_behind(hs):
    alice, bob, room_id = await _group(hs)
    since = {}
    for c in (alice, bob, alice):  # twice for alice: bob coming online is news to her
        _s, body = await c.get(f"{V3}/sync", params={"since": since[c.user_id]} if c.user_id in since else {})
        since[c.user_id] = body["next_batch"]
    polls = [_poll(c, since[c.user_id]) for c in (alice, bob)]
    # Both parked by the lean path: its timeouts are the only coarse timers.
    await _until(lambda: hs.sync.timeouts.pending() == 2)
    assert hs.site.in_flight == 2 and not any(p.called for p in polls)
    status, sent = await alice.put(f"{V3}/rooms/{room_id}/send/m.room.message/t1", {"msgtype": "m.text", "body": "hi"})
    assert status == 200
    answers = await defer.gatherResults(polls)
    for status, body in answers:
        assert status == 200
        timeline = body["rooms"]["join"][room_id]["timeline"]["events"]
        assert [e["event_id"] for e in timeline] == [sent["event_id"]]
    # alice sent it from this device: her body carries the transaction ID, bob's does not.
    assert answers[0][1]["rooms"]["join"][room_id]["timeline"]["events"][0]["unsigned"]["transaction_id"] == "t1"
    assert "transaction_id" not in answers[1][1]["rooms"]["join"][room_id]["timeline"]["events"][0]["unsigned"]
    assert hs.sync.timeouts.pending() == 0 and hs.site.in_flight == 0 and hs.notifier.listener_count() == 0
    # The next poll from the new token parks again; a late poll from the old one is answered at once.
    late = await bob.get(f"{V3}/sync", params={"since": since[bob.user_id], "timeout": "30000"})
    assert late == answers[1]


@pytest_twisted.ensureDeferred
async def test_timeout_answers_the_since_token(hs):
    alice, _bob, _room = await _group(hs)
    _s, first = await alice.get(f"{V3}/sync")
    status, body = await _poll(alice, first["next_batch"], timeout="150")
    assert (status, body) == (200, {"next_batch": first["next_batch"]})
    assert hs.sync.timeouts.pending() == 0 and hs.site.in_flight == 0
    assert hs.presence._syncing == {}  # the poll's presence mark was undone


@pytest_twisted.ensureDeferred
async def test_a_change_the_shared_body_cannot_carry_goes_to_the_router(hs):
    alice, bob, room_id = await _group(hs)
    poll = await _parked(hs, bob)
    # Typing is not a shared body: the poll is rebuilt the ordinary way, with the rest of its timeout.
    assert (await alice.put(f"{V3}/rooms/{room_id}/typing/{alice.user_id}", {"typing": True, "timeout": 5000}))[0] == 200
    status, body = await poll
    assert status == 200
    assert body["rooms"]["join"][room_id]["ephemeral"]["events"][0]["content"]["user_ids"] == [alice.user_id]
    assert hs.sync.timeouts.pending() == 0 and hs.site.in_flight == 0


@pytest_twisted.ensureDeferred
async def test_a_poll_woken_for_something_its_filter_drops_keeps_waiting(hs):
    alice, bob, room_id = await _group(hs)
    poll = await _parked(hs, bob, filter='{"room":{"ephemeral":{"types":[]}}}')
    parked = _parked_poll(hs, bob)
    await alice.put(f"{V3}/rooms/{room_id}/typing/{alice.user_id}", {"typing": True, "timeout": 5000})
    # Handed to the router, which finds nothing for this filter and parks it again, from the new position.
    await _until(lambda: _parked_poll(hs, bob) not in (None, parked))
    assert _parked_poll(hs, bob).req.since == hs.notifier.current_token()
    assert hs.sync.timeouts.pending() == 1 and hs.site.in_flight == 1 and not poll.called
    _s, sent = await alice.put(f"{V3}/rooms/{room_id}/send/m.room.message/t2", {"msgtype": "m.text", "body": "x"})
    status, body = await poll
    assert status == 200
    assert [e["event_id"] for e in body["rooms"]["join"][room_id]["timeline"]["events"]] == [sent["event_id"]]


@pytest_twisted.ensureDeferred
async def test_a_poll_behind_activity_elsewhere_is_parked_after_one_build(hs):
    """On a busy server the global token moves all the time: a poll whose build finds nothing is parked too."""
    alice, bob, room_id = await _group(hs)
    _s, first = await bob.get(f"{V3}/sync")
    carol = Client(hs)
    await carol.register("carol")
    _s, other = await carol.post(f"{V3}/createRoom", {})
    await carol.put(f"{V3}/rooms/{other['room_id']}/send/m.room.message/c1", {"msgtype": "m.text", "body": "elsewhere"})
    assert str(hs.notifier.current_token()) != first["next_batch"]
    poll = _poll(bob, first["next_batch"])
    await _until(lambda: _parked_poll(hs, bob) is not None)
    assert _parked_poll(hs, bob).req.since == hs.notifier.current_token() and hs.sync.timeouts.pending() == 1
    _s, sent = await alice.put(f"{V3}/rooms/{room_id}/send/m.room.message/t3", {"msgtype": "m.text", "body": "hi"})
    status, body = await poll
    assert status == 200 and body["next_batch"] == str(hs.notifier.current_token())
    assert [e["event_id"] for e in body["rooms"]["join"][room_id]["timeline"]["events"]] == [sent["event_id"]]
    assert other["room_id"] not in body["rooms"].get("join", {})
    assert hs.sync.timeouts.pending() == 0 and hs.site.in_flight == 0 and hs.notifier.listener_count() == 0


@pytest_twisted.ensureDeferred
async def test_disconnect_ends_a_parked_poll(hs):
    alice, _bob, _room = await _group(hs)
    poll = await _parked(hs, alice)
    poll.cancel()  # treq closes the connection
    poll.addErrback(lambda f: None)
    await _until(lambda: hs.site.in_flight == 0)
    assert hs.sync.timeouts.pending() == 0 and hs.notifier.listener_count() == 0
    assert hs.presence._syncing == {}


@pytest_twisted.ensureDeferred
async def test_a_revoked_token_is_refused_not_parked(hs):
    alice, bob, _room = await _group(hs)
    await bob.get(f"{V3}/sync")
    _s, first = await alice.get(f"{V3}/sync")
    assert hs.auth.cached(alice.token) is not None  # the lean path would take the next poll
    assert (await alice.post(f"{V3}/logout"))[0] == 200
    status, body = await alice.get(f"{V3}/sync", params={"since": first["next_batch"], "timeout": "30000"})
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    # Bad input the lean path declines gets the router's errors, for a cached token too.
    assert hs.auth.cached(bob.token) is not None
    status, body = await bob.get(f"{V3}/sync", params={"since": "garbage", "timeout": "30000"})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    for timeout in ("soon", "\u00b2"):  # a superscript two is a digit to str.isdigit, not to int()
        status, body = await bob.get(f"{V3}/sync", params={"since": first["next_batch"], "timeout": timeout})
        assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    status, body = await bob.get(f"{V3}/sync", params={"since": first["next_batch"], "filter": "\u00b2"})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")


class _Users:
    def __init__(self, infos):
        self.infos = infos

    async def get_token(self, token):
        return self.infos.get(token)


@pytest_twisted.ensureDeferred
async def test_cached_tokens_expire_are_revoked_and_leave_claimed_ones_alone():
    clock = task.Clock()
    clock.advance(1000)
    auth = Authenticator(_Users({"tok": TokenInfo("@a:hs", "DEV", 1_005_000), "as": TokenInfo("@b:hs", None, None)}),
                         Clock(clock))
    assert auth.cached("tok") is None  # not looked up yet: the full path decides
    await auth.lookup("tok")
    await auth.lookup("as")
    requester = auth.cached("tok")
    assert (requester.user_id, requester.device_id, requester.access_token) == ("@a:hs", "DEV", "tok")
    clock.advance(6)
    assert auth.cached("tok") is None  # expired
    auth.claimed.append(lambda token: token == "as")
    assert auth.cached("as") is None  # an application service's token: its resolver decides
    auth.claimed.clear()
    assert auth.cached("as") is not None
    auth.invalidate([hash_token("as")])
    assert auth.cached("as") is None


def test_coarse_timers_fire_never_early_and_at_most_a_slot_late():
    clock = task.Clock()
    clock.advance(10.03)
    timers = CoarseTimers(Clock(clock), slot_s=0.1)
    fired = []
    a = timers.add(1.0, "a", fired.append)
    timers.add(1.0, "b", fired.append)
    c = timers.add(0.5, "c", fired.append)
    timers.add(0.02, "d", fired.append)
    assert timers.pending() == 4
    timers.cancel(c, "c")
    clock.advance(0.0699)
    assert fired == []
    clock.advance(0.0002)  # 10.1: the end of d's slot
    assert fired == ["d"]
    clock.advance(0.9998)  # 11.0999: a and b are due at 11.03, their slot ends at 11.1
    assert fired == ["d"]
    clock.advance(0.0002)
    assert sorted(fired) == ["a", "b", "d"] and timers.pending() == 0
    timers.cancel(a, "a")  # cancelling what has fired is harmless


def test_an_answered_poll_is_freed_without_the_collector():
    """A parked poll holds no reference cycle: hundreds wait at any moment, answered ones must not pile up."""
    import gc
    from types import SimpleNamespace

    from homeserver.sync.builder import SyncRequest
    from homeserver.sync.filters import DEFAULT_FILTER
    from homeserver.sync.notifier import Notifier
    from homeserver.sync.service import ParkedPoll
    from homeserver.sync.tokens import StreamToken

    answers = []

    class Poll(ParkedPoll):
        __slots__ = ()

        def answer(self, body):
            answers.append(body)

    clock = Clock(task.Clock())
    presence = SimpleNamespace(sync_ended=lambda user_id: None)
    shared = SimpleNamespace(lookup=lambda *args: b"{}")
    service = SimpleNamespace(clock=clock, notifier=Notifier(clock), timeouts=CoarseTimers(clock),
                              presence=presence, builder=SimpleNamespace(shared=shared))
    gc.disable()
    try:
        for _ in range(3):
            poll = Poll(SyncRequest("@a:hs", "DEV", StreamToken(), DEFAULT_FILTER))
            poll.park(service, StreamToken(), 30.0)
            service.notifier.notify("events", 1, users=["@a:hs"])
            del poll
        assert answers == [b"{}"] * 3 and service.timeouts.pending() == 0
        assert not [o for o in gc.get_objects() if type(o) is Poll]
    finally:
        gc.enable()
