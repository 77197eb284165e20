"""Sync's view of room persistence: the bridge from ``homeserver/rooms`` to the builder.

:class:`RoomFeed` subscribes to the :class:`~homeserver.rooms.stream.EventStream`
and, for every persisted batch, once: formats each event for clients (one
shared dict), appends it to the recent-events ring, updates the membership
index and each user's room list, counts unread notifications, and wakes the
room's members (plus the target of a membership change, who may not be a
member). :class:`StoredRoomSource` answers the builder's cache misses
(initial syncs, gaps, state) from the event and state stores.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable, Sequence

from homeserver.rooms.format import client_base, strip_state_event
from homeserver.rooms.state_cache import StateCache
from homeserver.rooms.stream import PersistedEvent
from homeserver.rooms.visibility import Visibility
from homeserver.storage.database import Database, Txn
from homeserver.storage.events import EventStore, StoredEvent
from homeserver.storage.state import StateStore
from homeserver.sync.builder import RoomWindow, StateMap
from homeserver.sync.events import SyncEvent
from homeserver.sync.membership import MembershipIndex
from homeserver.sync.notifier import Notifier
from homeserver.sync.recent import RecentEvents
from homeserver.sync.tokens import RoomPaginationToken
from homeserver.sync.unread import DefaultUnreadCounter
from homeserver.sync.user_rooms import MembershipInfo, UserRooms

logger = logging.getLogger(__name__)

MEMBERSHIPS = ("join", "invite", "leave", "ban", "knock")


def to_sync_event(stored: StoredEvent, txn_key: tuple[str, str, str] | None = None) -> SyncEvent:
    """The stored event's one SyncEvent, made on first use and kept on it (``sync_cache``).

    The recent-events ring, the builder's reads from the stores and every
    reader share it, and it shares the stored event's client dict (no
    ``unsigned.age``, which would be stale). A redaction clears the cache.
    """
    redacted = stored.redacted_because is not None
    cached = stored.sync_cache
    if cached is not None and cached.redacted == redacted and (txn_key is None or cached.txn_key == txn_key):
        return cached
    client = client_base(stored)
    ev = stored.event
    event = SyncEvent(room_id=ev.room_id, event_id=ev.event_id, type=ev.type, state_key=ev.state_key,
                      sender=ev.sender, stream_ordering=stored.stream_ordering,
                      topological_ordering=stored.topological_ordering, client=client,
                      federation=None, txn_key=txn_key if txn_key is not None else getattr(cached, "txn_key", None),
                      pdu_event=ev, redacted=redacted)
    stored.sync_cache = event
    return event


class StoredRoomSource:
    """The :class:`~homeserver.sync.builder.RoomSource` over the event and state stores."""

    def __init__(self, db: Database, events: EventStore, state: StateStore, rooms: StateCache,
                 visibility: Visibility) -> None:
        self._db = db
        self._events = events
        self._state = state
        self._rooms = rooms
        self._visibility = visibility

    async def load_memberships(self, user_id: str) -> dict[str, MembershipInfo]:
        rows = await self._state.get_rooms_for_user(user_id, MEMBERSHIPS)
        return {m.room_id: MembershipInfo(m.membership, m.stream_ordering, m.event_id) for m in rows}

    async def timeline(self, room_id: str, since: int, upto: int, limit: int,
                       user_id: str | None = None) -> tuple[list[SyncEvent], bool]:
        window = (await self.timelines([(room_id, since, upto)], limit, user_id, with_state=False))[room_id]
        return window.events, window.limited

    async def timelines(self, windows: Sequence[tuple[str, int, int]], limit: int, user_id: str | None,
                        with_state: bool) -> dict[str, RoomWindow]:
        """The newest ``limit`` events of each ``(room_id, since, upto]`` window visible to ``user_id``.

        The windows' event IDs and state groups come in one transaction; events,
        visibility and state groups from the caches, with at most one more
        transaction for whatever they miss. With ``with_state``, each room also gets
        the state at its timeline's start where the window shows it: the state after
        the event before the first one returned (the one ``state_at`` would find).
        """
        def txn_fn(txn: Txn) -> tuple[dict[str, list[str]], dict[str, tuple[str, int, int]]]:
            ids = self._events.room_stream_ids_txn(txn, windows, limit + 1)
            groups = self._state.get_event_groups_txn(txn, [e for room in ids.values() for e in room])
            return ids, groups

        ids, groups = await self._db.run(txn_fn)
        stored = await self._events.get_events([e for room in ids.values() for e in room])
        out: dict[str, RoomWindow] = {}
        before_start: dict[str, int | None] = {}  # room -> state group after the event before the start
        for room_id, _since, _upto in windows:
            window = [stored[e] for e in ids.get(room_id, ()) if e in stored]
            limited = len(window) > limit
            shown = window[1:] if limited else window
            if user_id is not None:
                room = await self._rooms.get(room_id)
                if room is not None:
                    shown = await self._visibility.filter_events(user_id, room, shown, groups)
            out[room_id] = RoomWindow([to_sync_event(s) for s in shown], limited)
            if with_state and window:
                # The newest timeline event at or before the start, if the window holds it.
                at = next(i for i, s in enumerate(window) if s is shown[0]) - 1 if shown else len(window) - 1
                if at >= 0:
                    g = groups.get(window[at].event_id)
                    before_start[room_id] = g[2] if g is not None else None
        if before_start:
            maps = await self._state.get_groups_state(
                [(room_id, g) for room_id, g in before_start.items() if g is not None])
            found = await self._events.get_events(
                {eid for g in before_start.values() if g is not None for eid in maps[g].values()})
            for room_id, g in before_start.items():
                state = maps[g] if g is not None else {}
                out[room_id].state_at_start = {key: to_sync_event(found[eid]) for key, eid in state.items()
                                               if eid in found}
        return out

    async def state_at(self, room_id: str, position: int) -> StateMap:
        def last_event(txn: Txn) -> str | None:
            return txn.scalar(
                "SELECT event_id FROM events WHERE room_id = ? AND stream_ordering <= ? AND outlier = ?"
                " AND rejected_reason IS NULL ORDER BY stream_ordering DESC LIMIT 1",
                (room_id, position, False))

        event_id = await self._db.run(last_event)
        if event_id is None:
            return {}
        ids = await self._state.get_state_ids_at(event_id)
        if ids is None:
            return {}
        found = await self._events.get_events(list(ids.values()))
        return {key: to_sync_event(found[eid]) for key, eid in ids.items() if eid in found}

    async def stripped_state(self, room_id: str, event_id: str) -> list[dict[str, Any]]:
        stored = await self._events.get_event(event_id)
        if stored is None:
            return []
        unsigned = stored.event.unsigned
        stripped = unsigned.get("invite_room_state") or unsigned.get("knock_room_state") or []
        out = [e for e in stripped if isinstance(e, dict)] if isinstance(stripped, list) else []
        out.append(strip_state_event(stored))
        return out

    async def prev_batch(self, room_id: str, first: SyncEvent | None, position: int) -> str:
        if first is None:
            return str(RoomPaginationToken(None, position))
        # Paging backwards from here returns the events before ``first``.
        return str(RoomPaginationToken(first.topological_ordering, first.stream_ordering - 1))

    async def event_exists(self, room_id: str, event_id: str) -> bool:
        stored = await self._events.get_event(event_id)
        return stored is not None and stored.room_id == room_id

    async def joined_memberships(self) -> list[tuple[str, str]]:
        return await self._db.run(lambda txn: [(r[0], r[1]) for r in txn.query(
            "SELECT room_id, user_id FROM room_memberships WHERE membership = ?", ("join",))])


class RoomFeed:
    """Consumes the event stream for sync: ring, membership, unread counts, wake-ups."""

    def __init__(self, events: EventStore, rooms: StateCache, recent: RecentEvents,
                 member_index: MembershipIndex, user_rooms: UserRooms, unread: DefaultUnreadCounter,
                 notifier: Notifier) -> None:
        self._events = events
        self._rooms = rooms
        self._recent = recent
        self._members = member_index
        self._user_rooms = user_rooms
        self._unread = unread
        self._notifier = notifier
        unread.display_name = self._display_name
        unread.can_notify_room = self._can_notify_room

    def on_persisted(self, batch: Sequence[PersistedEvent]) -> None:
        converted: list[SyncEvent] = []
        users: set[str] = set()
        rooms: set[str] = set()
        position = 0
        for pe in batch:
            stored = pe.stored
            if stored is None:
                continue
            event = to_sync_event(stored, pe.txn_key)
            converted.append(event)
            rooms.add(pe.room_id)
            position = max(position, pe.stream_ordering)
            if pe.membership is not None:
                user_id, _old, new = pe.membership
                self._members.set_membership(pe.room_id, user_id, new)
                if new == "join":
                    # A join over federation brings the room's whole state without publishing
                    # each member: take the joined set from the room's in-memory state.
                    room = self._rooms.peek(pe.room_id)
                    if room is not None:
                        self._members.seed(pe.room_id, room.joined)
                self._user_rooms.update(user_id, pe.room_id,
                                        MembershipInfo(new, pe.stream_ordering, pe.event_id))
                users.add(user_id)
            if event.type == "m.room.redaction":
                self._apply_redaction(stored)
        self._recent.add(converted)
        try:
            self._unread.on_events(converted)
        except Exception:  # counting must never stop delivery
            logger.exception("unread counting failed")
        if position:
            self._notifier.notify("events", position, users=users, rooms=rooms)

    def _apply_redaction(self, redaction: StoredEvent) -> None:
        target_id = redaction.event.redacts or redaction.event.content.get("redacts")
        if not isinstance(target_id, str):
            return
        target = self._events.cached(target_id)
        if target is not None and target.redacted_because is not None:
            self._recent.replace(target_id, target.room_id, to_sync_event(target).client)

    def _display_name(self, room_id: str, user_id: str) -> str | None:
        room = self._rooms.peek(room_id)
        if room is None:
            return None
        name = room.content("m.room.member", user_id).get("displayname")
        return name if isinstance(name, str) else None

    def _can_notify_room(self, room_id: str, sender: str) -> bool:
        room = self._rooms.peek(room_id)
        if room is None:
            return False
        levels = room.power_levels
        return levels.user_level(sender) >= levels.notification_level("room")

    def seed(self, rows: Iterable[tuple[str, str]]) -> None:
        for room_id, user_id in rows:
            self._members.set_membership(room_id, user_id, "join")
