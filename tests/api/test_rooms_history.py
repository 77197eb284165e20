"""History: redaction, /event, /messages filters and tokens, /context, /members?at, visibility."""
from __future__ import annotations

import json

import pytest_twisted

from room_helpers import V3, create, send, users


@pytest_twisted.ensureDeferred
async def test_redaction_seen_by_others(hs):
    alice, bob, carol = await users(hs, "alice", "bob", "carol")
    room = await create(alice, preset="public_chat")
    for u in (bob, carol):
        await u.post(f"{V3}/join/{room}")
    _, m = await send(bob, room, "oops")
    _, other = await send(carol, room, "carol's")
    # bob may not redact carol's message; alice (50+) may
    status, err = await bob.put(f"{V3}/rooms/{room}/redact/{other['event_id']}/r1", {})
    assert status == 403 and err["errcode"] == "M_FORBIDDEN"
    status, red = await bob.put(f"{V3}/rooms/{room}/redact/{m['event_id']}/r2", {"reason": "typo"})
    assert status == 200
    status, red2 = await bob.put(f"{V3}/rooms/{room}/redact/{m['event_id']}/r2", {"reason": "typo"})
    assert red2 == red
    status, ev = await carol.get(f"{V3}/rooms/{room}/event/{m['event_id']}")
    assert status == 200 and ev["content"] == {}
    assert ev["unsigned"]["redacted_because"]["event_id"] == red["event_id"]
    assert ev["unsigned"]["redacted_because"]["content"]["reason"] == "typo"
    status, page = await carol.get(f"{V3}/rooms/{room}/messages", params={"dir": "b", "limit": "5"})
    by_id = {e["event_id"]: e for e in page["chunk"]}
    assert by_id[m["event_id"]]["content"] == {}
    assert by_id[red["event_id"]]["redacts"] == m["event_id"]
    # after a reload from the database the redaction still applies
    hs.event_store._cache.clear()
    status, ev = await carol.get(f"{V3}/rooms/{room}/event/{m['event_id']}")
    assert ev["content"] == {} and "redacted_because" in ev["unsigned"]
    status, _ = await alice.put(f"{V3}/rooms/{room}/redact/{other['event_id']}/r3", {})
    assert status == 200
    # a redacted state event stays in the state, redacted
    _, topic = await alice.put(f"{V3}/rooms/{room}/state/m.room.topic", {"topic": "secret"})
    assert (await alice.put(f"{V3}/rooms/{room}/redact/{topic['event_id']}/r4", {}))[0] == 200
    assert (await bob.get(f"{V3}/rooms/{room}/state/m.room.topic"))[1] == {}
    hs.room_states.forget([room])
    hs.event_store._cache.clear()
    assert (await bob.get(f"{V3}/rooms/{room}/state/m.room.topic"))[1] == {}
    status, big = await send(alice, room, "x" * 70000)
    assert status == 413 and big["errcode"] == "M_TOO_LARGE"


