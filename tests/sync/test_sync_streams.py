"""/sync's per-user streams over real HTTP: account data, to-device, filters, presence, long-poll."""
from __future__ import annotations

import pytest_twisted
from twisted.internet import defer

from support import Client

V3 = "/_matrix/client/v3"


async def _user(hs, name):
    c = Client(hs)
    await c.register(name)
    return c


@pytest_twisted.ensureDeferred
async def test_filters_endpoints(hs):
    alice, bob = await _user(hs, "alice"), await _user(hs, "bob")
    definition = {"room": {"timeline": {"limit": 3}}, "presence": {"types": []}}
    status, body = await alice.post(f"{V3}/user/{alice.user_id}/filter", definition)
    assert status == 200, body
    fid = body["filter_id"]
    assert await alice.get(f"{V3}/user/{alice.user_id}/filter/{fid}") == (200, definition)
    status, body = await bob.get(f"{V3}/user/{alice.user_id}/filter/{fid}")
    assert status == 403
    status, body = await alice.get(f"{V3}/user/{alice.user_id}/filter/999")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = await alice.post(f"{V3}/user/{alice.user_id}/filter", {"room": {"timeline": {"limit": -1}}})
    assert (status, body["errcode"]) == (400, "M_BAD_JSON")
    status, body = await alice.post(f"{V3}/user/{bob.user_id}/filter", {})
    assert status == 403
    # usable in /sync, by ID and inline; bad ones are refused
    assert (await alice.get(f"{V3}/sync", params={"filter": fid}))[0] == 200
    assert (await alice.get(f"{V3}/sync", params={"filter": '{"room":{"timeline":{"limit":1}}}'}))[0] == 200
    status, body = await alice.get(f"{V3}/sync", params={"filter": "{not json"})
    assert status == 400
    status, body = await alice.get(f"{V3}/sync", params={"filter": "abc"})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    status, body = await alice.get(f"{V3}/sync", params={"since": "garbage"})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")


@pytest_twisted.ensureDeferred
async def test_account_data_and_tags_in_sync(hs):
    alice = await _user(hs, "alice")
    status, first = await alice.get(f"{V3}/sync")
    assert status == 200 and "next_batch" in first
    assert (await alice.put(f"{V3}/user/{alice.user_id}/account_data/org.example", {"a": 1}))[0] == 200
    assert await alice.get(f"{V3}/user/{alice.user_id}/account_data/org.example") == (200, {"a": 1})
    status, body = await alice.get(f"{V3}/user/{alice.user_id}/account_data/org.missing")
    assert status == 404
    status, body = await alice.put(f"{V3}/user/{alice.user_id}/account_data/m.fully_read", {"a": 1})
    assert (status, body["errcode"]) == (405, "M_BAD_JSON")
    status, body = await alice.put(f"{V3}/user/@other:test.local/account_data/x", {})
    assert status == 403
    room = "!room:test.local"
    assert (await alice.put(f"{V3}/user/{alice.user_id}/rooms/{room}/tags/u.work", {"order": 0.5}))[0] == 200
    assert await alice.get(f"{V3}/user/{alice.user_id}/rooms/{room}/tags") == \
        (200, {"tags": {"u.work": {"order": 0.5}}})
    status, body = await alice.put(f"{V3}/user/{alice.user_id}/rooms/{room}/tags/u.x", {"order": "high"})
    assert status == 400
    status, body = await alice.get(f"{V3}/sync", params={"since": first["next_batch"]})
    assert status == 200
    assert {"type": "org.example", "content": {"a": 1}} in body["account_data"]["events"]
    # nothing new: an immediate empty answer with a timeout of 0
    status, again = await alice.get(f"{V3}/sync", params={"since": body["next_batch"], "timeout": "0"})
    assert "account_data" not in again
    assert (await alice.request("DELETE", f"{V3}/user/{alice.user_id}/rooms/{room}/tags/u.work"))[0] == 200
    assert await alice.get(f"{V3}/user/{alice.user_id}/rooms/{room}/tags") == (200, {"tags": {}})


@pytest_twisted.ensureDeferred
async def test_long_poll_woken_by_account_data(hs):
    alice = await _user(hs, "alice")
    _s, first = await alice.get(f"{V3}/sync")
    poll = defer.ensureDeferred(alice.get(f"{V3}/sync", params={"since": first["next_batch"], "timeout": "30000"}))
    # Let the poll reach the server and start waiting: the order of events is what matters.
    while hs.notifier.waiting_users() == 0:
        await _tick()
    assert not poll.called
    await alice.put(f"{V3}/user/{alice.user_id}/account_data/org.wake", {"x": True})
    status, body = await poll
    assert status == 200
    assert body["account_data"]["events"] == [{"type": "org.wake", "content": {"x": True}}]
    assert hs.notifier.listener_count() == 0


@pytest_twisted.ensureDeferred
async def test_long_poll_disconnect_cleans_up(hs):
    alice = await _user(hs, "alice")
    _s, first = await alice.get(f"{V3}/sync")
    poll = defer.ensureDeferred(alice.get(f"{V3}/sync", params={"since": first["next_batch"], "timeout": "30000"}))
    while hs.notifier.waiting_users() == 0:
        await _tick()
    poll.cancel()  # treq closes the connection
    poll.addErrback(lambda f: None)
    while hs.notifier.waiting_users() != 0:
        await _tick()


