"""History visibility: which events of a room a user may read.

:meth:`Visibility.filter_events` is the one function every read path calls
(/messages, /context, /event, /relations, /threads, /members?at, /sync).

Rules (``m.room.history_visibility`` and the reader's membership, both as of
the state *after* each event, so a user sees their own join):

* ``world_readable``: everyone, members or not;
* the reader's own membership events: always;
* membership ``join`` at the event: visible;
* ``shared``: visible if the reader is joined now (the spec also allows a
  reader who joined at any point after the event and has since left; we
  approximate with current membership, as it needs no history scan);
* ``invited``: visible if the reader was invited (or joined) at the event;
* ``joined``: only with membership ``join`` at the event.

:meth:`Visibility.check_can_read_room` is the room-level gate: a user who
was never in a non-world-readable room reads nothing of it (M_FORBIDDEN).

:meth:`Visibility.hidden_from_server` applies the same rules to a server
(federation ``/event``, ``/backfill``, ``/get_missing_events``), counting
all of its users: the events it names are served redacted, not dropped, so
the requesting server can still verify them and its DAG has no holes.
State events are never hidden (every server in the room resolves and
authorises with them). For ``shared``, "the reader joined at some point
after the event" becomes "the server has a user joined now", as for users.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from homeserver.api.errors import forbidden
from homeserver.core.events import Event
from homeserver.rooms.state_cache import RoomState
from homeserver.storage.events import EventStore, StoredEvent
from homeserver.storage.state import StateStore

HV = ("m.room.history_visibility", "")
#: Above this many membership keys a state lookup reads whole (cached) state groups
#: rather than one SQL condition per key.
MAX_KEYS_PER_QUERY = 100


def _server_of(user_id: str) -> str:
    return user_id.partition(":")[2]


class Visibility:
    def __init__(self, events: EventStore, state: StateStore) -> None:
        self._events = events
        self._state = state

    def check_can_read_room(self, user_id: str | None, room: RoomState) -> str | None:
        """Raise M_FORBIDDEN unless the user may read some of the room's history.

        Returns:
            The user's current membership (None if never a member).
        """
        membership = room.membership(user_id) if user_id else None
        if membership in ("join", "leave", "ban", "invite", "knock"):
            return membership
        if room.history_visibility == "world_readable":
            return None
        raise forbidden("You are not a member of this room and it is not world-readable.")

    async def filter_events(self, user_id: str | None, room: RoomState, events: Sequence[StoredEvent],
                            groups: Mapping[str, tuple[str, int, int]] | None = None) -> list[StoredEvent]:
        """The events the user may see, in the given order.

        Args:
            groups: The events' state groups (``StateStore.get_event_groups``), when the
                caller read them in its own transaction already.
        """
        if not events:
            return []
        current = room.membership(user_id) if user_id else None
        if groups is None:
            groups = await self._state.get_event_groups([e.event_id for e in events], room.room_id)
        values = await self._values(room.room_id, {groups[e.event_id][2] for e in events if e.event_id in groups},
                                    [user_id] if user_id is not None else [])
        out = []
        for stored in events:
            ev = stored.event
            if user_id is not None and ev.type == "m.room.member" and ev.state_key == user_id:
                out.append(stored)
                continue
            g = groups.get(ev.event_id)
            hv, memberships = values.get(g[2], ("shared", [])) if g else ("shared", [])
            membership = memberships[0] if memberships else None
            if hv == "world_readable":
                out.append(stored)
            elif user_id is None:
                continue
            elif membership == "join":
                out.append(stored)
            elif hv == "shared" and current == "join":
                out.append(stored)
            elif hv == "invited" and membership == "invite":
                out.append(stored)
        return out

    async def hidden_from_server(self, server_name: str, room: RoomState, events: Sequence[Event],
                                 groups: Mapping[str, tuple[str, int, int]] | None = None) -> set[str]:
        """The IDs of the events ``server_name`` may only see redacted.

        Per non-state event, with the state after it (as for users): visible
        if ``world_readable``; if one of the server's users is joined there;
        if ``shared`` and one of them is joined now; if ``invited`` and one
        of them is invited there. Events without known state (outliers)
        count as ``shared``.
        """
        timeline = [e for e in events if not e.is_state()]
        if not timeline:
            return set()
        # Every user of the server that ever had a membership here: member keys never leave the state.
        users = [k[1] for k in room.state if k[0] == "m.room.member" and _server_of(k[1]) == server_name]
        joined_now = any(u in room.joined for u in users)
        if groups is None:
            groups = await self._state.get_event_groups([e.event_id for e in timeline], room.room_id)
        values = await self._values(room.room_id, {groups[e.event_id][2] for e in timeline if e.event_id in groups},
                                    users)
        hidden = set()
        for ev in timeline:
            g = groups.get(ev.event_id)
            hv, memberships = values.get(g[2], ("shared", [])) if g else ("shared", [])
            if hv == "world_readable" or "join" in memberships:
                continue
            if hv == "shared" and joined_now:
                continue
            if hv == "invited" and "invite" in memberships:
                continue
            hidden.add(ev.event_id)
        return hidden

    async def _values(self, room_id: str, groups: set[int], user_ids: Sequence[str]
                      ) -> dict[int, tuple[str, list[str]]]:
        """``group -> (history_visibility, the memberships the given users have there)``."""
        keys = [HV] + [("m.room.member", u) for u in user_ids]
        if len(keys) > MAX_KEYS_PER_QUERY:
            wanted_keys = set(keys)
            full = await self._state.get_groups_state([(room_id, g) for g in groups])
            maps = {g: {k: v for k, v in m.items() if k in wanted_keys} for g, m in full.items()}
        else:
            maps = await self._state.get_groups_values(room_id, groups, keys)
        found = await self._events.get_events({e for m in maps.values() for e in m.values()}, allow_rejected=True)
        out: dict[int, tuple[str, list[str]]] = {}
        for g, m in maps.items():
            hv_ev = found.get(m.get(HV, ""))
            hv = hv_ev.event.content.get("history_visibility") if hv_ev else None
            memberships = []
            for k, eid in m.items():
                mem_ev = found.get(eid) if k != HV else None
                if mem_ev is not None and mem_ev.event.membership is not None:
                    memberships.append(mem_ev.event.membership)
            out[g] = (hv if isinstance(hv, str) else "shared", memberships)
        return out
