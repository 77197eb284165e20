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
"""
from __future__ import annotations

from typing import Mapping, Sequence

from homeserver.api.errors import forbidden
from homeserver.rooms.state_cache import RoomState
from homeserver.storage.events import EventStore, StoredEvent
from homeserver.storage.state import StateStore

HV = ("m.room.history_visibility", "")


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
                                    user_id)
        out = []
        for stored in events:
            ev = stored.event
            if user_id is not None and ev.type == "m.room.member" and ev.state_key == user_id:
                out.append(stored)
                continue
            g = groups.get(ev.event_id)
            hv, membership = values.get(g[2], ("shared", None)) if g else ("shared", None)
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

    async def _values(self, room_id: str, groups: set[int], user_id: str | None) -> dict[int, tuple[str, str | None]]:
        """``group -> (history_visibility, the user's membership)``."""
        keys = [HV] + ([("m.room.member", user_id)] if user_id is not None else [])
        maps = await self._state.get_groups_values(room_id, groups, keys)
        wanted = set()
        for m in maps.values():
            if HV in m:
                wanted.add(m[HV])
            if user_id is not None and ("m.room.member", user_id) in m:
                wanted.add(m[("m.room.member", user_id)])
        found = await self._events.get_events(wanted, allow_rejected=True)
        out: dict[int, tuple[str, str | None]] = {}
        for g, m in maps.items():
            hv_ev = found.get(m.get(HV, ""))
            hv = hv_ev.event.content.get("history_visibility") if hv_ev else None
            mem_ev = found.get(m.get(("m.room.member", user_id or ""), ""))
            membership = mem_ev.event.membership if mem_ev else None
            out[g] = (hv if isinstance(hv, str) else "shared", membership)
        return out
