"""Shared incremental bodies (homeserver/sync/shared.py) against the ordinary build.

Whenever :class:`SharedBodies` answers, its bytes must equal the ordinary
build's body for that member, encoded; whenever the change is one it cannot
prove identical for everyone, it must not answer.
"""
from __future__ import annotations

from typing import Any

import pytest_twisted

from homeserver.rooms.create import CreateRoomRequest
from homeserver.sync.builder import SyncRequest
from homeserver.sync.filters import DEFAULT_FILTER, SyncFilter, parse_filter
from homeserver.sync.tokens import StreamToken
from homeserver.util import json as jsonutil

SERVER = "test"  # support.make_config's server name


async def _group(hs: Any, n: int) -> tuple[str, list[str]]:
    users = [f"@m{i}:{hs.server_name}" for i in range(n)]
    room, _ = await hs.room_creator.create(users[0], CreateRoomRequest(preset="public_chat"))
    for user in users[1:]:
        await hs.membership.join(user, room)
    return room, users


async def _ordinary(hs: Any, user: str, since: StreamToken, upto: StreamToken, f: SyncFilter) -> bytes:
    body, _ = await hs.sync_builder.build(SyncRequest(user, "DEV", since, f), upto)
    return jsonutil.dumps_bytes(body)


async def _check_all(hs: Any, users: list[str], since: StreamToken, f: SyncFilter = DEFAULT_FILTER
                     ) -> dict[str, bytes | None]:
    """Seed with the first member's ordinary body, then compare every member's shared answer."""
    upto = hs.notifier.current_token()
    shared = hs.sync_builder.shared
    answers: dict[str, bytes | None] = {}
    for user in users:
        got = shared.lookup(user, "DEV", since, upto, f)
        if got is None:
            body, _ = await hs.sync_builder.build(SyncRequest(user, "DEV", since, f), upto)
            shared.remember(user, since, upto, f, body)
        else:
            assert got == await _ordinary(hs, user, since, upto, f), user
            assert jsonutil.loads(got)["next_batch"] == str(upto)
        answers[user] = got
    return answers


@pytest_twisted.ensureDeferred
async def test_one_message_is_shared_and_identical(hs):
    room, users = await _group(hs, 6)
    since = hs.notifier.current_token()
    await hs.event_sender.send(users[1], room, "m.room.message", {"msgtype": "m.text", "body": "hello"},
                               txn_key=(users[1], "DEV", "t1"))
    answers = await _check_all(hs, users, since)
    # The first member seeds; the sender (whose device sees its transaction ID) builds its own.
    assert answers[users[0]] is None and answers[users[1]] is None
    assert all(answers[u] is not None for u in users[2:])


@pytest_twisted.ensureDeferred
async def test_per_member_unread_counts_differ_but_bodies_stay_exact(hs):
    room, users = await _group(hs, 5)
    since = hs.notifier.current_token()
    # A mention of m3 only: m3's highlight count differs from everyone else's.
    await hs.event_sender.send(users[0], room, "m.room.message",
                               {"msgtype": "m.text", "body": "hi m3", "m.mentions": {"user_ids": [users[3]]}})
    await hs.event_sender.send(users[0], room, "m.room.message", {"msgtype": "m.text", "body": "two"})
    answers = await _check_all(hs, users, since)
    counts = {u: jsonutil.loads(answers[u])["rooms"]["join"][room]["unread_notifications"]
              for u in users[2:]}
    assert counts[users[3]]["highlight_count"] == 1 and counts[users[2]]["highlight_count"] == 0


