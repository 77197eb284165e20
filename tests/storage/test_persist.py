"""The persister and the stores beneath it, on SQLite and PostgreSQL.

Group commit, stream order across rooms, the event stream, state groups as
bounded delta chains, reloading a room from the database, and the
federation entry points (state before an event, outliers, rejected events).
"""
from __future__ import annotations

import pytest_twisted
from twisted.internet import defer

from homeserver.rooms.create import CreateRoomRequest
from homeserver.rooms.persist import EventContext
from homeserver.storage import state as state_mod
from homeserver.sync.tokens import RoomPaginationToken, StreamToken
from room_helpers import users


async def make_room(hs, user="@alice:test.local", **kw):
    room_id, _ = await hs.room_creator.create(user, CreateRoomRequest(**kw))
    return room_id


def count_transactions(hs):
    calls = []
    original = hs.db.run

    async def run(fn, *args, **kw):
        calls.append(getattr(fn, "__name__", fn))
        return await original(fn, *args, **kw)
    hs.db.run = run
    return calls


@pytest_twisted.ensureDeferred
async def test_group_commit_and_stream(hs):
    await users(hs, "alice")
    room = await make_room(hs)
    published = []
    hs.event_stream.subscribe(lambda batch: published.append([p.stream_ordering for p in batch]))
    calls = count_transactions(hs)
    sends = [defer.ensureDeferred(hs.event_sender.send("@alice:test.local", room, "m.room.message",
                                                       {"msgtype": "m.text", "body": f"m{i}"}))
             for i in range(20)]
    ids = await defer.gatherResults(sends)
    assert len(set(ids)) == 20
    # the first send opens a transaction; the 19 queued behind it share one or two more
    assert calls.count("_txn") <= 3
    flat = [s for batch in published for s in batch]
    assert flat == sorted(flat) and len(flat) == 20
    assert hs.event_stream.current_position() == flat[-1]
    # one linear DAG: each event cites the previous one
    stored = await hs.event_store.get_events_as_list(ids)
    for prev, ev in zip(stored, stored[1:]):
        assert ev.event.prev_event_ids == [prev.event_id]
        assert ev.event.depth == prev.event.depth + 1
    # the joined members travel with the event for fan-out
    room_state = hs.room_states.peek(room)
    assert room_state.pending_count == 0 and room_state.extremities == [ids[-1]]


@pytest_twisted.ensureDeferred
async def test_rooms_persist_concurrently_and_publish_in_order(hs):
    await users(hs, "alice")
    rooms = [await make_room(hs) for _ in range(3)]
    published = []
    hs.event_stream.subscribe(lambda batch: published.extend(p.stream_ordering for p in batch))
    await defer.gatherResults([
        defer.ensureDeferred(hs.event_sender.send("@alice:test.local", rooms[i % 3], "m.room.message",
                                                  {"msgtype": "m.text", "body": str(i)}))
        for i in range(30)])
    assert published == sorted(published) and len(published) == 30


@pytest_twisted.ensureDeferred
async def test_state_groups_are_bounded_delta_chains(hs, monkeypatch):
    monkeypatch.setattr(state_mod, "MAX_DELTA_DEPTH", 3)
    await users(hs, "alice")
    room = await make_room(hs)
    ids = []
    for i in range(8):
        ids.append(await hs.event_sender.send("@alice:test.local", room, "m.room.topic", {"topic": str(i)},
                                              state_key=""))
    depths = await hs.db.run(lambda txn: txn.query(
        "SELECT delta_depth FROM state_groups WHERE room_id = ? ORDER BY state_group", (room,)))
    assert max(d[0] for d in depths) <= 3 and 0 in [d[0] for d in depths[1:]]
    hs.state_store._groups.clear()  # read the chains back from the database
    for i, eid in enumerate(ids):
        state = await hs.state_store.get_state_ids_at(eid)
        assert state[("m.room.topic", "")] == eid
        before = await hs.state_store.get_state_ids_at(eid, before=True)
        assert before.get(("m.room.topic", "")) == (ids[i - 1] if i else None)
    current = await hs.state_store.get_current_state_ids(room)
    assert current[("m.room.topic", "")] == ids[-1]


@pytest_twisted.ensureDeferred
async def test_room_reloads_from_database(hs):
    await users(hs, "alice", "bob")
    room = await make_room(hs, preset="public_chat", name="n")
    await hs.membership.join("@bob:test.local", room)
    before = hs.room_states.peek(room)
    hs.room_states.forget([room])
    after = await hs.room_states.get(room)
    assert after is not before
    assert after.state_ids() == before.state_ids()
    assert after.joined == {"@alice:test.local", "@bob:test.local"}
    assert after.extremities == before.extremities and after.depth == before.depth
    assert after.state_group == before.state_group
    assert after.power_levels.user_level("@alice:test.local") == 100
    rooms = await hs.state_store.get_rooms_for_user("@bob:test.local")
    assert [m.room_id for m in rooms] == [room]


