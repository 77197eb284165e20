"""The scheduler with a fake clock: order, batching, one in flight, backoff, overflow, ephemeral."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest_twisted
from twisted.internet import defer, task

from appservice.api import PushError
from appservice.interest import Interest
from appservice.registration import parse_registration
from appservice.scheduler import AppserviceScheduler
from appservice.store import ServiceState, StoredTxn
from homeserver.util.clock import Clock

from fake_appservice import registration

SERVICE = parse_registration(registration("http://as"), "test.local")
PUPPET = "@wechat_a:test.local"


@dataclass
class Ev:
    room_id: str
    sender: str
    type: str = "m.room.message"
    state_key: str | None = None
    content: dict = field(default_factory=dict)


@dataclass
class Item:
    event: Ev
    stream_ordering: int
    joined_members: frozenset = frozenset()


class MemoryStore:
    def __init__(self) -> None:
        self.state = ServiceState(0, 0)
        self.txns: dict[int, StoredTxn] = {}

    async def load(self, as_id, initial):
        return self.state, sorted(self.txns.values(), key=lambda t: t.txn_id)

    async def create_txn(self, as_id, txn_id, pos, body):
        self.txns[txn_id] = StoredTxn(txn_id, pos, body)
        self.state = ServiceState(self.state.stream_position, txn_id)

    async def complete_txn(self, as_id, txn_id, pos):
        del self.txns[txn_id]
        self.state = ServiceState(max(pos, self.state.stream_position), self.state.last_txn_id)

    async def set_position(self, as_id, pos):
        self.state = ServiceState(max(pos, self.state.stream_position), self.state.last_txn_id)


class Pusher:
    """Each push waits on a Deferred the test fires: success or PushError."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, dict[str, Any], defer.Deferred]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def push(self, service, txn_id, body):
        d: defer.Deferred = defer.Deferred()
        self.calls.append((txn_id, json.loads(body), d))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await d
        finally:
            self.in_flight -= 1

    def answer(self, ok: bool = True) -> None:
        d = self.calls[-1][2]
        if ok:
            d.callback(None)
        else:
            d.errback(PushError("down"))


class CatchUp:
    def __init__(self, items: list[Item]) -> None:
        self.items = items

    async def read(self, after, upto, limit):
        found = [i for i in self.items if after < i.stream_ordering <= upto][:limit]
        return found, (found[-1].stream_ordering if len(found) == limit else upto)


def make(clock: task.Clock, store=None, catch_up_items=(), **kw):
    pusher = Pusher()
    sched = AppserviceScheduler([SERVICE], store or MemoryStore(), pusher, Clock(clock), Interest([SERVICE]),
                                lambda item: {"n": item.stream_ordering}, CatchUp(list(catch_up_items)), **kw)
    return sched, pusher


def msg(n: int, sender: str = PUPPET, room: str = "!r:test.local") -> Item:
    return Item(Ev(room, sender), n)


def sent(pusher: Pusher) -> list[int]:
    return [e["n"] for _, body, _ in pusher.calls for e in body["events"]]


@pytest_twisted.ensureDeferred
async def test_order_batching_and_one_in_flight():
    clock = task.Clock()
    sched, pusher = make(clock, batch_size=2)
    await sched.start(0)
    sched.on_events([msg(1)])
    sched.on_events([msg(2), msg(3, sender="@human:test.local"), msg(4)])  # 3: no interest
    assert len(pusher.calls) == 1 and pusher.max_in_flight == 1
    pusher.answer()
    assert [c[0] for c in pusher.calls] == [1, 2] and pusher.calls[1][1]["events"] == [{"n": 2}, {"n": 4}]
    pusher.answer()
    assert sent(pusher) == [1, 2, 4] and pusher.max_in_flight == 1


