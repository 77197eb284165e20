"""The six receipt checks on a PDU, over an in-memory room (no network, no database)."""
from __future__ import annotations

import pytest
import pytest_twisted
from signedjson.key import generate_signing_key

from federation.inbound import PduChecker, PduDropped
from homeserver.core.auth import state_map
from homeserver.core.events import Event
from homeserver.core.room_versions import get_room_version
from homeserver.core.signing import add_hashes_and_signatures

RV = get_room_version("10")
KEY = generate_signing_key("k")
ROOM = "!room:a.org"
ALICE, BOB = "@alice:a.org", "@bob:a.org"


def make(etype, sender, content, state_key=None, prev=(), auth=(), depth=1, key=KEY):
    pdu = {"room_id": ROOM, "type": etype, "sender": sender, "content": content, "depth": depth,
           "origin_server_ts": 1000 + depth, "prev_events": [e.event_id for e in prev],
           "auth_events": [e.event_id for e in auth]}
    if state_key is not None:
        pdu["state_key"] = state_key
    return add_hashes_and_signatures(pdu, RV, "a.org", key)


class Room:
    """A RoomEventSource over a dict, with the state before every event stored."""

    def __init__(self):
        self.events: dict[str, Event] = {}
        self.state_after: dict[str, dict] = {}
        self.current: dict = {}

    def add(self, pdu):
        ev = Event(pdu, RV)
        before = dict(self.current)
        self.events[ev.event_id] = ev
        after = dict(before)
        if ev.state_key is not None:
            after[(ev.type, ev.state_key)] = ev
        self.state_after[ev.event_id] = after
        self.current = after
        return ev

    async def room_version(self, room_id):
        return RV

    async def get_events(self, ids):
        return {i: self.events[i] for i in ids if i in self.events}

    async def state_before(self, room_id, prev_ids):
        if not all(p in self.state_after for p in prev_ids):
            return None
        return dict(self.state_after[prev_ids[0]])

    async def current_state(self, room_id):
        return dict(self.current)


@pytest.fixture
def room():
    r = Room()
    create = r.add(make("m.room.create", ALICE, {"room_version": "10"}, "", depth=1))
    join = r.add(make("m.room.member", ALICE, {"membership": "join"}, ALICE, [create], [create], 2))
    pl = r.add(make("m.room.power_levels", ALICE, {"users": {ALICE: 100}, "events_default": 0,
                                                  "state_default": 50, "ban": 50, "kick": 50},
                    "", [join], [create, join], 3))
    jr = r.add(make("m.room.join_rules", ALICE, {"join_rule": "public"}, "", [pl], [create, join, pl], 4))
    bob = r.add(make("m.room.member", BOB, {"membership": "join"}, BOB, [jr], [create, pl, jr], 5))
    r.ids = {"create": create, "join": join, "pl": pl, "jr": jr, "bob": bob}
    return r


async def _key(server, kid, ts):
    return KEY.verify_key if server == "a.org" else None


@pytest_twisted.ensureDeferred
async def test_good_event_is_accepted(room):
    i = room.ids
    pdu = make("m.room.message", BOB, {"body": "hi"}, None, [i["bob"]], [i["create"], i["pl"], i["bob"]], 6)
    outcome = await PduChecker(_key, room).check(pdu, RV)
    assert not outcome.rejected_reason and not outcome.soft_failed and not outcome.redacted_for_bad_hash


@pytest_twisted.ensureDeferred
async def test_each_check(room):
    i = room.ids
    checker = PduChecker(_key, room)
    auth = [i["create"], i["pl"], i["bob"]]
    # 1. format
    with pytest.raises(PduDropped):
        await checker.check({"type": "m.room.message"}, RV)
    # 2. signature by another key
    with pytest.raises(PduDropped):
        await checker.check(make("m.room.message", BOB, {}, None, [i["bob"]], auth, 6, generate_signing_key("k")), RV)
    # 3. bad hash: processed redacted
    pdu = make("m.room.message", BOB, {"body": "x"}, None, [i["bob"]], auth, 6)
    pdu["content"] = {"body": "changed"}
    outcome = await checker.check(pdu, RV)
    assert outcome.redacted_for_bad_hash and outcome.event.content == {}
    # 4. auth events: Bob can't set power levels
    coup = make("m.room.power_levels", BOB, {"users": {BOB: 100}}, "", [i["bob"]], auth, 6)
    assert "auth events" in (await checker.check(coup, RV)).rejected_reason
    # 5. state before: an event citing Alice's join auth-wise but sent after Bob... cites a prev
    #    where Bob is not yet joined.
    early = make("m.room.message", BOB, {"body": "early"}, None, [i["jr"]], auth, 5)
    assert "state before" in (await checker.check(early, RV)).rejected_reason
    # 6. current state: Bob was kicked since; his message extending an older event soft-fails.
    kick = room.add(make("m.room.member", ALICE, {"membership": "leave"}, BOB, [i["bob"]],
                         [i["create"], i["pl"], i["join"], i["bob"]], 6))
    late = make("m.room.message", BOB, {"body": "late"}, None, [i["bob"]], auth, 6)
    outcome = await checker.check(late, RV)
    assert outcome.soft_failed and not outcome.rejected_reason
    assert kick.event_id in {e.event_id for e in state_map(room.current.values()).values()}
    # unknown prev events
    class Unknown:
        event_id = "$unknown"

    with pytest.raises(PduDropped, match="prev events"):
        await checker.check(make("m.room.message", BOB, {}, None, [Unknown()], auth, 6), RV)
