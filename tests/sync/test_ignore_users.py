"""Client-server module "Ignoring Users" (``m.ignored_user_list``) over real HTTP and WebSocket."""
from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest_twisted
from twisted.internet import defer

from homeserver.sync.account_data import AccountDataService
from room_helpers import V3, create, send, users
from support import aio
from sync.test_websocket import _receive, _ws_url

IGNORED = "m.ignored_user_list"


def _ignore_path(c: Any) -> str:
    return f"{V3}/user/{c.user_id}/account_data/{IGNORED}"


async def _ignore(c: Any, *others: Any) -> None:
    status, body = await c.put(_ignore_path(c), {"ignored_users": {o.user_id: {} for o in others}})
    assert status == 200, body


async def _sync(c: Any, since: str | None = None) -> dict[str, Any]:
    status, body = await c.get(f"{V3}/sync?timeout=0" + (f"&since={since}" if since else ""))
    assert status == 200, body
    return body


def _timeline(body: dict[str, Any], room: str) -> list[tuple[str, str, Any]]:
    events = body.get("rooms", {}).get("join", {}).get(room, {}).get("timeline", {}).get("events", [])
    return [(e["type"], e["sender"], e["content"].get("body", e.get("state_key"))) for e in events]


async def _group(hs: Any) -> tuple[Any, Any, Any, str]:
    alice, bob, carol = await users(hs, "alice", "bob", "carol")
    room = await create(alice, preset="public_chat")
    for c in (bob, carol):
        assert (await c.post(f"{V3}/rooms/{room}/join", {}))[0] == 200
    return alice, bob, carol, room


@pytest_twisted.ensureDeferred
async def test_bad_ignore_lists_are_400_and_nothing_is_stored(hs):
    alice, bob = await users(hs, "alice", "bob")
    path = _ignore_path(bob)
    bad = [
        ({"ignored_users": []}, "M_BAD_JSON"),
        ({"ignored_users": "@alice:test"}, "M_BAD_JSON"),
        ({"something_else": {}}, "M_BAD_JSON"),
        ({"ignored_users": {alice.user_id: True}}, "M_BAD_JSON"),
        ({"ignored_users": {"alice": {}}}, "M_INVALID_PARAM"),
        ({"ignored_users": {"@no-server-name": {}}}, "M_INVALID_PARAM"),
        ({"ignored_users": {bob.user_id: {}}}, "M_INVALID_PARAM"),  # yourself
    ]
    for content, errcode in bad:
        status, body = await bob.put(path, content)
        assert (status, body.get("errcode")) == (400, errcode), content
        assert (await bob.get(path))[0] == 404, content
    assert hs.account_data.ignored_by(bob.user_id) == frozenset()
    # A good list is kept; a bad one after it leaves it in place.
    await _ignore(bob, alice)
    assert (await bob.put(path, {"ignored_users": {bob.user_id: {}}}))[0] == 400
    assert await bob.get(path) == (200, {"ignored_users": {alice.user_id: {}}})
    assert hs.account_data.ignored_by(bob.user_id) == {alice.user_id}
    # Someone else's list: forbidden as for any account data.
    assert (await alice.put(path, {"ignored_users": {}}))[0] == 403
    # Room account data of that type is not an ignore list.
    room = await create(bob)
    assert (await bob.put(f"{V3}/user/{bob.user_id}/rooms/{room}/account_data/{IGNORED}", {"x": 1}))[0] == 200
    assert hs.account_data.ignored_by(bob.user_id) == {alice.user_id}


@pytest_twisted.ensureDeferred
async def test_ignored_senders_vanish_from_sync_messages_context_and_counts(hs):
    alice, bob, carol, room = await _group(hs)
    since = (await _sync(bob))["next_batch"]
    await _ignore(bob, alice)
    body = await _sync(bob, since)
    assert body["account_data"]["events"] == [{"type": IGNORED,
                                               "content": {"ignored_users": {alice.user_id: {}}}}]
    since = body["next_batch"]

    # Only ignored messages: the room does not appear at all.
    assert (await send(alice, room, "a1"))[0] == 200
    body = await _sync(bob, since)
    assert room not in body.get("rooms", {}).get("join", {})
    assert (await hs.account_data_store.get(bob.user_id, "", IGNORED)) is not None

    # State events of ignored users still arrive; their messages do not.
    assert (await alice.put(f"{V3}/rooms/{room}/state/m.room.topic/", {"topic": "t"}))[0] == 200
    assert (await send(alice, room, "a2"))[0] == 200
    status, carols = await send(carol, room, "c1")
    assert status == 200
    body = await _sync(bob, since)
    assert _timeline(body, room) == [("m.room.topic", alice.user_id, ""),
                                     ("m.room.message", carol.user_id, "c1")]
    counts = body["rooms"]["join"][room]["unread_notifications"]
    assert counts["notification_count"] == 1  # carol's message only
    since = body["next_batch"]
    # carol (ignoring nobody) sees everything
    assert [b for t, _, b in _timeline(await _sync(carol), room) if t == "m.room.message"] == ["a1", "a2", "c1"]

    # An initial sync leaves them out too.
    assert [b for t, _, b in _timeline(await _sync(bob), room) if t == "m.room.message"] == ["c1"]

    # /messages: no message of alice's (even from before the ignore); her state events stay.
    status, page = await bob.get(f"{V3}/rooms/{room}/messages?dir=b&limit=50")
    assert status == 200, page
    kinds = [(e["type"], e["sender"]) for e in page["chunk"]]
    assert ("m.room.message", alice.user_id) not in kinds
    assert ("m.room.topic", alice.user_id) in kinds and ("m.room.create", alice.user_id) in kinds
    assert ("m.room.message", carol.user_id) in kinds
    status, page = await carol.get(f"{V3}/rooms/{room}/messages?dir=b&limit=50")
    assert ("m.room.message", alice.user_id) in [(e["type"], e["sender"]) for e in page["chunk"]]

    # /context around carol's message: alice's messages are not among the neighbours.
    status, ctx = await bob.get(f"{V3}/rooms/{room}/context/{carols['event_id']}?limit=10")
    assert status == 200, ctx
    around = [(e["type"], e["sender"]) for e in ctx["events_before"] + ctx["events_after"]]
    assert ("m.room.message", alice.user_id) not in around and ("m.room.topic", alice.user_id) in around

    # Un-ignore: new messages arrive again (and count); the ones missed stay missed.
    assert (await bob.put(_ignore_path(bob), {"ignored_users": {}}))[0] == 200
    assert (await send(alice, room, "a3"))[0] == 200
    body = await _sync(bob, since)
    assert [b for t, _, b in _timeline(body, room) if t == "m.room.message"] == ["a3"]
    assert body["rooms"]["join"][room]["unread_notifications"]["notification_count"] == 2
    assert hs.account_data.ignored_by(bob.user_id) == frozenset()