@pytest_twisted.ensureDeferred
async def test_backoff_retries_same_transaction():
    clock = task.Clock()
    sched, pusher = make(clock, backoff_base_s=1.0, backoff_max_s=8.0)
    await sched.start(0)
    sched.on_events([msg(1)])
    delays = []
    for _ in range(5):
        pusher.answer(ok=False)
        delays.append(clock.getDelayedCalls()[0].getTime() - clock.seconds())
        sched.on_events([msg(10 + len(delays))])  # new events wait behind the failing transaction
        clock.advance(delays[-1])
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert {c[0] for c in pusher.calls} == {1} and all(c[1]["events"] == [{"n": 1}] for c in pusher.calls)
    pusher.answer()
    assert pusher.calls[-1][0] == 2 and sent(pusher)[-5:] == [11, 12, 13, 14, 15]
    pusher.answer()
    assert not clock.getDelayedCalls()


@pytest_twisted.ensureDeferred
async def test_retry_now_skips_the_wait():
    clock = task.Clock()
    sched, pusher = make(clock)
    await sched.start(0)
    sched.on_events([msg(1)])
    pusher.answer(ok=False)
    sched.retry_now(SERVICE)
    assert len(pusher.calls) == 2


@pytest_twisted.ensureDeferred
async def test_restart_resends_stored_txn_then_catches_up():
    clock = task.Clock()
    store = MemoryStore()
    sched, pusher = make(clock, store=store)
    await sched.start(0)
    sched.on_events([msg(1), msg(2)])
    pusher.answer(ok=False)
    await sched.stop()
    assert list(store.txns) == [1]
    # restarted: events 3..5 were persisted meanwhile (4 is of no interest)
    later = [msg(3), msg(4, sender="@human:test.local"), msg(5)]
    sched2, pusher2 = make(clock, store=store, catch_up_items=later)
    await sched2.start(5)
    sched2.on_events([msg(6)])
    assert pusher2.calls[0][0] == 1 and pusher2.calls[0][1]["events"] == [{"n": 1}, {"n": 2}]
    pusher2.answer()
    pusher2.answer()
    pusher2.answer()
    assert sent(pusher2) == [1, 2, 3, 5, 6] and [c[0] for c in pusher2.calls] == [1, 2, 3]
    assert store.state.stream_position == 6 and not store.txns


@pytest_twisted.ensureDeferred
async def test_overflow_reads_back_from_database():
    clock = task.Clock()
    items = [msg(n) for n in range(1, 8)]
    sched, pusher = make(clock, catch_up_items=items, max_pending=3, batch_size=4)
    await sched.start(0)
    sched.on_events(items[:1])
    pusher.answer(ok=False)
    sched.on_events(items[1:])  # 6 queued > max_pending: dropped from memory
    clock.advance(1)
    pusher.answer()
    pusher.answer()
    pusher.answer()
    assert sent(pusher) == [1, 1, 2, 3, 4, 5, 6, 7]


@pytest_twisted.ensureDeferred
async def test_ephemeral_rides_along():
    clock = task.Clock()
    sched, pusher = make(clock)
    await sched.start(0)
    room = "!r:test.local"
    sched.on_room_ephemeral(room, {"type": "m.typing", "content": {"user_ids": [PUPPET]}}, [PUPPET])
    sched.on_room_ephemeral("!other:test.local", {"type": "m.typing", "content": {"user_ids": []}},
                            ["@human:test.local"])
    receipt = {"type": "m.receipt", "content": {"$e": {
        "m.read.private": {"@human:test.local": {"ts": 1}}, "m.read": {"@human:test.local": {"ts": 1}}}}}
    sched.on_room_ephemeral(room, receipt, [PUPPET])
    pusher.answer()
    bodies = [c[1] for c in pusher.calls]
    eph = [e for b in bodies for e in b.get("ephemeral", [])]
    assert eph[0] == {"type": "m.typing", "content": {"user_ids": [PUPPET]}, "room_id": room}
    assert eph[1]["content"] == {"$e": {"m.read": {"@human:test.local": {"ts": 1}}}}
    assert len(eph) == 2
    sched.on_presence("@wechat_b:test.local", {"type": "m.presence", "sender": "@wechat_b:test.local"}, [])
    pusher.answer()
    assert pusher.calls[-1][1]["ephemeral"][0]["type"] == "m.presence"
