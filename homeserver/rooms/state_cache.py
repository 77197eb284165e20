"""Each room's current state in memory: state events, members, power levels.

A :class:`RoomState` is loaded from the database the first time a room is
used and then kept up to date by the persister after every commit, so a
normal send reads no state from the database.

Besides the committed state, a room carries a small *pending* overlay: the
state, extremities and depth including events that have been built and
queued for persistence but are not yet committed. Local events are built
against this "tip", so several sends to one room can be in flight (and be
group-committed) without forking the DAG. The overlay empties when the
room's queue drains.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from twisted.internet import defer

from homeserver.core.events import Event
from homeserver.core.power_levels import PowerLevels
from homeserver.core.room_versions import RoomVersion, get_room_version
from homeserver.storage.events import EventStore
from homeserver.storage.rooms import RoomStore
from homeserver.storage.state import StateStore

StateKey = tuple[str, str]


class RoomState:
    """The current (committed) state of one room, plus the pending overlay."""

    def __init__(self, room_id: str, room_version: RoomVersion) -> None:
        self.room_id = room_id
        self.room_version = room_version
        self.state: dict[StateKey, Event] = {}
        self.extremities: list[str] = []
        self.depth = 0
        #: The state group holding :attr:`state`; None when unknown (e.g. after a fork).
        self.state_group: int | None = None
        self.joined: set[str] = set()
        self.invited: set[str] = set()
        self._power_levels: PowerLevels | None = None
        # the pending overlay (events queued, not yet committed)
        self.pending_state: dict[StateKey, Event] = {}
        self.pending_extremities: list[str] = []
        self.pending_depth = 0
        self.pending_count = 0

    # --- committed state ---------------------------------------------------

    def get(self, etype: str, state_key: str = "") -> Event | None:
        return self.state.get((etype, state_key))

    def membership(self, user_id: str) -> str | None:
        ev = self.state.get(("m.room.member", user_id))
        return ev.membership if ev is not None else None

    @property
    def power_levels(self) -> PowerLevels:
        if self._power_levels is None:
            self._power_levels = PowerLevels.from_events(
                self.get("m.room.power_levels"), self.get("m.room.create"), self.room_version)
        return self._power_levels

    def content(self, etype: str, state_key: str = "") -> dict[str, Any]:
        ev = self.get(etype, state_key)
        return ev.content if ev is not None else {}

    @property
    def join_rule(self) -> str:
        rule = self.content("m.room.join_rules").get("join_rule")
        return rule if isinstance(rule, str) else "invite"

    @property
    def history_visibility(self) -> str:
        hv = self.content("m.room.history_visibility").get("history_visibility")
        return hv if isinstance(hv, str) else "shared"

    def state_ids(self) -> dict[StateKey, str]:
        return {k: e.event_id for k, e in self.state.items()}

    def set_state(self, new_state: Mapping[StateKey, Event]) -> None:
        """Replace the committed state (recomputing members and power levels)."""
        self.state = dict(new_state)
        self._power_levels = None
        self.joined = {k[1] for k, e in self.state.items() if k[0] == "m.room.member" and e.membership == "join"}
        self.invited = {k[1] for k, e in self.state.items() if k[0] == "m.room.member" and e.membership == "invite"}

    def apply(self, event: Event) -> None:
        """Apply one committed state event (cheap incremental update)."""
        key = (event.type, event.state_key or "")
        self.state[key] = event
        if event.type == "m.room.member":
            user = key[1]
            self.joined.discard(user)
            self.invited.discard(user)
            if event.membership == "join":
                self.joined.add(user)
            elif event.membership == "invite":
                self.invited.add(user)
        elif event.type in ("m.room.power_levels", "m.room.create"):
            self._power_levels = None

    # --- the tip: committed state plus queued events ------------------------

    def tip_get(self, etype: str, state_key: str = "") -> Event | None:
        key = (etype, state_key)
        ev = self.pending_state.get(key)
        return ev if ev is not None else self.state.get(key)

    def tip_extremities(self) -> list[str]:
        return list(self.pending_extremities) if self.pending_count else list(self.extremities)

    def tip_depth(self) -> int:
        return self.pending_depth if self.pending_count else self.depth

    def tip_joined_count(self) -> int:
        """How many users are joined at the tip (committed joins plus queued membership changes)."""
        count = len(self.joined)
        for (etype, user), ev in self.pending_state.items():
            if etype == "m.room.member":
                count += (ev.membership == "join") - (user in self.joined)
        return count

    def tip_power_levels(self) -> PowerLevels:
        if not self.pending_count:
            return self.power_levels
        return PowerLevels.from_events(self.tip_get("m.room.power_levels"), self.tip_get("m.room.create"),
                                       self.room_version)

    def reserve(self, event: Event) -> None:
        """Record a built, queued event in the overlay (it becomes the tip)."""
        if not self.pending_count:
            self.pending_depth = self.depth
        self.pending_count += 1
        self.pending_extremities = [event.event_id]
        self.pending_depth = max(self.pending_depth, event.depth)
        if event.state_key is not None:
            self.pending_state[(event.type, event.state_key)] = event

    def release(self, count: int = 1) -> None:
        """Queued events were committed (or failed): shrink the overlay."""
        self.pending_count = max(0, self.pending_count - count)
        if not self.pending_count:
            self.pending_state.clear()
            self.pending_extremities = []

    def reset_pending(self) -> None:
        self.pending_count = 0
        self.pending_state.clear()
        self.pending_extremities = []


class StateCache:
    """Room states by room ID, loaded on first use."""

    def __init__(self, rooms: RoomStore, events: EventStore, state: StateStore) -> None:
        self._rooms = rooms
        self._events = events
        self._state = state
        self._cache: dict[str, RoomState] = {}
        self._loading: dict[str, list[defer.Deferred[RoomState | None]]] = {}

    def peek(self, room_id: str) -> RoomState | None:
        """The room if it is loaded (no I/O)."""
        return self._cache.get(room_id)

    def put(self, room: RoomState) -> None:
        self._cache[room.room_id] = room

    async def get(self, room_id: str) -> RoomState | None:
        """The room's state, loading it once; None for a room this server doesn't know."""
        room = self._cache.get(room_id)
        if room is not None:
            return room
        if room_id in self._loading:
            d: defer.Deferred[RoomState | None] = defer.Deferred()
            self._loading[room_id].append(d)
            return await d
        self._loading[room_id] = []
        try:
            room = await self._load(room_id)
        except BaseException as e:
            for w in self._loading.pop(room_id):
                w.errback(e)
            raise
        if room is not None:
            self._cache.setdefault(room_id, room)
            room = self._cache[room_id]
        for w in self._loading.pop(room_id):
            w.callback(room)
        return room

    async def _load(self, room_id: str) -> RoomState | None:
        info = await self._rooms.get_room(room_id)
        if info is None:
            return None
        room = RoomState(room_id, get_room_version(info.room_version))
        ids = await self._state.get_current_state_ids(room_id)
        found = await self._events.get_events(ids.values(), allow_rejected=True)
        # Redacted state counts in its redacted form (auth reads it that way too).
        room.set_state({k: found[e].visible_event for k, e in ids.items() if e in found})
        room.extremities = await self._events.get_forward_extremities(room_id)
        ext = await self._events.get_events(room.extremities)
        room.depth = max((s.event.depth for s in ext.values()), default=0)
        if len(room.extremities) == 1:
            groups = await self._state.get_event_groups(room.extremities, room_id)
            if room.extremities[0] in groups:
                room.state_group = groups[room.extremities[0]][2]
        return room

    def forget(self, room_ids: Iterable[str]) -> None:
        """Drop rooms from memory (they are reloaded on next use)."""
        for r in room_ids:
            self._cache.pop(r, None)