@pytest_twisted.ensureDeferred
async def test_federation_entry_points(hs):
    """Outliers and rejected events are stored but change nothing; state_before is honoured."""
    await users(hs, "alice")
    room = await make_room(hs, preset="public_chat")
    rs = hs.room_states.peek(room)
    builder = hs.event_builder
    # an outlier: stored, not in the timeline, no state change
    topic = builder.build(rs, "m.room.topic", "@alice:test.local", {"topic": "outlier"}, "")
    [pe] = await hs.persister.persist([EventContext(topic, outlier=True)])
    stored = await hs.event_store.get_event(topic.event_id)
    assert stored.outlier and rs.get("m.room.topic") is None
    assert topic.event_id not in rs.extremities
    # a rejected event: stored, never served, no state effect
    name = builder.build(rs, "m.room.name", "@alice:test.local", {"name": "rejected"}, "")
    name.rejected_reason = "auth"
    await hs.persister.persist([EventContext(name)])
    assert rs.get("m.room.name") is None
    assert await hs.event_store.get_event(name.event_id) is None
    assert (await hs.event_store.get_event(name.event_id, allow_rejected=True)).event.rejected
    # an event with an explicit state before it (as federation computes by state resolution)
    msg = builder.build(rs, "m.room.message", "@alice:test.local", {"msgtype": "m.text", "body": "x"})
    state_before = dict(rs.state_ids())
    state_before[("m.room.topic", "")] = topic.event_id
    [pe] = await hs.persister.persist([EventContext(msg, state_before=state_before)])
    assert (await hs.state_store.get_state_ids_at(msg.event_id))[("m.room.topic", "")] == topic.event_id
    assert rs.get("m.room.topic").event_id == topic.event_id  # became current state too
    assert rs.extremities == [msg.event_id]
    # a backfilled event: negative stream ordering, not published, but in the timeline
    published = []
    hs.event_stream.subscribe(published.extend)
    position = hs.event_stream.current_position()
    old = builder.build(rs, "m.room.message", "@alice:test.local", {"msgtype": "m.text", "body": "old"})
    current = rs.state_ids()
    old_state = {k: v for k, v in current.items() if k != ("m.room.topic", "")}
    [pe] = await hs.persister.persist([EventContext(old, state_before=old_state, backfilled=True)])
    assert pe.stream_ordering < 0 and published == [] and hs.event_stream.current_position() == position
    assert rs.extremities == [msg.event_id] and rs.state_ids() == current
    # its own state (what history visibility reads) is recorded; the room's current state is untouched
    assert await hs.state_store.get_state_ids_at(old.event_id) == old_state
    assert await hs.state_store.get_current_state_ids(room) == current
    assert await hs.event_store.get_forward_extremities(room) == [msg.event_id]
    page = await hs.event_store.paginate(room, (10**9, 10**9), "b", 50)
    assert old.event_id in [e.event_id for e in page]
    assert old.event_id not in [e.event_id for e in await hs.event_store.room_stream_events(room, 0, 10**9, 50)]


def test_tokens_round_trip():
    t = StreamToken.parse("s5_1_2_3_4_5_6")
    assert (t.events, t.device_lists) == (5, 6) and str(t) == "s5_1_2_3_4_5_6"
    assert StreamToken.parse("s42") == StreamToken(42)
    assert str(StreamToken(3).copy_and_replace(typing=2)) == "s3_2_0_0_0_0_0"
    assert RoomPaginationToken.parse("t10-20") == RoomPaginationToken(10, 20)
    assert str(RoomPaginationToken(10, 20)) == "t10-20"
    # backfilled history has negative stream orderings
    assert RoomPaginationToken.parse(str(RoomPaginationToken(10, -6))) == RoomPaginationToken(10, -6)
    assert RoomPaginationToken.parse("s7_1_1_1_1_1_1") == RoomPaginationToken(None, 7)
    assert str(RoomPaginationToken(None, 7)) == "s7"
    import pytest
    from homeserver.api.errors import MatrixError
    for bad in ("", "x1", "t1", "t-1-2", "s1_2_3_4_5_6_7_8", "s01", "t1-x", "s" + "9" * 30, "t1--0", "t1---2",
                "s-1"):
        with pytest.raises(MatrixError):
            RoomPaginationToken.parse(bad)


@pytest_twisted.ensureDeferred
async def test_failed_batch_fails_callers_and_room_recovers(hs):
    await users(hs, "alice")
    room = await make_room(hs)
    original = hs.persister._txn

    def boom(*a, **kw):
        raise RuntimeError("disk full")
    hs.persister._txn = boom
    import pytest
    with pytest.raises(RuntimeError):
        await hs.event_sender.send("@alice:test.local", room, "m.room.message", {"msgtype": "m.text", "body": "x"})
    hs.persister._txn = original
    # the room reloads from the database and carries on from what is durable
    eid = await hs.event_sender.send("@alice:test.local", room, "m.room.message", {"msgtype": "m.text", "body": "y"})
    stored = await hs.event_store.get_event(eid)
    durable = await hs.event_store.get_forward_extremities(room)
    assert durable == [eid] and len(stored.event.prev_event_ids) == 1
    assert await hs.event_store.get_event(stored.event.prev_event_ids[0]) is not None


@pytest_twisted.ensureDeferred
async def test_group_values_read_only_the_keys_asked(hs):
    await users(hs, "alice")
    room = await make_room(hs)
    eid = await hs.event_sender.send("@alice:test.local", room, "m.room.topic", {"topic": "t"}, state_key="")
    groups = await hs.state_store.get_event_groups([eid])
    group = groups[eid][2]
    keys = [("m.room.topic", ""), ("m.room.member", "@alice:test.local"), ("m.room.name", "")]
    cached = await hs.state_store.get_group_values(room, group, keys)
    hs.state_store._groups.clear()
    from_db = await hs.state_store.get_group_values(room, group, keys)
    assert cached == from_db and set(from_db) == {("m.room.topic", ""), ("m.room.member", "@alice:test.local")}
    assert from_db[("m.room.topic", "")] == eid