@pytest_twisted.ensureDeferred
async def test_not_shared_across_state_typing_rooms_or_lazy_loading(hs):
    room, users = await _group(hs, 4)
    other, _ = await hs.room_creator.create(users[0], CreateRoomRequest(preset="public_chat"))
    shared = hs.sync_builder.shared

    async def never(since: StreamToken, f: SyncFilter = DEFAULT_FILTER) -> None:
        answers = await _check_all(hs, users, since, f)
        assert all(a is None for a in answers.values()), answers

    since = hs.notifier.current_token()
    await hs.event_sender.send(users[0], room, "m.room.topic", {"topic": "new"}, state_key="")
    await never(since)  # a state event

    since = hs.notifier.current_token()
    await hs.event_sender.send(users[0], room, "m.room.message", {"msgtype": "m.text", "body": "a"})
    hs.typing.set_typing(room, users[1], True, 10_000)
    await never(since)  # another stream moved

    since = hs.notifier.current_token()
    await hs.event_sender.send(users[0], room, "m.room.message", {"msgtype": "m.text", "body": "b"})
    await hs.event_sender.send(users[0], other, "m.room.message", {"msgtype": "m.text", "body": "c"})
    await never(since)  # two rooms


    since = hs.notifier.current_token()
    await hs.event_sender.send(users[0], room, "m.room.message",
                               {"msgtype": "m.text", "body": "\x00unread-counts\x00"})
    await never(since)  # the template marker inside the content: no template, no harm
    assert shared.lookup(users[2], "DEV", since, hs.notifier.current_token(), DEFAULT_FILTER) is None


@pytest_twisted.ensureDeferred
async def test_filters_are_keys_and_non_members_get_nothing(hs):
    room, users = await _group(hs, 4)
    outsider = f"@out:{hs.server_name}"
    await hs.room_creator.create(outsider, CreateRoomRequest(preset="private_chat"))
    since = hs.notifier.current_token()
    await hs.event_sender.send(users[0], room, "m.room.message", {"msgtype": "m.text", "body": "x"})
    small = parse_filter({"room": {"timeline": {"limit": 1}}, "event_fields": ["type", "content.body"]})
    answers = await _check_all(hs, users, since, small)
    assert answers[users[2]] is not None
    assert jsonutil.loads(answers[users[2]])["rooms"]["join"][room]["timeline"]["events"] == [
        {"type": "m.room.message", "content": {"body": "x"}}]
    # The same change under the default filter has its own (different) body.
    default_answers = await _check_all(hs, users, since)
    assert default_answers[users[2]] != answers[users[2]]
    assert hs.sync_builder.shared.lookup(outsider, "DEV", since, hs.notifier.current_token(), small) is None


@pytest_twisted.ensureDeferred
async def test_waiting_long_polls_all_get_the_message_over_http(hs):
    """Long-polls woken by one message (shared bodies on the HTTP path): 200, the event, own counts."""
    from twisted.internet import defer

    from room_helpers import create, send, users as make_users
    alice, bob, carol, dave = await make_users(hs, "alice", "bob", "carol", "dave")
    room = await create(alice, preset="public_chat")
    for c in (bob, carol, dave):
        assert (await c.post(f"/_matrix/client/v3/rooms/{room}/join", {}))[0] == 200
    since = {}
    for c in (bob, carol, dave):
        status, body = await c.get("/_matrix/client/v3/sync?timeout=0")
        assert status == 200
        since[c.user_id] = body["next_batch"]
    async def poll_until_room(c):
        token = since[c.user_id]
        while True:
            status, body = await c.get(f"/_matrix/client/v3/sync?timeout=10000&since={token}")
            assert status == 200, body
            if room in body.get("rooms", {}).get("join", {}):
                return body["rooms"]["join"][room]
            token = body["next_batch"]

    polls = [defer.ensureDeferred(poll_until_room(c)) for c in (bob, carol, dave)]
    status, _ = await send(alice, room, content={"msgtype": "m.text", "body": "to all",
                                                 "m.mentions": {"user_ids": [dave.user_id]}})
    assert status == 200
    rooms = await defer.gatherResults(polls)
    assert [[e["content"]["body"] for e in r["timeline"]["events"]] for r in rooms] == [["to all"]] * 3
    assert [r["unread_notifications"]["highlight_count"] for r in rooms] == [0, 0, 1]