@pytest_twisted.ensureDeferred
async def test_to_device_at_least_once(hs):
    alice, bob = await _user(hs, "alice"), await _user(hs, "bob")
    _s, first = await bob.get(f"{V3}/sync")
    msg = {"messages": {bob.user_id: {bob.device_id: {"secret": 1}}}}
    assert (await alice.put(f"{V3}/sendToDevice/m.test/txn1", msg))[0] == 200
    assert (await alice.put(f"{V3}/sendToDevice/m.test/txn1", msg))[0] == 200  # idempotent
    assert (await alice.put(f"{V3}/sendToDevice/m.test/txn2",
                            {"messages": {bob.user_id: {"*": {"secret": 2}}}}))[0] == 200
    _s, one = await bob.get(f"{V3}/sync", params={"since": first["next_batch"]})
    events = one["to_device"]["events"]
    assert [e["content"]["secret"] for e in events] == [1, 2]
    assert events[0] == {"type": "m.test", "sender": alice.user_id, "content": {"secret": 1}}
    # the same since again: delivered again (not acknowledged yet)
    _s, again = await bob.get(f"{V3}/sync", params={"since": first["next_batch"]})
    assert [e["content"]["secret"] for e in again["to_device"]["events"]] == [1, 2]
    # acknowledged by the next since: gone
    _s, later = await bob.get(f"{V3}/sync", params={"since": one["next_batch"]})
    assert "to_device" not in later
    _s, replay = await bob.get(f"{V3}/sync", params={"since": first["next_batch"]})
    assert "to_device" not in replay
    status, body = await alice.put(f"{V3}/sendToDevice/m.test/txn3", {"messages": {"bob": {}}})
    assert status == 400
    status, body = await alice.put(f"{V3}/sendToDevice/m.test/txn4", {"nomessages": 1})
    assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")


@pytest_twisted.ensureDeferred
async def test_presence_endpoints(hs):
    alice, bob = await _user(hs, "alice"), await _user(hs, "bob")
    assert (await alice.put(f"{V3}/presence/{alice.user_id}/status",
                            {"presence": "unavailable", "status_msg": "lunch"}))[0] == 200
    status, body = await alice.get(f"{V3}/presence/{alice.user_id}/status")
    assert status == 200 and body["presence"] == "unavailable" and body["status_msg"] == "lunch"
    status, body = await bob.get(f"{V3}/presence/{alice.user_id}/status")
    assert status == 403  # no shared room
    status, body = await alice.put(f"{V3}/presence/{bob.user_id}/status", {"presence": "online"})
    assert status == 403
    status, body = await alice.put(f"{V3}/presence/{alice.user_id}/status", {"presence": "busy"})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    _s, sync = await alice.get(f"{V3}/sync", params={"set_presence": "unavailable"})
    presence = {e["sender"]: e["content"] for e in sync.get("presence", {}).get("events", [])}
    assert presence[alice.user_id]["presence"] == "unavailable"
    status, body = await alice.get(f"{V3}/sync", params={"set_presence": "away"})
    assert status == 400


@pytest_twisted.ensureDeferred
async def test_presence_disabled(tmp_path, database_url):
    import support
    hs = await support.start_homeserver(support.make_config(tmp_path, database_url, presence={"enabled": False}))
    try:
        alice = await _user(hs, "alice")
        status, body = await alice.put(f"{V3}/presence/{alice.user_id}/status", {"presence": "online"})
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
        _s, sync = await alice.get(f"{V3}/sync")
        assert "presence" not in sync
    finally:
        await hs.stop()


@pytest_twisted.ensureDeferred
async def test_receipts_and_typing_need_membership(hs):
    alice = await _user(hs, "alice")
    room = "!nowhere:test.local"
    status, body = await alice.put(f"{V3}/rooms/{room}/typing/{alice.user_id}", {"typing": True, "timeout": 1000})
    assert status == 403
    status, body = await alice.put(f"{V3}/rooms/{room}/typing/@x:test.local", {"typing": True})
    assert status == 403
    status, body = await alice.put(f"{V3}/rooms/{room}/typing/{alice.user_id}", {"typing": "yes"})
    assert (status, body["errcode"]) == (400, "M_BAD_JSON")
    status, body = await alice.post(f"{V3}/rooms/{room}/receipt/m.read/$e")
    assert status == 403
    status, body = await alice.post(f"{V3}/rooms/{room}/receipt/m.bogus/$e")
    assert status == 400
    status, body = await alice.post(f"{V3}/rooms/{room}/read_markers", {"m.fully_read": "$e"})
    assert status == 403
    status, body = await alice.post(f"{V3}/rooms/{room}/read_markers", {"m.fully_read": 5})
    assert status == 400


async def _tick():
    from twisted.internet import reactor
    d = defer.Deferred()
    reactor.callLater(0.01, d.callback, None)
    await d
