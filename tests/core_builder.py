"""Shared helpers for the core tests: a small room/DAG builder.

Events built here are real PDUs for their room version (v3+ IDs are
reference hashes; v1/v2 get ``$<n>:<server>`` IDs); they are not signed,
since auth and state resolution do not look at signatures.
"""

from __future__ import annotations

from typing import Any, Iterable

from homeserver.core.auth import auth_types_for_event
from homeserver.core.events import Event
from homeserver.core.room_versions import RoomVersion, get_room_version

ALICE = "@alice:a.example"
BOB = "@bob:b.example"
CAROL = "@carol:c.example"
DAVE = "@dave:d.example"


class RoomBuilder:
    """Builds a room's DAG event by event.

    ``state`` maps ``(type, state_key)`` to event IDs for the branch being
    built; pass another dict as ``state=`` to build on a fork.
    """

    def __init__(self, room_version: str | RoomVersion = "10", creator: str = ALICE) -> None:
        self.rv = room_version if isinstance(room_version, RoomVersion) else get_room_version(room_version)
        self.creator = creator
        self.events: dict[str, Event] = {}
        self.state: dict[tuple[str, str], str] = {}
        self.room_id: str | None = None if self.rv.room_id_from_create_event else "!room:a.example"
        self.ts = 1000
        self.last: list[str] = []
        self.n = 0

    # --- building -----------------------------------------------------------

    def pdu(self, type_: str, sender: str, content: dict[str, Any], state_key: str | None = None,
            *, state: dict | None = None, prev: list[str] | None = None, auth: list[str] | None = None,
            ts: int | None = None, extra: dict | None = None) -> dict[str, Any]:
        state = self.state if state is None else state
        if auth is None:
            keys = auth_types_for_event(type_, sender, state_key, content, self.rv)
            auth = [state[k] for k in keys if k in state]
        prev = self.last if prev is None else prev
        self.ts += 1
        self.n += 1
        depth = 1 + max((self.events[p].depth for p in prev if p in self.events), default=0)
        pdu: dict[str, Any] = {
            "type": type_, "sender": sender, "content": content, "depth": depth,
            "origin_server_ts": self.ts if ts is None else ts,
            "prev_events": list(prev), "auth_events": list(auth),
            "hashes": {"sha256": "AAAA"}, "signatures": {},
        }
        if self.room_id is not None:
            pdu["room_id"] = self.room_id
        if state_key is not None:
            pdu["state_key"] = state_key
        if self.rv.event_id_format == "v1":
            pdu["event_id"] = f"${self.n}:a.example"
            pdu["prev_events"] = [[p, {"sha256": "AAAA"}] for p in prev]
            pdu["auth_events"] = [[a, {"sha256": "AAAA"}] for a in auth]
        if extra:
            pdu.update(extra)
        return pdu

    def event(self, *args: Any, **kw: Any) -> Event:
        """Build an event without adding it to the DAG."""
        return Event(self.pdu(*args, **kw), self.rv)

    def add(self, type_: str, sender: str, content: dict[str, Any], state_key: str | None = None,
            *, state: dict | None = None, **kw: Any) -> Event:
        """Build an event, record it, and apply it to ``state``."""
        state = self.state if state is None else state
        ev = self.event(type_, sender, content, state_key, state=state, **kw)
        self.events[ev.event_id] = ev
        if self.room_id is None:
            self.room_id = ev.room_id
        if state_key is not None:
            state[(type_, state_key)] = ev.event_id
        if state is self.state:
            self.last = [ev.event_id]
        return ev

    def create_room(self, join_rule: str = "public", power_users: dict[str, int] | None = None,
                    create_content: dict[str, Any] | None = None) -> "RoomBuilder":
        content = {"room_version": self.rv.identifier}
        if not self.rv.implicit_room_creator:
            content["creator"] = self.creator
        content.update(create_content or {})
        self.add("m.room.create", self.creator, content, "", prev=[])
        self.add("m.room.member", self.creator, {"membership": "join"}, self.creator)
        users = {} if self.rv.creators_have_infinite_power else {self.creator: 100}
        users.update(power_users or {})
        self.add("m.room.power_levels", self.creator, {"users": users}, "")
        self.add("m.room.join_rules", self.creator, {"join_rule": join_rule}, "")
        return self

    def join(self, user: str, **kw: Any) -> Event:
        return self.add("m.room.member", user, {"membership": "join"}, user, **kw)

    # --- views ----------------------------------------------------------------

    def auth_state(self, state: dict | None = None) -> dict[tuple[str, str], Event]:
        state = self.state if state is None else state
        return {k: self.events[v] for k, v in state.items()}

    def fetch_event(self, event_id: str) -> Event | None:
        return self.events.get(event_id)

    def auth_chain(self, event_ids: Iterable[str]) -> set[str]:
        seen: set[str] = set()
        todo = [a for e in event_ids if e in self.events for a in self.events[e].auth_event_ids]
        while todo:
            eid = todo.pop()
            if eid in seen or eid not in self.events:
                continue
            seen.add(eid)
            todo.extend(self.events[eid].auth_event_ids)
        return seen
