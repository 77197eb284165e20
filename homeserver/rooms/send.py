"""Send an event into a room: validate, build + auth on the tip, persist.

The send path is ``api/client/rooms.py`` → :meth:`EventSender.send` (build
and auth against the in-memory tip, see :mod:`homeserver.rooms.builder`) →
:meth:`homeserver.rooms.persist.Persister.persist` →
:meth:`homeserver.storage.events.EventStore.persist_txn` → the stream.

Transaction IDs make client sends idempotent: the same ``(room, user,
device, txn_id)`` yields the same event ID, also while the first request is
still in flight, for an hour (``storage.events.TXN_ID_WINDOW_MS``; the IDs
of that window are loaded at start-up, so a send does no database read).
"""
from __future__ import annotations

from typing import Any

from twisted.internet import defer

from homeserver.api.errors import MatrixError, bad_json, forbidden
from homeserver.core.events import Event
from homeserver.rooms.builder import EventBuilder
from homeserver.rooms.content import check_message_content, check_relation
from homeserver.rooms.persist import EventContext, Persister
from homeserver.rooms.state_cache import RoomState, StateCache
from homeserver.rooms.stream import PersistedEvent
from homeserver.storage.events import EventStore


def not_in_room() -> MatrixError:
    return forbidden("You are not a member of this room.")


class EventSender:
    def __init__(self, builder: EventBuilder, cache: StateCache, persister: Persister,
                 events: EventStore) -> None:
        self.builder = builder
        self.cache = cache
        self.persister = persister
        self.events = events
        self._inflight: dict[tuple[str, str, str, str], list[defer.Deferred[str]]] = {}

    async def room_or_forbidden(self, room_id: str) -> RoomState:
        room = await self.cache.get(room_id)
        if room is None:
            raise not_in_room()
        return room

    async def send(self, sender: str, room_id: str, event_type: str, content: dict[str, Any], *,
                   state_key: str | None = None, redacts: str | None = None,
                   txn_key: tuple[str, str, str] | None = None, origin_server_ts: int | None = None) -> str:
        """Send an event and return its ID once it is durable.

        Args:
            txn_key: ``(user_id, device_id, txn_id)`` for idempotent client sends.
            origin_server_ts: The timestamp an application service asked for (``?ts=``).

        Raises:
            MatrixError: M_FORBIDDEN (auth rules, with their reason), M_BAD_JSON.
        """
        if txn_key is None:
            return (await self._send(sender, room_id, event_type, content, state_key, redacts, None,
                                     origin_server_ts)).event_id
        key = (room_id, *txn_key)
        waiters = self._inflight.get(key)
        if waiters is not None:  # the same request is still in flight: share its answer
            d: defer.Deferred[str] = defer.Deferred()
            waiters.append(d)
            return await d
        # Registered before the lookup, so a duplicate arriving meanwhile waits too.
        self._inflight[key] = []
        try:
            event_id = self.events.get_txn_event_id(room_id, *txn_key)
            if event_id is None:
                event_id = (await self._send(sender, room_id, event_type, content, state_key, redacts,
                                             txn_key, origin_server_ts)).event_id
        except Exception as e:
            for w in self._inflight.pop(key):
                w.errback(e)
            raise
        for w in self._inflight.pop(key):
            w.callback(event_id)
        return event_id

    async def _send(self, sender: str, room_id: str, event_type: str, content: dict[str, Any],
                    state_key: str | None, redacts: str | None,
                    txn_key: tuple[str, str, str] | None,
                    origin_server_ts: int | None = None) -> PersistedEvent:
        if event_type == "m.room.message" and state_key is None:
            check_message_content(content)
        rel = check_relation(content) if state_key is None else None
        if rel is not None and isinstance(rel.get("rel_type"), str):
            await self._check_relation(sender, room_id, event_type, rel)
        room = await self.room_or_forbidden(room_id)
        # From here to persist() nothing awaits: the tip cannot move under us.
        if state_key is not None:
            same = room.tip_get(event_type, state_key)
            if same is not None and same.sender == sender and same.content == content:
                return PersistedEvent(same, 0, same.depth)
        event = self.builder.build(room, event_type, sender, content, state_key, redacts, origin_server_ts)
        return await self.persist_local(room, event, txn_key)

    async def persist_local(self, room: RoomState, event: Event,
                            txn_key: tuple[str, str, str] | None = None) -> PersistedEvent:
        """Queue an event built on the room's tip and wait until it is durable."""
        room.reserve(event)
        [persisted] = await self.persister.persist([EventContext(event, txn_key=txn_key, local=True)])
        return persisted

    async def _check_relation(self, sender: str, room_id: str, event_type: str, rel: dict[str, Any]) -> None:
        rel_type, parent_id = rel["rel_type"], rel["event_id"]
        if rel_type not in ("m.annotation", "m.replace", "m.thread", "m.reference"):
            return
        parent = await self.events.get_event(parent_id, allow_outlier=False)
        if parent is None or parent.room_id != room_id:
            raise bad_json(f"{rel_type} relates to an unknown event")
        parent_rel = parent.event.content.get("m.relates_to")
        parent_rel_type = parent_rel.get("rel_type") if isinstance(parent_rel, dict) else None
        if rel_type == "m.annotation":
            if await self.events.find_annotation(room_id, parent_id, sender, rel["key"]):
                raise MatrixError(400, "M_DUPLICATE_ANNOTATION", "You already reacted with this key.")
        elif rel_type == "m.replace":
            if parent.event.sender != sender:
                raise bad_json("Only the original sender can edit an event.")
            if parent.event.is_state() or parent.event.type != event_type:
                raise bad_json("An edit must have the type of the original event and not be state.")
            if parent_rel_type == "m.replace":
                raise bad_json("Cannot edit an edit; edit the original event.")
        elif rel_type == "m.thread":
            if parent_rel_type is not None:
                raise bad_json("Cannot start a thread from an event with a relation.")