@pytest_twisted.ensureDeferred
async def test_messages_filters_tokens_and_context(hs):
    alice, bob = await users(hs, "alice", "bob")
    room = await create(alice, preset="public_chat")
    await bob.post(f"{V3}/join/{room}")
    ids = []
    for i in range(6):
        _, r = await send(alice if i % 2 == 0 else bob, room, f"m{i}")
        ids.append(r["event_id"])
    await send(alice, room, etype="m.custom", content={"x": 1})
    flt = json.dumps({"types": ["m.room.message"], "senders": [bob.user_id], "lazy_load_members": True})
    status, page = await alice.get(f"{V3}/rooms/{room}/messages", params={"dir": "b", "filter": flt})
    assert status == 200
    assert [e["content"]["body"] for e in page["chunk"]] == ["m5", "m3", "m1"]
    assert [e["state_key"] for e in page["state"]] == [bob.user_id]
    flt = json.dumps({"not_types": ["m.room.*"]})
    status, page = await alice.get(f"{V3}/rooms/{room}/messages", params={"dir": "b", "filter": flt})
    assert [e["type"] for e in page["chunk"]] == ["m.custom"]
    # forwards from the start
    status, page = await alice.get(f"{V3}/rooms/{room}/messages", params={"dir": "f", "limit": "1"})
    assert page["chunk"][0]["type"] == "m.room.create"
    status, page2 = await alice.get(f"{V3}/rooms/{room}/messages", params={"dir": "f", "from": page["end"],
                                                                        "limit": "2"})
    assert page2["chunk"][0]["type"] == "m.room.member"
    # a /sync-style stream token works as 'from'
    pos = hs.event_stream.current_position()
    status, page = await alice.get(f"{V3}/rooms/{room}/messages",
                                   params={"dir": "b", "from": f"s{pos}_0_0_0_0_0_0", "limit": "1"})
    assert status == 200 and page["chunk"][0]["type"] == "m.custom"
    status, page = await alice.get(f"{V3}/rooms/{room}/messages", params={"dir": "b", "from": f"s{pos - 1}",
                                                                       "limit": "1"})
    assert page["chunk"][0]["event_id"] == ids[-1]
    # 'to' bounds the page
    status, first = await alice.get(f"{V3}/rooms/{room}/messages", params={"dir": "b", "limit": "2"})
    status, bounded = await alice.get(f"{V3}/rooms/{room}/messages",
                                      params={"dir": "f", "from": first["end"], "to": first["start"]})
    assert [e["event_id"] for e in bounded["chunk"]] == [e["event_id"] for e in reversed(first["chunk"])]
    # bad input
    assert (await alice.get(f"{V3}/rooms/{room}/messages", params={"dir": "x"}))[0] == 400
    assert (await alice.get(f"{V3}/rooms/{room}/messages", params={"from": "garbage"}))[0] == 400
    assert (await alice.get(f"{V3}/rooms/{room}/messages", params={"filter": "{bad"}))[0] == 400
    # context
    status, ctx = await alice.get(f"{V3}/rooms/{room}/context/{ids[3]}", params={"limit": "4"})
    assert status == 200 and ctx["event"]["event_id"] == ids[3]
    assert [e["event_id"] for e in ctx["events_before"]] == [ids[2], ids[1]]
    assert [e["event_id"] for e in ctx["events_after"]] == [ids[4], ids[5]]
    assert any(e["type"] == "m.room.create" for e in ctx["state"])
    status, after = await alice.get(f"{V3}/rooms/{room}/messages", params={"dir": "f", "from": ctx["end"],
                                                                        "limit": "1"})
    assert after["chunk"][0]["type"] == "m.custom"
    assert (await alice.get(f"{V3}/rooms/{room}/context/$nope"))[0] == 404


@pytest_twisted.ensureDeferred
async def test_members_at_and_filters(hs):
    alice, bob, carol = await users(hs, "alice", "bob", "carol")
    room = await create(alice, preset="public_chat")
    await bob.post(f"{V3}/join/{room}")
    status, page = await alice.get(f"{V3}/rooms/{room}/messages", params={"dir": "b", "limit": "1"})
    token = page["start"]
    await carol.post(f"{V3}/join/{room}")
    await bob.post(f"{V3}/rooms/{room}/leave")
    status, now = await alice.get(f"{V3}/rooms/{room}/members")
    assert {m["state_key"]: m["content"]["membership"] for m in now["chunk"]} == {
        alice.user_id: "join", bob.user_id: "leave", carol.user_id: "join"}
    status, then = await alice.get(f"{V3}/rooms/{room}/members", params={"at": token})
    assert {m["state_key"] for m in then["chunk"]} == {alice.user_id, bob.user_id}
    status, joined = await alice.get(f"{V3}/rooms/{room}/members", params={"not_membership": "leave"})
    assert {m["state_key"] for m in joined["chunk"]} == {alice.user_id, carol.user_id}
    assert (await alice.get(f"{V3}/rooms/{room}/members", params={"membership": "bogus"}))[0] == 400
    status, err = await bob.get(f"{V3}/rooms/{room}/joined_members")
    assert status == 403


