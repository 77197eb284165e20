"""The newest events of each room, in memory, so waking syncs need no query.

Fed from the event stream after persist. For each room it keeps the last
``capacity`` events and ``complete_after``: every event of the room with a
stream position above it is in the ring. A timeline request for
``(since, upto]`` with ``since >= complete_after`` is answered from memory.
"""
from __future__ import annotations

from collections import deque
from typing import Iterable, NamedTuple

from homeserver.sync.events import SyncEvent

DEFAULT_CAPACITY = 64
#: Newest events of all rooms remembered in stream order, for :meth:`RecentEvents.span`.
SPAN_CAPACITY = 1024


class _Seen(NamedTuple):
    position: int
    room_id: str
    is_state: bool
    sender: str
    txn_user: str | None


class _Ring:
    __slots__ = ("events", "complete_after")

    def __init__(self, complete_after: int, capacity: int) -> None:
        self.events: deque[SyncEvent] = deque(maxlen=capacity)
        self.complete_after = complete_after


class RecentEvents:
    def __init__(self, start_position: int = 0, capacity: int = DEFAULT_CAPACITY,
                 max_rooms: int = 200_000) -> None:
        self._rings: dict[str, _Ring] = {}
        self._start = start_position
        self._capacity = capacity
        self._max_rooms = max_rooms
        #: Last stream position of each room (rooms with no event since start are absent).
        self.last_position: dict[str, int] = {}
        self._latest: deque[_Seen] = deque(maxlen=SPAN_CAPACITY)

    def reset(self, start_position: int) -> None:
        self._rings.clear()
        self.last_position.clear()
        self._latest.clear()
        self._start = start_position

    def add(self, events: Iterable[SyncEvent]) -> None:
        for event in events:
            ring = self._rings.get(event.room_id)
            if ring is None:
                if len(self._rings) >= self._max_rooms:
                    self._evict()
                ring = self._rings[event.room_id] = _Ring(
                    self.last_position.get(event.room_id, self._start), self._capacity)
            if len(ring.events) == ring.events.maxlen:
                ring.complete_after = ring.events[0].stream_ordering
            ring.events.append(event)
            if event.stream_ordering > 0:  # backfilled history has negative positions
                self._latest.append(_Seen(event.stream_ordering, event.room_id, event.state_key is not None,
                                          event.sender, event.txn_key[0] if event.txn_key is not None else None))
            if event.stream_ordering > self.last_position.get(event.room_id, 0):
                self.last_position[event.room_id] = event.stream_ordering

    def _evict(self) -> None:
        # Drop the quietest half; their positions stay known in last_position
        # (a room absent from _rings is served from the database).
        order = sorted(self._rings, key=lambda r: self.last_position.get(r, 0))
        for room_id in order[: len(order) // 2]:
            del self._rings[room_id]

    def has_events(self, room_id: str, since: int, upto: int) -> bool | None:
        """Whether the room has events in (since, upto]; None when unknown (ask the database)."""
        last = self.last_position.get(room_id)
        if last is None:
            return False if since >= self._start else None
        if last <= since:
            return False
        return True

    def span(self, since: int, upto: int) -> tuple[str, frozenset[str], frozenset[str]] | None:
        """What happened in (since, upto], when it was only non-state events of one room.

        Returns that room, the users who sent some of them from a client, and
        all their senders; None when the events are not all known here, touch
        state, or span rooms.
        """
        expected = upto - since
        if expected <= 0 or expected > SPAN_CAPACITY:
            return None
        room_id = None
        senders: set[str] = set()
        txn_senders: set[str] = set()
        seen: set[int] = set()
        for item in reversed(self._latest):
            if item.position <= since:
                break
            if item.position > upto:
                continue
            if item.is_state or (room_id is not None and item.room_id != room_id):
                return None
            room_id = item.room_id
            seen.add(item.position)
            senders.add(item.sender)
            if item.txn_user is not None:
                txn_senders.add(item.txn_user)
        if room_id is None or len(seen) != expected:
            return None
        return room_id, frozenset(txn_senders), frozenset(senders)

    def replace(self, event_id: str, room_id: str, client: dict) -> None:
        """Swap an event's client dict (after a redaction)."""
        ring = self._rings.get(room_id)
        if ring is None:
            return
        for event in ring.events:
            if event.event_id == event_id:
                event.client = client
                return

    def find(self, room_id: str, event_id: str) -> int | None:
        """Index of an event in the room's ring, or None."""
        ring = self._rings.get(room_id)
        if ring is not None:
            for i, event in enumerate(ring.events):
                if event.event_id == event_id:
                    return i
        return None

    def after(self, room_id: str, event_id: str) -> list[SyncEvent] | None:
        """Events after ``event_id`` in the ring; None when it is not there."""
        ring = self._rings.get(room_id)
        index = self.find(room_id, event_id)
        if ring is None or index is None:
            return None
        return list(ring.events)[index + 1:]

    def timeline(self, room_id: str, since: int, upto: int, limit: int
                 ) -> tuple[list[SyncEvent], bool] | None:
        """The newest ``limit`` events in (since, upto] and whether more were skipped; None if unknown."""
        ring = self._rings.get(room_id)
        if ring is None:
            if room_id not in self.last_position and since >= self._start:
                return [], False
            return None
        if since < ring.complete_after:
            return None
        picked = [e for e in ring.events if since < e.stream_ordering <= upto]
        if len(picked) > limit:
            return picked[len(picked) - limit:] if limit else [], True
        return picked, False
