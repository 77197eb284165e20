"""Event core benchmarks: the two performance targets of the core.

1. Authorising a message against a 500-member room's state (< 50 µs).
2. Resolving two forks of a 500-member room with 20 conflicted events
   (< 100 ms), including the caller-side auth chain lookups a store with a
   per-event chain cache would answer.

Run: ``python bench/core_bench.py`` from the repository root.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any, Iterable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from homeserver.core.auth import auth_types_for_event, check_auth  # noqa: E402
from homeserver.core.events import Event  # noqa: E402
from homeserver.core.room_versions import RoomVersion, get_room_version  # noqa: E402
from homeserver.core.state_res import resolve_state  # noqa: E402

ALICE = "@alice:a.example"


class Room:
    """Just enough of a DAG builder to make realistic rooms."""

    def __init__(self, rv: RoomVersion) -> None:
        self.rv = rv
        self.events: dict[str, Event] = {}
        self.room_id: str | None = None if rv.room_id_from_create_event else "!bench:a.example"
        self.ts = 0
        self.last: list[str] = []
        self._chains: dict[str, frozenset[str]] = {}

    def add(self, state: dict, type_: str, sender: str, content: dict[str, Any], state_key: str | None = None,
            prev: list[str] | None = None) -> Event:
        keys = auth_types_for_event(type_, sender, state_key, content, self.rv)
        self.ts += 1
        prev = self.last if prev is None else prev
        pdu: dict[str, Any] = {
            "type": type_, "sender": sender, "content": content, "depth": self.ts,
            "origin_server_ts": self.ts, "prev_events": prev,
            "auth_events": [state[k] for k in keys if k in state],
            "hashes": {"sha256": "AAAA"}, "signatures": {},
        }
        if self.room_id:
            pdu["room_id"] = self.room_id
        if state_key is not None:
            pdu["state_key"] = state_key
        if self.rv.event_id_format == "v1":
            pdu["event_id"] = f"${self.ts}:a.example"
            pdu["prev_events"] = [[p, {"sha256": "AAAA"}] for p in pdu["prev_events"]]
            pdu["auth_events"] = [[a, {"sha256": "AAAA"}] for a in pdu["auth_events"]]
        ev = Event(pdu, self.rv)
        self.room_id = self.room_id or ev.room_id
        self.events[ev.event_id] = ev
        if state_key is not None:
            state[(type_, state_key)] = ev.event_id
        self.last = [ev.event_id]
        return ev

    def chain(self, eid: str) -> frozenset[str]:
        """Memoised auth chain, as a store's chain cache would provide."""
        got = self._chains.get(eid)
        if got is None:
            acc: set[str] = set()
            for a in self.events[eid].auth_event_ids:
                acc.add(a)
                acc |= self.chain(a)
            got = self._chains[eid] = frozenset(acc)
        return got

    def auth_chain(self, ids: Iterable[str]) -> set[str]:
        out: set[str] = set()
        for eid in ids:
            out |= self.chain(eid)
        return out


def build_room(version: str, members: int) -> tuple[Room, dict]:
    rv = get_room_version(version)
    room = Room(rv)
    state: dict = {}
    create = {"room_version": version}
    if not rv.implicit_room_creator:
        create["creator"] = ALICE
    room.add(state, "m.room.create", ALICE, create, "", prev=[])
    room.add(state, "m.room.member", ALICE, {"membership": "join"}, ALICE)
    users = {} if rv.creators_have_infinite_power else {ALICE: 100}
    users.update({f"@mod{i}:m.example": 50 for i in range(5)})
    room.add(state, "m.room.power_levels", ALICE, {"users": users}, "")
    room.add(state, "m.room.join_rules", ALICE, {"join_rule": "public"}, "")
    for i in range(5):
        room.add(state, "m.room.member", f"@mod{i}:m.example", {"membership": "join"}, f"@mod{i}:m.example")
    for i in range(members - 6):
        user = f"@user{i}:u{i % 20}.example"
        room.add(state, "m.room.member", user, {"membership": "join"}, user)
    return room, state


def bench_auth(version: str, members: int = 500, n: int = 20000) -> float:
    room, state = build_room(version, members)
    auth_state = {k: room.events[v] for k, v in state.items()}
    msg = room.add(dict(state), "m.room.message", "@user7:u7.example", {"msgtype": "m.text", "body": "hi"})
    check_auth(msg, auth_state)  # warm up / sanity
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            check_auth(msg, auth_state)
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return min(runs)


def build_forks(version: str, members: int = 500) -> tuple[Room, list[dict]]:
    room, base = build_room(version, members)
    fork_point = list(room.last)
    a, b = dict(base), dict(base)
    # Fork A: a moderator's housekeeping: topic, name, kicks, a power change.
    room.last = fork_point
    room.add(a, "m.room.topic", "@mod0:m.example", {"topic": "a"}, "")
    room.add(a, "m.room.name", "@mod0:m.example", {"name": "A"}, "")
    for i in range(6):
        room.add(a, "m.room.member", "@mod0:m.example", {"membership": "leave"}, f"@user{i}:u{i % 20}.example")
    pl = dict(room.events[base[("m.room.power_levels", "")]].content["users"])
    pl["@user100:u0.example"] = 10
    room.add(a, "m.room.power_levels", ALICE, {"users": pl}, "")
    room.add(a, "m.room.topic", ALICE, {"topic": "a2"}, "")
    # Fork B: other members act concurrently: bans, display names, a topic.
    room.last = fork_point
    room.add(b, "m.room.topic", "@mod1:m.example", {"topic": "b"}, "")
    for i in range(20, 23):
        room.add(b, "m.room.member", "@mod1:m.example", {"membership": "ban"}, f"@user{i}:u{i % 20}.example")
    for i in range(10, 16):
        user = f"@user{i}:u{i % 20}.example"
        room.add(b, "m.room.member", user, {"membership": "join", "displayname": f"U{i}"}, user)
    room.add(b, "m.room.avatar", "@mod1:m.example", {"url": "mxc://b/x"}, "")
    room.add(b, "m.room.history_visibility", "@mod1:m.example", {"history_visibility": "joined"}, "")
    conflicted = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    assert len(conflicted) == 20, len(conflicted)
    return room, [a, b]


def bench_state_res(version: str, members: int = 500, n: int = 30) -> tuple[float, int]:
    room, forks = build_forks(version, members)
    conflicted = {k for k in forks[0].keys() | forks[1].keys() if forks[0].get(k) != forks[1].get(k)}
    times = []
    for _ in range(n):
        room._chains.clear()  # cold chain cache each time: count the chain walk too
        t0 = time.perf_counter()
        resolve_state(room.rv, forks, room.events.get, room.auth_chain)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), len(conflicted)


def main() -> None:
    print(f"python {sys.version.split()[0]}")
    for version in ("10", "12"):
        us = bench_auth(version)
        print(f"auth: message in 500-member room, v{version}: {us:.1f} µs/check (target < 50)")
    for version in ("10", "11", "12"):
        ms, nconf = bench_state_res(version)
        print(f"state res: 2 forks of 500-member room, {nconf} conflicted keys, v{version}: "
              f"{ms:.2f} ms median (target < 100)")
    v1ms, nconf = bench_state_res("1")
    print(f"state res (room v1 algorithm), {nconf} conflicted keys: {v1ms:.2f} ms median")


if __name__ == "__main__":
    main()