@pytest_twisted.ensureDeferred
async def test_paging_reads_state_groups_from_memory_or_the_database_alike(hs):
    """The persister leaves each event's state groups on its cached record, so paging checks
    visibility without querying them; read back from the database, the answer is the same."""
    alice, bob = await users(hs, "alice", "bob")
    room = await create(alice, preset="public_chat", initial_state=[
        {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}])
    await send(alice, room, "before bob")
    await bob.post(f"{V3}/join/{room}")
    await send(alice, room, "after bob")
    status, page = await alice.get(f"{V3}/rooms/{room}/messages", params={"dir": "b", "limit": "50"})
    ids = [e["event_id"] for e in page["chunk"]]
    rows = await hs.state_store.get_event_groups(ids, room)
    assert set(rows) == set(ids)
    for event_id in ids:
        stored = hs.event_store.cached(event_id)
        assert (room, stored.state_before, stored.state_after) == rows[event_id]

    async def bodies():
        status, page = await bob.get(f"{V3}/rooms/{room}/messages", params={"dir": "b", "limit": "50"})
        assert status == 200
        return [e["content"].get("body") for e in page["chunk"]]

    warm = await bodies()
    hs.event_store._cache.clear()  # records read back from the database carry no groups
    cold = await bodies()
    assert warm == cold and "after bob" in cold and "before bob" not in cold
    assert hs.event_store.cached(ids[0]).state_before is None


@pytest_twisted.ensureDeferred
async def test_history_visibility(hs):
    alice, bob, carol, dave = await users(hs, "alice", "bob", "carol", "dave")
    # joined: bob sees nothing from before he joined
    room = await create(alice, preset="public_chat", initial_state=[
        {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}])
    _, before = await send(alice, room, "before bob")
    await bob.post(f"{V3}/join/{room}")
    _, after = await send(alice, room, "after bob")
    status, page = await bob.get(f"{V3}/rooms/{room}/messages", params={"dir": "b", "limit": "50"})
    bodies = [e["content"].get("body") for e in page["chunk"]]
    assert "after bob" in bodies and "before bob" not in bodies
    assert (await bob.get(f"{V3}/rooms/{room}/event/{before['event_id']}"))[0] == 404
    # after leaving, bob no longer sees new messages but keeps the old ones
    await bob.post(f"{V3}/rooms/{room}/leave")
    _, later = await send(alice, room, "after bob left")
    status, page = await bob.get(f"{V3}/rooms/{room}/messages", params={"dir": "b", "limit": "50"})
    bodies = [e["content"].get("body") for e in page["chunk"]]
    assert "after bob" in bodies and "after bob left" not in bodies

    # shared: a newcomer sees earlier history
    room2 = await create(alice, preset="public_chat")
    await send(alice, room2, "old news")
    await carol.post(f"{V3}/join/{room2}")
    status, page = await carol.get(f"{V3}/rooms/{room2}/messages", params={"dir": "b", "limit": "50"})
    assert "old news" in [e["content"].get("body") for e in page["chunk"]]

    # invited: visible from the invite on
    room3 = await create(alice, initial_state=[
        {"type": "m.room.history_visibility", "content": {"history_visibility": "invited"}}])
    await send(alice, room3, "pre-invite")
    await alice.post(f"{V3}/rooms/{room3}/invite", {"user_id": carol.user_id})
    await send(alice, room3, "post-invite")
    await carol.post(f"{V3}/rooms/{room3}/join")
    status, page = await carol.get(f"{V3}/rooms/{room3}/messages", params={"dir": "b", "limit": "50"})
    bodies = [e["content"].get("body") for e in page["chunk"]]
    assert "post-invite" in bodies and "pre-invite" not in bodies

    # world_readable: a non-member reads; a private group reads nothing
    room4 = await create(alice, preset="public_chat", initial_state=[
        {"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}}])
    _, pub = await send(alice, room4, "for all")
    status, page = await dave.get(f"{V3}/rooms/{room4}/messages", params={"dir": "b"})
    assert status == 200 and "for all" in [e["content"].get("body") for e in page["chunk"]]
    assert (await dave.get(f"{V3}/rooms/{room4}/event/{pub['event_id']}"))[0] == 200
    assert (await dave.get(f"{V3}/rooms/{room4}/state"))[0] == 200
    assert (await send(dave, room4, "but no writing"))[0] == 403
    for path in ("messages", "state", "members", "joined_members", f"context/{after['event_id']}",
                 f"event/{after['event_id']}", "state/m.room.name"):
        status, err = await dave.get(f"{V3}/rooms/{room}/{path}")
        assert status in (403, 404), (path, status)
        assert err["errcode"] in ("M_FORBIDDEN", "M_NOT_FOUND")