@pytest_twisted.ensureDeferred
async def test_invites_from_ignored_users_are_not_shown(hs):
    alice, bob, carol = await users(hs, "alice", "bob", "carol")
    since = (await _sync(bob))["next_batch"]
    await _ignore(bob, alice)
    from_alice = await create(alice, invite=[bob.user_id])
    from_carol = await create(carol, invite=[bob.user_id])
    for body in (await _sync(bob, since), await _sync(bob)):
        invites = body.get("rooms", {}).get("invite", {})
        assert from_carol in invites and from_alice not in invites
    # Nor does the invite notify.
    status, notes = await bob.get(f"{V3}/notifications")
    assert status == 200
    assert {n["room_id"] for n in notes["notifications"]} == {from_carol}


@pytest_twisted.ensureDeferred
async def test_websocket_frames_leave_out_ignored_messages(hs):
    alice, bob, carol, room = await _group(hs)
    await _ignore(bob, alice)

    async def scenario() -> list[dict[str, Any]]:
        frames = []
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(_ws_url(hs, access_token=bob.token)) as ws:
                await _receive(ws, "sync")
                for c, text in ((alice, "a1"), (carol, "c1")):
                    await defer.Deferred.asFuture(defer.ensureDeferred(send(c, room, text)),
                                                  asyncio.get_event_loop())
                while True:
                    frame = await _receive(ws, "sync")
                    frames.append(frame["body"])
                    if ("m.room.message", carol.user_id, "c1") in _timeline(frame["body"], room):
                        return frames

    frames = await aio(scenario())
    seen = [e for body in frames for e in _timeline(body, room)]
    assert ("m.room.message", carol.user_id, "c1") in seen
    assert all(sender != alice.user_id for _, sender, _ in seen)


@pytest_twisted.ensureDeferred
async def test_ignore_lists_are_loaded_at_start_up(hs):
    alice, bob, carol = await users(hs, "alice", "bob", "carol")
    await _ignore(bob, alice, carol)
    await _ignore(carol, alice)
    await _ignore(carol)  # then nobody
    fresh = AccountDataService(hs.account_data_store, hs.notifier)
    await fresh.load()
    assert fresh.ignored_by(bob.user_id) == {alice.user_id, carol.user_id}
    assert fresh.ignored_by(carol.user_id) == frozenset() and fresh.ignored_by(alice.user_id) == frozenset()


@pytest_twisted.ensureDeferred
async def test_typing_and_receipts_of_ignored_users_are_left_out(hs):
    alice, bob, carol, room = await _group(hs)
    status, sent = await send(carol, room, "read me")
    assert status == 200
    await _ignore(bob, alice)
    since = (await _sync(bob))["next_batch"]
    for c in (alice, carol):
        assert (await c.put(f"{V3}/rooms/{room}/typing/{c.user_id}", {"typing": True, "timeout": 30000}))[0] == 200
        assert (await c.post(f"{V3}/rooms/{room}/receipt/m.read/{sent['event_id']}", {}))[0] == 200
    ephemeral = (await _sync(bob, since))["rooms"]["join"][room]["ephemeral"]["events"]
    typing = [e for e in ephemeral if e["type"] == "m.typing"]
    receipts = [e for e in ephemeral if e["type"] == "m.receipt"]
    assert typing and typing[-1]["content"]["user_ids"] == [carol.user_id]
    readers = {u for e in receipts for by_type in e["content"].values() for u in by_type.get("m.read", {})}
    assert readers == {carol.user_id}
    # carol (who ignores nobody) sees both
    ephemeral = (await _sync(carol))["rooms"]["join"][room]["ephemeral"]["events"]
    assert {u for e in ephemeral if e["type"] == "m.typing" for u in e["content"]["user_ids"]} == {
        alice.user_id, carol.user_id}
