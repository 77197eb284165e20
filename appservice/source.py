"""Adapters between the homeserver's rooms and the scheduler: catch-up reads and event formatting."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from homeserver.rooms.format import client_event, client_event_of
from homeserver.rooms.state_cache import StateCache
from homeserver.storage.events import EventStore
from homeserver.util.clock import Clock


@dataclass
class CaughtUpEvent:
    """A stored event read back from the database, shaped like a published ``PersistedEvent``."""

    event: Any
    stream_ordering: int
    joined_members: frozenset[str] | set[str]
    stored: Any


class DatabaseCatchUp:
    """Reads the events a service missed (restart, long outage) from the events table.

    Interest in them is judged with each room's *current* joined members.
    """

    def __init__(self, events: EventStore, rooms: StateCache) -> None:
        self._events = events
        self._rooms = rooms

    async def read(self, after: int, upto: int, limit: int) -> tuple[list[CaughtUpEvent], int]:
        stored, scanned = await self._events.stream_events(after, upto, limit)
        out = []
        for s in stored:
            room = await self._rooms.get(s.room_id)
            out.append(CaughtUpEvent(s.event, s.stream_ordering, set(room.joined) if room else set(), s))
        return out, scanned


class ClientFormatter:
    """Events as the transaction API carries them: client-server format, with ``room_id``."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def __call__(self, item: Any) -> dict[str, Any]:
        stored = getattr(item, "stored", None)
        if stored is not None:
            return client_event(stored, self._clock.time_msec())
        return client_event_of(item.event)