@pytest_twisted.ensureDeferred
async def test_a_device_with_to_device_to_acknowledge_builds_its_own(hs):
    """The ordinary build deletes acknowledged to-device messages; sharing must not skip that."""
    room, users = await _group(hs, 4)
    bob = users[2]
    start = hs.notifier.current_token()
    await hs.to_device.send(users[0], "DEV", "m.test", "td1", {bob: {"DEV": {"n": 1}}})
    delivered, _ = await hs.sync_builder.build(SyncRequest(bob, "DEV", start, DEFAULT_FILTER),
                                               hs.notifier.current_token())
    assert delivered["to_device"]["events"][0]["content"] == {"n": 1}
    since = StreamToken.parse(delivered["next_batch"])
    await hs.event_sender.send(users[0], room, "m.room.message", {"msgtype": "m.text", "body": "m"})
    answers = await _check_all(hs, users, since)
    assert answers[bob] is None and answers[users[3]] is not None
    # bob's ordinary build acknowledged the message: replaying the old token no longer returns it
    replay, _ = await hs.sync_builder.build(SyncRequest(bob, "DEV", start, DEFAULT_FILTER),
                                            hs.notifier.current_token())
    assert "to_device" not in replay


@pytest_twisted.ensureDeferred
async def test_lazy_loading_shares_once_every_device_has_the_senders_member_event(hs):
    room, users = await _group(hs, 5)
    ll = parse_filter({"room": {"state": {"lazy_load_members": True}}})
    since = hs.notifier.current_token()
    await hs.event_sender.send(users[0], room, "m.room.message", {"msgtype": "m.text", "body": "first"})
    first = await _check_all(hs, users, since, ll)
    # Nobody's device had m0's member event yet: each build sends it (and remembers it).
    assert all(a is None for a in first.values())
    body, _ = await hs.sync_builder.build(SyncRequest(users[3], "DEV", since, ll), hs.notifier.current_token())
    assert [e["state_key"] for e in body["rooms"]["join"][room]["state"]["events"]] == []  # already sent

    since = hs.notifier.current_token()
    await hs.event_sender.send(users[0], room, "m.room.message", {"msgtype": "m.text", "body": "second"})
    second = await _check_all(hs, users, since, ll)
    assert second[users[0]] is None and all(second[u] is not None for u in users[2:])

    # A sender whose member event some devices have not had: the ordinary build, for everyone.
    since = hs.notifier.current_token()
    await hs.event_sender.send(users[4], room, "m.room.message", {"msgtype": "m.text", "body": "third"})
    third = await _check_all(hs, users, since, ll)
    assert all(a is None for a in third.values())
    # m3 speaks; only m0's device syncs it (and gets m3's member event). m3 speaks again:
    # m0's body has no state and seeds, but devices that never got m3's member must not share it.
    since = hs.notifier.current_token()
    await hs.event_sender.send(users[3], room, "m.room.message", {"msgtype": "m.text", "body": "fifth"})
    await hs.sync_builder.build(SyncRequest(users[0], "DEV", since, ll), hs.notifier.current_token())
    since = hs.notifier.current_token()
    await hs.event_sender.send(users[3], room, "m.room.message", {"msgtype": "m.text", "body": "sixth"})
    sixth = await _check_all(hs, users, since, ll)
    assert hs.sync_builder.shared.lookup(users[0], "DEV", since, hs.notifier.current_token(), ll) is not None
    assert sixth[users[1]] is None and sixth[users[2]] is None
    # and redundant members asked for: never shared
    since = hs.notifier.current_token()
    await hs.event_sender.send(users[0], room, "m.room.message", {"msgtype": "m.text", "body": "fourth"})
    redundant = parse_filter({"room": {"state": {"lazy_load_members": True, "include_redundant_members": True}}})
    assert all(a is None for a in (await _check_all(hs, users, since, redundant)).values())


