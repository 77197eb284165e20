"""Reading a room: events, /messages, /context, state, members, relations, threads.

Every method gates on :meth:`Visibility.check_can_read_room` and filters
events through :meth:`Visibility.filter_events`, so a non-member reads
nothing of a private group.

Paging backwards with /messages past the start of the locally stored
history of a room joined over federation asks :class:`RemoteHistory`
(federation's backfill, plugged in by ``server.py``) for older events, then
answers from the now longer local history.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Protocol, Sequence

from homeserver.api.errors import MatrixError, forbidden, not_found
from homeserver.rooms.format import client_event
from homeserver.rooms.relations import BUNDLED, Relations
from homeserver.rooms.state_cache import RoomState, StateCache
from homeserver.rooms.visibility import Visibility
from homeserver.storage.database import Txn
from homeserver.storage.events import EventStore, StoredEvent
from homeserver.storage.state import StateStore
from homeserver.sync.tokens import RoomPaginationToken
from homeserver.util.clock import Clock

MAX_LIMIT = 1000
#: How many rounds a filtered page may scan before returning what it found.
MAX_SCAN_ROUNDS = 5
MAX_CONTEXT_STATE = 5000
END = (2**62, 2**62)
START = (0, 0)
#: Backfill requests one /messages call may make before answering with what it has.
MAX_BACKFILL_ROUNDS = 3
#: Events asked for per backfill request, at least (a page's worth may be mostly hidden state).
MIN_BACKFILL = 20
MAX_BACKFILL = 100


class RemoteHistory(Protocol):
    """What federation provides for history this server does not hold."""

    async def backfill(self, room_id: str, from_event_ids: Sequence[str], limit: int) -> int:
        """Fetch up to ``limit`` events from ``from_event_ids`` backwards from a server in the room,
        check them and store them as history.

        Returns:
            How many events were newly stored (0 when no server had anything more).
        """


@dataclass
class EventFilter:
    """The RoomEventFilter subset used when reading history."""

    types: list[str] | None = None
    not_types: list[str] = field(default_factory=list)
    senders: list[str] | None = None
    not_senders: list[str] = field(default_factory=list)
    contains_url: bool | None = None
    lazy_load_members: bool = False
    include_redundant_members: bool = False
    limit: int | None = None

    @classmethod
    def parse(cls, raw: Any) -> "EventFilter":
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise MatrixError(400, "M_INVALID_PARAM", "filter must be a JSON object")

        def strings(key: str) -> list[str] | None:
            v = raw.get(key)
            if v is None:
                return None
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v) or len(v) > 1000:
                raise MatrixError(400, "M_INVALID_PARAM", f"filter.{key} must be a list of strings")
            return v
        limit = raw.get("limit")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise MatrixError(400, "M_INVALID_PARAM", "filter.limit must be a positive integer")
        cu = raw.get("contains_url")
        return cls(strings("types"), strings("not_types") or [], strings("senders"),
                   strings("not_senders") or [], cu if isinstance(cu, bool) else None,
                   raw.get("lazy_load_members") is True, raw.get("include_redundant_members") is True, limit)

    def matches(self, stored: StoredEvent) -> bool:
        ev = stored.event
        if self.types is not None and not any(_glob(t, ev.type) for t in self.types):
            return False
        if any(_glob(t, ev.type) for t in self.not_types):
            return False
        if self.senders is not None and ev.sender not in self.senders:
            return False
        if ev.sender in self.not_senders:
            return False
        if self.contains_url is not None and (isinstance(ev.content.get("url"), str)) != self.contains_url:
            return False
        return True


def _glob(pattern: str, value: str) -> bool:
    if "*" not in pattern:
        return pattern == value
    return re.fullmatch(".*".join(re.escape(p) for p in pattern.split("*")), value) is not None


class RoomHistory:
    def __init__(self, cache: StateCache, events: EventStore, state: StateStore, visibility: Visibility,
                 relations: Relations, clock: Clock) -> None:
        self.cache = cache
        self.events = events
        self.state = state
        self.visibility = visibility
        self.relations = relations
        self.clock = clock
        #: Older history from other servers (None: federation off).
        self.remote: RemoteHistory | None = None
        #: user -> the users they ignore (``m.ignored_user_list``; server.py wires account data).
        self.ignored_by: Callable[[str], Collection[str]] = lambda user_id: ()

    async def readable_room(self, user_id: str | None, room_id: str) -> tuple[RoomState, str | None]:
        room = await self.cache.get(room_id)
        if room is None:
            raise forbidden("You are not a member of this room and it is not world-readable.")
        return room, self.visibility.check_can_read_room(user_id, room)

    async def serialize(self, user_id: str | None, room_id: str, events: Sequence[StoredEvent],
                        device_id: str | None = None, child_rows: Sequence[tuple[str, str]] | None = None
                        ) -> list[dict[str, Any]]:
        """Client format with bundled aggregations (``child_rows``: see :meth:`Relations.bundle`)."""
        now = self.clock.time_msec()
        bundles = await self.relations.bundle(user_id, room_id, events, now, child_rows)
        return [client_event(e, now, relations=bundles.get(e.event_id)) for e in events]

    async def get_event(self, user_id: str, room_id: str, event_id: str) -> dict[str, Any]:
        """GET /rooms/{roomId}/event/{eventId}."""
        room, _ = await self.readable_room(user_id, room_id)
        stored = await self.events.get_event(event_id, allow_outlier=False)
        if stored is None or stored.room_id != room_id:
            raise not_found("Event not found.")
        if not await self.visibility.filter_events(user_id, room, [stored]):
            raise not_found("Event not found.")
        return (await self.serialize(user_id, room_id, [stored]))[0]

    async def _key(self, room_id: str, token: str | None, default: tuple[int, int]) -> tuple[int, int]:
        if token is None:
            if default == END:
                return await self.events.room_end_key(room_id)
            return default
        t = RoomPaginationToken.parse(token)
        if t.topological is None:
            return await self.events.topological_key_for_stream(room_id, t.stream)
        return (t.topological, t.stream)

    def _page_txn(self, txn: Txn, room_id: str, key: tuple[int, int], direction: str, limit: int,
                  to_key: tuple[int, int] | None
                  ) -> tuple[list[str], list[tuple[str, str]]]:
        """One page's event IDs and their bundled relations: one round trip."""
        ids = self.events.paginate_txn(txn, room_id, key, direction, limit, to_key)
        return ids, self.events.relation_children_txn(txn, room_id, ids, BUNDLED)

    async def _scan(self, user_id: str | None, room: RoomState, key: tuple[int, int], direction: str,
                    limit: int, flt: EventFilter, to_key: tuple[int, int] | None,
                    child_rows: list[tuple[str, str]] | None = None
                    ) -> tuple[list[StoredEvent], tuple[int, int] | None, tuple[int, int]]:
        """Up to ``limit`` visible, matching events from ``key``.

        Args:
            child_rows: Collects the scanned events' relation rows, for :meth:`serialize`.

        Returns:
            The events, the key to continue from (None when the timeline is
            exhausted), and the key after the last scanned event (always set).
        """
        out: list[StoredEvent] = []
        # Module "Ignoring Users": the reader's ignored senders' non-state events are left out.
        ignored = self.ignored_by(user_id) if user_id is not None else ()
        for _ in range(MAX_SCAN_ROUNDS):
            want = limit - len(out)
            ids, children = await self.events.db.run(self._page_txn, room.room_id, key, direction, want + 1, to_key)
            if child_rows is not None:
                child_rows.extend(children)
            batch = await self.events.get_events_as_list(ids)
            has_more = len(batch) > want
            batch = batch[:want]
            if not batch:
                return out, None, key
            matching = [e for e in batch if flt.matches(e)
                        and not (ignored and e.event.sender in ignored and not e.event.is_state())]
            groups = await self.state.groups_of(matching, room.room_id)
            out.extend(await self.visibility.filter_events(user_id, room, matching, groups))
            last = batch[-1]
            key = (last.topological_ordering, last.stream_ordering - 1) if direction == "b" else \
                (last.topological_ordering, last.stream_ordering)
            if not has_more:
                return out, None, key
            if len(out) >= limit:
                return out, key, key
        return out, key, key

    async def messages(self, user_id: str, room_id: str, from_token: str | None, to_token: str | None,
                       direction: str, limit: int, flt: EventFilter) -> dict[str, Any]:
        """GET /rooms/{roomId}/messages."""
        if direction not in ("b", "f"):
            raise MatrixError(400, "M_INVALID_PARAM", "dir must be 'b' or 'f'")
        room, _ = await self.readable_room(user_id, room_id)
        limit = max(1, min(limit if flt.limit is None else min(limit, flt.limit), MAX_LIMIT))
        key = await self._key(room_id, from_token, END if direction == "b" else START)
        to_key = await self._key(room_id, to_token, START) if to_token is not None else None
        child_rows: list[tuple[str, str]] = []
        events, next_key, after = await self._scan(user_id, room, key, direction, limit, flt, to_key, child_rows)
        if direction == "b" and next_key is None and to_key is None and self.remote is not None:
            events, next_key = await self._backfill(user_id, room, events, after, limit, flt, child_rows)
        start = from_token if from_token is not None else str(RoomPaginationToken(*key))
        body: dict[str, Any] = {"chunk": await self.serialize(user_id, room_id, events, child_rows=child_rows),
                                "start": start}
        if next_key is not None:
            body["end"] = str(RoomPaginationToken(*next_key))
        if flt.lazy_load_members:
            body["state"] = await self._member_state(room, events)
        return body

    async def _backfill(self, user_id: str, room: RoomState, events: list[StoredEvent], after: tuple[int, int],
                        limit: int, flt: EventFilter, child_rows: list[tuple[str, str]]
                        ) -> tuple[list[StoredEvent], tuple[int, int] | None]:
        """The page reached the start of local history: fetch older events from other servers.

        Returns the page and the key to continue from: set while older
        history may exist elsewhere, None once the create event is reached
        or no server has anything older.
        """
        assert self.remote is not None
        for _ in range(MAX_BACKFILL_ROUNDS):
            gaps = await self.events.oldest_gaps(room.room_id)
            if not gaps:
                return events, None
            if len(events) >= limit:
                return events, after
            want = min(MAX_BACKFILL, max(MIN_BACKFILL, limit - len(events)))
            if not await self.remote.backfill(room.room_id, gaps, want):
                return events, None
            more, next_key, after = await self._scan(user_id, room, after, "b", limit - len(events), flt, None,
                                                     child_rows)
            events = events + more
            if next_key is not None:  # the page filled before local history ran out again
                return events, next_key
        return events, after

    async def _member_state(self, room: RoomState, events: Sequence[StoredEvent]) -> list[dict[str, Any]]:
        senders = {e.event.sender for e in events}
        ids = [room.state[("m.room.member", s)].event_id for s in sorted(senders)
               if ("m.room.member", s) in room.state]
        members = await self.events.get_events_as_list(ids)
        now = self.clock.time_msec()
        return [client_event(m, now) for m in members]

    async def context(self, user_id: str, room_id: str, event_id: str, limit: int,
                      flt: EventFilter) -> dict[str, Any]:
        """GET /rooms/{roomId}/context/{eventId}."""
        room, _ = await self.readable_room(user_id, room_id)
        stored = await self.events.get_event(event_id, allow_outlier=False)
        if stored is None or stored.room_id != room_id or \
                not await self.visibility.filter_events(user_id, room, [stored]):
            raise not_found("Event not found.")
        limit = max(0, min(limit, 100))
        before_n, after_n = limit // 2, limit - limit // 2
        key = (stored.topological_ordering, stored.stream_ordering)
        before, _, bkey = await self._scan(user_id, room, (key[0], key[1] - 1), "b", before_n, flt, None) \
            if before_n else ([], None, (key[0], key[1] - 1))
        after, _, akey = await self._scan(user_id, room, key, "f", after_n, flt, None) \
            if after_n else ([], None, key)
        state_ids = await self.state.get_state_ids_at(event_id) or {}
        if flt.lazy_load_members:
            senders = {e.event.sender for e in [stored, *before, *after]}
            state_ids = {k: v for k, v in state_ids.items() if k[0] != "m.room.member" or k[1] in senders}
        # The state at an event the reader may see (bounded for very large rooms).
        state_events = await self.events.get_events_as_list(sorted(state_ids.values())[:MAX_CONTEXT_STATE])
        now = self.clock.time_msec()
        return {
            "event": (await self.serialize(user_id, room_id, [stored]))[0],
            "events_before": await self.serialize(user_id, room_id, before),
            "events_after": await self.serialize(user_id, room_id, after),
            "start": str(RoomPaginationToken(*bkey)),
            "end": str(RoomPaginationToken(*akey)),
            "state": [client_event(e, now) for e in state_events],
        }

    async def state_ids_for_reader(self, user_id: str, room: RoomState, membership: str | None
                                   ) -> dict[tuple[str, str], str]:
        """Current state for members; for users who left, the state when they left."""
        if membership in ("leave", "ban"):
            m = await self.state.get_membership(room.room_id, user_id)
            if m is not None:
                at = await self.state.get_state_ids_at(m.event_id)
                if at is not None:
                    return at
        return room.state_ids()

    async def get_state(self, user_id: str, room_id: str) -> list[dict[str, Any]]:
        """GET /rooms/{roomId}/state."""
        room, membership = await self.readable_room(user_id, room_id)
        self._require_state_access(room, membership)
        ids = await self.state_ids_for_reader(user_id, room, membership)
        events = await self.events.get_events_as_list(sorted(ids.values()))
        now = self.clock.time_msec()
        return [client_event(e, now) for e in events]

    async def get_state_event(self, user_id: str, room_id: str, etype: str, state_key: str) -> StoredEvent:
        """GET /rooms/{roomId}/state/{eventType}/{stateKey}."""
        room, membership = await self.readable_room(user_id, room_id)
        self._require_state_access(room, membership)
        ids = await self.state_ids_for_reader(user_id, room, membership)
        eid = ids.get((etype, state_key))
        stored = await self.events.get_event(eid) if eid else None
        if stored is None:
            raise not_found("Event not found.")
        return stored

    def _require_state_access(self, room: RoomState, membership: str | None) -> None:
        if membership in ("join", "leave", "ban") or room.history_visibility == "world_readable":
            return
        raise forbidden("You are not a member of this room.")

    async def members(self, user_id: str, room_id: str, at: str | None, membership: str | None,
                      not_membership: str | None) -> list[dict[str, Any]]:
        """GET /rooms/{roomId}/members."""
        room, current = await self.readable_room(user_id, room_id)
        self._require_state_access(room, current)
        ids = await self.state_ids_for_reader(user_id, room, current)
        if at is not None:
            key = await self._key(room_id, at, END)
            last = await self.events.paginate(room_id, key, "b", 1)
            if last:
                ids_at = await self.state.get_state_ids_at(last[0].event_id)
                if ids_at is not None:
                    ids = ids_at
        member_ids = [v for k, v in ids.items() if k[0] == "m.room.member"]
        events = await self.events.get_events_as_list(sorted(member_ids))
        now = self.clock.time_msec()
        out = []
        for e in events:
            m = e.visible_event.membership
            if membership is not None and m != membership:
                continue
            if not_membership is not None and m == not_membership:
                continue
            out.append(client_event(e, now))
        return out

    async def joined_members(self, user_id: str, room_id: str) -> dict[str, Any]:
        """GET /rooms/{roomId}/joined_members."""
        room, current = await self.readable_room(user_id, room_id)
        if current != "join" and room.history_visibility != "world_readable":
            raise forbidden("You are not joined to this room.")
        out = {}
        for uid in sorted(room.joined):
            c = room.state[("m.room.member", uid)].content
            entry = {}
            if isinstance(c.get("displayname"), str):
                entry["display_name"] = c["displayname"]
            if isinstance(c.get("avatar_url"), str) and c["avatar_url"].startswith("mxc://"):
                entry["avatar_url"] = c["avatar_url"]
            out[uid] = entry
        return {"joined": out}

    async def joined_rooms(self, user_id: str) -> list[str]:
        return sorted(m.room_id for m in await self.state.get_rooms_for_user(user_id, ("join",)))

    async def get_relations(self, user_id: str, room_id: str, event_id: str, rel_type: str | None,
                        event_type: str | None, from_token: str | None, direction: str, limit: int,
                        recurse: bool = False) -> dict[str, Any]:
        """GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]."""
        room, _ = await self.readable_room(user_id, room_id)
        parent = await self.events.get_event(event_id, allow_outlier=False)
        if parent is None or parent.room_id != room_id or \
                not await self.visibility.filter_events(user_id, room, [parent]):
            raise not_found("Event not found.")
        if direction not in ("b", "f"):
            raise MatrixError(400, "M_INVALID_PARAM", "dir must be 'b' or 'f'")
        limit = max(1, min(limit, MAX_LIMIT))
        key = await self._key(room_id, from_token, END if direction == "b" else START) if from_token else None
        found = await self.events.get_relations(room_id, event_id, rel_type, event_type, key, direction, limit + 1)
        page = found[:limit]
        visible = await self.visibility.filter_events(user_id, room, page)
        body: dict[str, Any] = {"chunk": await self.serialize(user_id, room_id, visible)}
        if len(found) > limit:
            last = page[-1]
            nk = (last.topological_ordering, last.stream_ordering - 1) if direction == "b" else \
                (last.topological_ordering, last.stream_ordering)
            body["next_batch"] = str(RoomPaginationToken(*nk))
        return body

    async def threads(self, user_id: str, room_id: str, include: str, from_token: str | None,
                      limit: int) -> dict[str, Any]:
        """GET /_matrix/client/v1/rooms/{roomId}/threads."""
        room, _ = await self.readable_room(user_id, room_id)
        if include not in ("all", "participated"):
            raise MatrixError(400, "M_INVALID_PARAM", "include must be 'all' or 'participated'")
        before = None
        if from_token is not None:
            t = RoomPaginationToken.parse(from_token)
            before = t.stream
        limit = max(1, min(limit, 100))
        roots = await self.events.get_thread_roots(room_id, user_id if include == "participated" else None,
                                                   before, limit + 1)
        stored = await self.events.get_events_as_list([r[0] for r in roots[:limit]], allow_outlier=False)
        # A relation received over federation may name a root in another room: never list it here.
        stored = [e for e in stored if e.room_id == room_id]
        visible = await self.visibility.filter_events(user_id, room, stored)
        body: dict[str, Any] = {"chunk": await self.serialize(user_id, room_id, visible)}
        if len(roots) > limit:
            body["next_batch"] = f"s{roots[limit - 1][1]}"
        return body
