"""Bad input to room endpoints is a clear 4xx Matrix error, never a 500, and changes nothing."""
from __future__ import annotations

import pytest_twisted

from room_helpers import V1, V3, create, send, users


@pytest_twisted.ensureDeferred
async def test_bad_input_is_a_4xx(hs):
    alice, bob = await users(hs, "alice", "bob")
    room = await create(alice, preset="public_chat")
    _, msg = await send(alice, room, "x")
    eid = msg["event_id"]
    before = hs.event_stream.current_position()
    cases = [
        ("POST", f"{V3}/createRoom", {"name": 5}),
        ("POST", f"{V3}/createRoom", {"invite": "x"}),
        ("POST", f"{V3}/createRoom", {"invite": [1]}),
        ("POST", f"{V3}/createRoom", {"initial_state": [1]}),
        ("POST", f"{V3}/createRoom", {"initial_state": [{"type": 1}]}),
        ("POST", f"{V3}/createRoom", {"initial_state": [{"type": "a", "content": []}]}),
        ("POST", f"{V3}/createRoom", {"power_level_content_override": "x"}),
        ("POST", f"{V3}/createRoom", {"creation_content": 5}),
        ("POST", f"{V3}/createRoom", {"visibility": "secret"}),
        ("POST", f"{V3}/createRoom", {"room_alias_name": "a:b"}),
        ("POST", f"{V3}/createRoom", {"is_direct": "yes"}),
        ("POST", f"{V3}/createRoom", {"power_level_content_override": {"users": {"@alice:test.local": "x"}}}),
        ("POST", f"{V3}/join/not-a-room", {}),
        ("POST", f"{V3}/join/%23nope:test.local", {}),
        ("POST", f"{V3}/join/!unknown:test.local", {}),
        ("POST", f"{V3}/rooms/not-a-room/join", {}),
        ("POST", f"{V3}/rooms/{room}/invite", {"user_id": 5}),
        ("POST", f"{V3}/rooms/{room}/invite", {"user_id": "nope"}),
        ("POST", f"{V3}/rooms/{room}/leave", {"reason": 5}),
        ("POST", f"{V3}/rooms/{room}/ban", {"user_id": ["x"]}),
        ("POST", f"{V3}/knock/{room}", {}),  # the room is public, not knockable
        ("PUT", f"{V3}/rooms/{room}/send/m.room.message/a", [1, 2]),
        ("PUT", f"{V3}/rooms/{room}/send/m.room.message/b", None),
        ("PUT", f"{V3}/rooms/{room}/state/m.room.member/{bob.user_id}", {"membership": 5}),
        ("PUT", f"{V3}/rooms/{room}/state/m.room.power_levels", {"users": {"@x:y": "high"}}),
        ("PUT", f"{V3}/rooms/{room}/redact/not-an-event/c", {}),
        ("PUT", f"{V3}/rooms/!other:test.local/send/m.room.message/d", {"msgtype": "m.text", "body": "x"}),
        ("GET", f"{V3}/rooms/{room}/messages?limit=abc", None),
        ("GET", f"{V3}/rooms/{room}/messages?dir=up", None),
        ("GET", f"{V3}/rooms/{room}/messages?from=t1", None),
        ("GET", f"{V3}/rooms/{room}/messages?filter=%5B%5D", None),
        ("GET", f"{V3}/rooms/{room}/messages?filter=%7B%22types%22%3A5%7D", None),
        ("GET", f"{V3}/rooms/{room}/context/{eid}?limit=x", None),
        ("GET", f"{V3}/rooms/{room}/members?at=zzz", None),
        ("GET", f"{V3}/rooms/{room}/state/m.room.nothing/", None),
        ("GET", f"{V3}/rooms/{room}/event/$nothing", None),
        ("GET", f"{V1}/rooms/{room}/relations/{eid}?dir=sideways", None),
        ("GET", f"{V1}/rooms/{room}/relations/{eid}?from=bad", None),
        ("GET", f"{V1}/rooms/{room}/threads?include=some", None),
        ("GET", f"{V1}/rooms/{room}/threads?from=bad", None),
        ("PUT", f"{V3}/directory/room/nope", {"room_id": room}),
        ("PUT", f"{V3}/directory/room/%23a:test.local", {"room_id": 5}),
        ("PUT", f"{V3}/directory/room/%23a:test.local", {"room_id": "bad"}),
        ("GET", f"{V3}/directory/room/bad", None),
        ("DELETE", f"{V3}/directory/room/%23none:test.local", None),
        ("PUT", f"{V3}/directory/list/room/{room}", {"visibility": "everyone"}),
        ("GET", f"{V3}/directory/list/room/!none:test.local", None),
        ("POST", f"{V3}/publicRooms", {"limit": "x"}),
        ("POST", f"{V3}/publicRooms", {"filter": "x"}),
        ("GET", f"{V1}/room_summary/bad", None),
    ]
    for method, path, body in cases:
        status, resp = await alice.request(method, path, body)
        assert 400 <= status < 500, (method, path, status, resp)
        assert resp["errcode"].startswith("M_") and resp["error"], (path, resp)
    # nothing was created or sent
    assert hs.event_stream.current_position() == before
    status, joined = await alice.get(f"{V3}/joined_rooms")
    assert joined["joined_rooms"] == [room]