@pytest_twisted.ensureDeferred
async def test_initial_syncs_are_built_a_few_at_a_time(hs):
    """A crowd of initial syncs is built MAX_FULL_BUILDS at a time; incremental ones never wait."""
    from twisted.internet import defer

    from homeserver.sync.builder import MAX_FULL_BUILDS
    builder = hs.sync_builder
    running, most, gates = 0, 0, []

    async def slow_build(req, upto):
        nonlocal running, most
        running += 1
        most = max(most, running)
        gate: defer.Deferred[None] = defer.Deferred()
        gates.append(gate)
        await gate
        running -= 1
        return {"next_batch": str(upto)}, False

    builder._build = slow_build
    upto = hs.notifier.current_token()
    initial = [defer.ensureDeferred(builder.build(SyncRequest(f"@u{i}:x", "D", None, DEFAULT_FILTER), upto))
               for i in range(MAX_FULL_BUILDS + 3)]
    assert running == MAX_FULL_BUILDS
    incremental = defer.ensureDeferred(builder.build(SyncRequest("@v:x", "D", upto, DEFAULT_FILTER), upto))
    assert running == MAX_FULL_BUILDS + 1  # not queued behind the initial ones
    while gates:
        gates.pop(0).callback(None)
    await defer.gatherResults([*initial, incremental])
    assert most == MAX_FULL_BUILDS + 1 and running == 0


@pytest_twisted.ensureDeferred
async def test_a_member_who_ignores_the_sender_builds_a_body_without_the_event(hs):
    """m2 ignores m0: m2 never gets the shared body, and m2's body (without m0's message) is
    never the template; the others share theirs, still byte-identical to their ordinary builds."""
    room, users = await _group(hs, 5)
    ignorer = users[2]
    await hs.account_data.put(ignorer, None, "m.ignored_user_list", {"ignored_users": {users[0]: {}}})
    shared = hs.sync_builder.shared

    since = hs.notifier.current_token()
    await hs.event_sender.send(users[0], room, "m.room.message", {"msgtype": "m.text", "body": "from m0"})
    answers = await _check_all(hs, [users[3], ignorer, users[1], users[4]], since)
    assert answers[ignorer] is None  # a template exists (m3's), but not for m2
    assert answers[users[1]] is not None and answers[users[4]] is not None
    timeline = jsonutil.loads(answers[users[4]])["rooms"]["join"][room]["timeline"]["events"]
    assert [e["content"]["body"] for e in timeline] == ["from m0"]
    own, _ = await hs.sync_builder.build(SyncRequest(ignorer, "DEV", since, DEFAULT_FILTER),
                                         hs.notifier.current_token())
    assert "rooms" not in own  # the only new event is ignored: nothing for this room

    # m0 and m1 speak; m2 builds first: a body with m1's message only, which must not be kept.
    since = hs.notifier.current_token()
    await hs.event_sender.send(users[0], room, "m.room.message", {"msgtype": "m.text", "body": "m0 again"})
    await hs.event_sender.send(users[1], room, "m.room.message", {"msgtype": "m.text", "body": "from m1"})
    answers = await _check_all(hs, [ignorer, users[3], users[4]], since)  # byte equality for m3, m4
    assert answers[ignorer] is None and answers[users[3]] is None and answers[users[4]] is not None
    own, _ = await hs.sync_builder.build(SyncRequest(ignorer, "DEV", since, DEFAULT_FILTER),
                                         hs.notifier.current_token())
    assert [e["content"]["body"] for e in own["rooms"]["join"][room]["timeline"]["events"]] == ["from m1"]
    assert shared.lookup(ignorer, "DEV", since, hs.notifier.current_token(), DEFAULT_FILTER) is None

    # Only m1 (not ignored) speaks: m2 shares again.
    since = hs.notifier.current_token()
    await hs.event_sender.send(users[1], room, "m.room.message", {"msgtype": "m.text", "body": "m1 again"})
    answers = await _check_all(hs, [users[3], ignorer, users[4]], since)
    assert answers[ignorer] is not None and answers[users[4]] is not None
