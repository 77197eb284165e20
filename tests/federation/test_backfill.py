"""Backfill on demand: /messages paging past the start of local history fetches older events over federation."""
from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import defer

from fedsupport import eventually, start_federating
from support import Client

JOIN_BACKFILL = 5


def spy_backfills(hs: Any) -> list[dict[str, Any]]:
    """Record the query parameters of the backfill requests ``hs`` makes, letting them through."""
    calls: list[dict[str, Any]] = []
    client = hs.federation_client
    original = client.get_json

    async def get_json(destination: str, path: str, args: Any = None, **kw: Any) -> Any:
        if "/backfill/" in path:
            calls.append(dict(args or {}))
        return await original(destination, path, args, **kw)

    client.get_json = get_json
    return calls


async def page_back(client: Client, room_id: str, limit: int = 20) -> list[dict[str, Any]]:
    """Every event /messages gives, newest first, paging backwards until there is no ``end``."""
    out: list[dict[str, Any]] = []
    params = {"dir": "b", "limit": str(limit)}
    for _ in range(100):
        code, resp = await client.get(f"/_matrix/client/v3/rooms/{room_id}/messages", params=params)
        assert code == 200, resp
        out += resp["chunk"]
        if "end" not in resp:
            return out
        params = {**params, "from": resp["end"]}
    raise AssertionError("paging did not end")


def bodies(events: list[dict[str, Any]]) -> list[str]:
    return [e["content"]["body"] for e in events if e["type"] == "m.room.message"]


async def group_with_history(a: Any, alice: Client, count: int, initial_state: list[Any] | None = None) -> str:
    code, resp = await alice.post("/_matrix/client/v3/createRoom",
                                  {"preset": "public_chat", "name": "G", "initial_state": initial_state or []})
    assert code == 200, resp
    room_id = resp["room_id"]
    for i in range(count):
        await a.event_sender.send(alice.user_id, room_id, "m.room.message", {"msgtype": "m.text", "body": f"m{i}"})
    return room_id


@pytest_twisted.ensureDeferred
async def test_paging_back_fetches_the_whole_history_once(tmp_path, db_url_for):
    a = await start_federating(tmp_path, db_url_for("a"), "a")
    b = await start_federating(tmp_path, db_url_for("b"), "b", join_backfill_limit=JOIN_BACKFILL)
    try:
        alice, bob = Client(a), Client(b)
        await alice.register("alice")
        await bob.register("bob")
        room_id = await group_with_history(a, alice, 120)
        calls = spy_backfills(b)
        code, resp = await bob.post(f"/_matrix/client/v3/join/{room_id}", {}, params={"server_name": a.server_name})
        assert code == 200, resp
        # The join fetched only the latest few messages.
        assert len(calls) == 1 and calls[0]["limit"] == str(JOIN_BACKFILL)
        local = await b.event_store.paginate(room_id, (2**62, 2**62), "b", 1000)
        assert len([e for e in local if e.event.type == "m.room.message"]) == JOIN_BACKFILL

        # Two readers reach the start of local history at once: one request serves both.
        pages = await defer.gatherResults([
            defer.ensureDeferred(bob.get(f"/_matrix/client/v3/rooms/{room_id}/messages",
                                         params={"dir": "b", "limit": "20"})) for _ in range(2)])
        assert [code for code, _ in pages] == [200, 200]
        chunks = [[e["event_id"] for e in resp["chunk"]] for _, resp in pages]
        assert chunks[0] == chunks[1] and len(chunks[0]) == 20
        assert len(calls) == 2

        # Paging to the start gives every message exactly once, in order, down to the room's creation.
        first = await page_back(bob, room_id)
        assert bodies(first) == [f"m{i}" for i in reversed(range(120))]
        ids = [e["event_id"] for e in first]
        assert len(ids) == len(set(ids))
        assert first[-1]["type"] == "m.room.create"
        assert [e["type"] for e in first].count("m.room.member") == 2  # alice's and bob's joins
        fetched = len(calls)
        assert fetched > 2
        # Each event of the history carries the state of its time on B, as on A (history visibility reads it).
        for eid in ids:
            assert await b.state_store.get_state_ids_at(eid) == await a.state_store.get_state_ids_at(eid), eid
        # A second paging is answered locally.
        assert [e["event_id"] for e in await page_back(bob, room_id)] == ids
        assert len(calls) == fetched
        # The history changed nothing live: same current state and extremities on B, events after go on.
        await alice.put(f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/after", {"msgtype": "m.text",
                                                                                          "body": "after"})

        async def bob_sees_after() -> bool:
            code, resp = await bob.get(f"/_matrix/client/v3/rooms/{room_id}/messages",
                                       params={"dir": "b", "limit": "1"})
            return bodies(resp["chunk"]) == ["after"]

        await eventually(bob_sees_after)
        room_b = await b.room_states.get(room_id)
        assert {alice.user_id, bob.user_id} == room_b.joined
    finally:
        await a.stop()
        await b.stop()


@pytest_twisted.ensureDeferred
async def test_backfilled_history_keeps_history_visibility(tmp_path, db_url_for):
    """With history visible to joined members only, nothing before Bob's join reaches him."""
    a = await start_federating(tmp_path, db_url_for("a"), "a")
    b = await start_federating(tmp_path, db_url_for("b"), "b", join_backfill_limit=JOIN_BACKFILL)
    try:
        alice, bob = Client(a), Client(b)
        await alice.register("alice")
        await bob.register("bob")
        hv = {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}
        room_id = await group_with_history(a, alice, 30, [hv])
        calls = spy_backfills(b)
        code, resp = await bob.post(f"/_matrix/client/v3/join/{room_id}", {}, params={"server_name": a.server_name})
        assert code == 200, resp
        seen = await page_back(bob, room_id)
        # No message from before his join; the same events as a user joining late on A itself sees
        # (the room's first state events, from before history became joined-only).
        assert bodies(seen) == [] and seen[0]["state_key"] == bob.user_id
        carol = Client(a)
        await carol.register("carol")
        code, resp = await carol.post(f"/_matrix/client/v3/join/{room_id}", {})
        assert code == 200, resp
        on_a = await page_back(carol, room_id)
        assert [e["event_id"] for e in on_a[1:]] == [e["event_id"] for e in seen[1:]]
        assert seen[-1]["type"] == "m.room.create"
        assert len(calls) > 1  # the history was fetched (and filtered), and paging still ended
        # Alice, on A, still reads all of it.
        assert len(bodies(await page_back(alice, room_id))) == 30
    finally:
        await a.stop()
        await b.stop()


@pytest_twisted.ensureDeferred
async def test_paging_ends_when_no_server_can_help(tmp_path, db_url_for):
    a = await start_federating(tmp_path, db_url_for("a"), "a")
    b = await start_federating(tmp_path, db_url_for("b"), "b", join_backfill_limit=JOIN_BACKFILL)
    try:
        alice, bob = Client(a), Client(b)
        await alice.register("alice")
        await bob.register("bob")
        room_id = await group_with_history(a, alice, 20)
        code, resp = await bob.post(f"/_matrix/client/v3/join/{room_id}", {}, params={"server_name": a.server_name})
        assert code == 200, resp
        await a.stop()
        calls = spy_backfills(b)
        seen = await page_back(bob, room_id)
        assert bodies(seen) == [f"m{i}" for i in reversed(range(15, 20))]
        assert len(calls) == 1
        # The same point is not asked again right away.
        assert [e["event_id"] for e in await page_back(bob, room_id)] == [e["event_id"] for e in seen]
        assert len(calls) == 1
    finally:
        await a.stop()
        await b.stop()
