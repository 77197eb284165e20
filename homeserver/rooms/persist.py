"""The persister: per-room ordered, group-committed event persistence.

:meth:`Persister.persist` is the one way events reach the database. Each
room has a queue; one worker per room drains whatever has queued into ONE
transaction (group commit: one fsync for many events), then updates the
in-memory caches, publishes the batch on the :class:`EventStream` (in global
stream order), and only then resolves each caller. So a client gets its
200 only once its event is durable, and its next /sync sees it. Rooms
persist concurrently.

What the entry point accepts (:class:`EventContext`):

* a local event built against the room's tip: ``state_before=None`` means
  "the room's current state at the time the event is persisted" (its
  predecessors in the queue included);
* a federated event: ``state_before`` is the state before the event
  (possibly computed by state resolution across its prev events), and
  optionally ``new_current_state`` (the resolved current state of the room
  after it, when the room has several forward extremities) and
  ``new_extremities``;
* an outlier (``outlier=True``): an event known only for auth or state; it is
  stored, but touches neither the timeline, state, extremities nor stream;
* a rejected event (``event.rejected_reason`` set): stored, never served, no
  state effect;
* ``backfilled=True``: a historical event fetched from another server; it is
  stored in the timeline (by depth) with a negative stream ordering and its
  ``state_before`` (the state at that point of history, used by history
  visibility), and not published on the live stream (it is old news to
  /sync). It touches neither the room's current state, members,
  extremities nor depth, so it can be persisted while the room moves on.
"""
from __future__ import annotations

import itertools
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from twisted.internet import defer

from homeserver.core.events import Event
from homeserver.rooms.state_cache import RoomState, StateCache
from homeserver.rooms.stream import EventStream, PersistedEvent
from homeserver.storage.database import Database, StreamIdGenerator, Txn
from homeserver.storage.events import EventRow, EventStore, StoredEvent
from homeserver.storage.rooms import RoomStore
from homeserver.storage.state import Membership, StateStore
from homeserver.util.clock import Clock

logger = logging.getLogger(__name__)

StateKey = tuple[str, str]

#: At most this many events go into one transaction.
MAX_BATCH = 200


@dataclass
class EventContext:
    """An event to persist and what the persister needs to know about it."""

    event: Event
    #: State before the event as ``{(type, state_key): event_id}``; None = the room's current state.
    state_before: Mapping[StateKey, str] | None = None
    #: Resolved current state after the event (federation, forked rooms); None = state after the event.
    new_current_state: Mapping[StateKey, str] | None = None
    #: The room's forward extremities after the event; None = computed from prev_events.
    new_extremities: Sequence[str] | None = None
    outlier: bool = False
    backfilled: bool = False
    #: ``(user_id, device_id, txn_id)`` of a client send (idempotency).
    txn_key: tuple[str, str, str] | None = None
    #: Set for local events built against the room tip (the overlay is released after).
    local: bool = False


@dataclass
class _Item:
    ctx: EventContext
    deferred: "defer.Deferred[PersistedEvent]" = field(default_factory=defer.Deferred)


@dataclass
class _Batch:
    seq: int
    last: int
    done: bool = False
    published: list[PersistedEvent] = field(default_factory=list)
    items: list[_Item] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)  # PersistedEvent or Exception per item


@dataclass
class _Plan:
    """What one committed batch changed, applied to the caches after commit."""

    current_ids: dict[StateKey, str]
    state_group: int | None
    extremities: list[str]
    depth: int
    per_event: list[tuple[int, dict[StateKey, str] | None]]  # (stream, current-state delta or None)
    state_groups: dict[str, tuple[int, int]]  # event ID -> its state groups before and after


class Persister:
    """Persists events per room, in order; rooms concurrently."""

    def __init__(self, db: Database, events: EventStore, state: StateStore, rooms: RoomStore,
                 cache: StateCache, stream: EventStream, stream_ids: StreamIdGenerator,
                 clock: Clock) -> None:
        self._db = db
        self._events = events
        self._state = state
        self._rooms = rooms
        self._cache = cache
        self._stream = stream
        self._ids = stream_ids
        self._clock = clock
        self._queues: dict[str, list[_Item]] = {}
        self._workers: set[str] = set()
        self._batches: "OrderedDict[int, _Batch]" = OrderedDict()
        self._batch_seq = itertools.count()
        self._backfill_position = 0

    def set_backfill_start(self, lowest: int) -> None:
        """Continue negative (backfill) stream orderings below ``lowest`` (at start-up)."""
        self._backfill_position = min(0, lowest)

    def _next_backfill(self) -> int:
        self._backfill_position -= 1
        return self._backfill_position

    async def persist(self, contexts: Sequence[EventContext]) -> list[PersistedEvent]:
        """Persist events (all of one room, in order) and wait until durable and published.

        Returns:
            One :class:`PersistedEvent` per context, in order.

        Raises:
            Whatever the transaction raised; nothing of a failed batch is kept.
        """
        if not contexts:
            return []
        room_id = contexts[0].event.room_id
        items = [_Item(c) for c in contexts]
        self._queues.setdefault(room_id, []).extend(items)
        if room_id not in self._workers:
            self._workers.add(room_id)
            defer.ensureDeferred(self._work(room_id))
        return list(await defer.gatherResults([i.deferred for i in items], consumeErrors=True)
                    .addErrback(lambda f: f.value.subFailure))

    async def _work(self, room_id: str) -> None:
        unpublished = False
        try:
            while self._queues.get(room_id):
                queue = self._queues[room_id]
                items, self._queues[room_id] = queue[:MAX_BATCH], queue[MAX_BATCH:]
                # Start the next batch (it runs until its transaction is on a database
                # thread), then publish the previous one: the fan-out work (push rules
                # of every member, sync wake-ups) overlaps the next commit instead of
                # delaying it. Callers still get their answer only once published.
                next_batch = defer.ensureDeferred(self._persist_batch(room_id, items))
                if unpublished:
                    self._flush()
                await next_batch
                unpublished = True
        finally:
            self._workers.discard(room_id)
            if not self._queues.get(room_id):
                self._queues.pop(room_id, None)
            if unpublished:
                self._flush()

    async def _persist_batch(self, room_id: str, items: list[_Item]) -> None:
        # Backfilled (historical) events get negative stream orderings, so they
        # never look new to anything reading the stream by position.
        positions = [self._next_backfill() if i.ctx.backfilled else self._ids.next() for i in items]
        seq = next(self._batch_seq)
        batch = _Batch(seq, max([p for p in positions if p > 0], default=0), items=items)
        self._batches[seq] = batch
        local = sum(1 for i in items if i.ctx.local)
        try:
            room = await self._cache.get(room_id)
            if room is None:
                room = self._new_room(items[0].ctx.event)
            now = self._clock.time_msec()
            rows = [EventRow(i.ctx.event, pos, i.ctx.outlier, i.ctx.txn_key, now)
                    for i, pos in zip(items, positions)]
            snapshot = (room.state_ids(), room.state_group, list(room.extremities), room.depth)
            plan = await self._db.run(self._txn, room_id, items, rows, snapshot)
            await self._apply(room, items, rows, plan, batch)
        except Exception as e:
            logger.exception("persisting %d events in %s failed", len(items), room_id)
            room = self._cache.peek(room_id)
            if room is not None and local:
                # Later queued local events were built on top of these: fail them too.
                room.reset_pending()
                for queued in self._queues.pop(room_id, []):
                    queued.deferred.errback(e)
            # Whatever happened, the database is the truth: reload the room on next use.
            self._cache.forget([room_id])
            batch.results = [e] * len(items)
        else:
            if room is not None and local:
                room.release(local)
        batch.done = True  # published by the worker (_work)

    def _new_room(self, event: Event) -> RoomState:
        room = RoomState(event.room_id, event.room_version)
        self._cache.put(room)
        return room

    def _txn(self, txn: Txn, room_id: str, items: list[_Item], rows: list[EventRow],
             snapshot: tuple[dict[StateKey, str], int | None, list[str], int]) -> _Plan:
        current, group, extremities, depth = snapshot
        current = dict(current)
        ext = set(extremities)
        per_event: list[tuple[int, dict[StateKey, str] | None]] = []
        state_rows: list[tuple[str, str, int, int]] = []
        members: dict[str, Membership] = {}
        all_delta: dict[StateKey, str | None] = {}
        #: (state after, its group) of the previous backfilled event: a run of old messages shares a group.
        history: tuple[dict[StateKey, str], int] | None = None
        for item, row in zip(items, rows):
            ctx, ev = item.ctx, item.ctx.event
            if ev.type == "m.room.create" and ev.state_key == "":
                creator = ev.content.get("creator") if not ev.room_version.implicit_room_creator else ev.sender
                self._rooms.store_room_txn(txn, room_id, ev.room_version.identifier,
                                           creator if isinstance(creator, str) else ev.sender, False,
                                           ev.origin_server_ts)
            if ctx.outlier or ev.rejected:
                per_event.append((row.stream_ordering, None))
                if ev.rejected and not ctx.outlier:
                    before_g = group if group is not None else self._state.new_group_txn(txn, room_id, current, None)
                    group = before_g
                    state_rows.append((room_id, ev.event_id, before_g, before_g))
                continue
            if ctx.backfilled:
                before = ctx.state_before if ctx.state_before is not None else current
                history = self._history_txn(txn, room_id, ev, dict(before),
                                            history or (current, group), state_rows)
                per_event.append((row.stream_ordering, None))
                continue
            # state before the event, and its group
            if ctx.state_before is None:
                before = current
                if group is None:
                    group = self._state.new_group_txn(txn, room_id, current, None)
                before_g = group
            else:
                before = dict(ctx.state_before)
                before_g = group if before == current and group is not None else \
                    self._state.new_group_txn(txn, room_id, before, group)
            if ev.state_key is not None:
                after = dict(before)
                after[(ev.type, ev.state_key)] = ev.event_id
                after_g = self._state.new_group_txn(txn, room_id, after, before_g)
            else:
                after, after_g = before, before_g
            state_rows.append((room_id, ev.event_id, before_g, after_g))
            # the room's new current state, and the delta from the previous one
            delta: dict[StateKey, str] = {}
            if ctx.new_current_state is None and after is current:
                new_group = after_g  # a message on the current state: nothing changes
            elif ctx.new_current_state is None and ctx.state_before is None:
                delta = {(ev.type, ev.state_key or ""): ev.event_id}  # a local state event
                new_group = after_g
            else:
                new_current = dict(ctx.new_current_state) if ctx.new_current_state is not None else after
                new_group = after_g if new_current == after else \
                    self._state.new_group_txn(txn, room_id, new_current, after_g)
                delta = {k: v for k, v in new_current.items() if current.get(k) != v}
                for k in current:
                    if k not in new_current:
                        all_delta[k] = None
                after = new_current
            all_delta.update(delta)
            for (etype, skey), eid in delta.items():
                if etype == "m.room.member":
                    if eid == ev.event_id:
                        members[skey] = Membership(room_id, skey, ev.membership or "leave", eid, ev.sender,
                                                   row.stream_ordering)
                    else:
                        members[skey] = Membership(room_id, skey, "?", eid, "", row.stream_ordering)
            current, group = after, new_group
            per_event.append((row.stream_ordering, delta))
            # extremities
            if ctx.new_extremities is not None:
                ext = set(ctx.new_extremities)
            elif not ctx.backfilled:
                ext -= set(ev.prev_event_ids)
                ext.add(ev.event_id)
            depth = max(depth, ev.depth)
        self._events.persist_txn(txn, rows)
        self._state.store_event_state_txn(txn, state_rows)
        self._state.update_current_state_txn(txn, room_id, all_delta)
        unresolved = [m for m in members.values() if m.membership == "?"]
        if unresolved:
            # Membership changed through resolved state: read the member events' content.
            cond, args = txn.in_list("event_id", [m.event_id for m in unresolved])
            found = {r[0]: (r[1], r[2]) for r in txn.query(
                f"SELECT event_id, json, sender FROM events WHERE room_id = ? AND {cond}", [room_id, *args])}
            for m in unresolved:
                if m.event_id in found:
                    content = json.loads(found[m.event_id][0]).get("content", {})
                    members[m.user_id] = Membership(room_id, m.user_id, str(content.get("membership", "leave")),
                                                    m.event_id, found[m.event_id][1], m.stream_ordering)
                else:
                    members.pop(m.user_id)
        self._state.update_memberships_txn(txn, members.values())
        if set(extremities) != ext:
            self._events.update_extremities_txn(txn, room_id, ext)
        return _Plan(current, group, sorted(ext), depth, per_event,
                     {event_id: (before_g, after_g) for _room, event_id, before_g, after_g in state_rows})

    def _history_txn(self, txn: Txn, room_id: str, ev: Event, before: dict[StateKey, str],
                     base: tuple[dict[StateKey, str], int | None], state_rows: list[tuple[str, str, int, int]]
                     ) -> tuple[dict[StateKey, str], int]:
        """Record a backfilled event's state (groups chained on ``base``); returns its state after."""
        base_state, base_group = base
        before_g = base_group if before == base_state and base_group is not None else \
            self._state.new_group_txn(txn, room_id, before, base_group)
        after, after_g = before, before_g
        if ev.state_key is not None:
            after = {**before, (ev.type, ev.state_key): ev.event_id}
            after_g = self._state.new_group_txn(txn, room_id, after, before_g)
        state_rows.append((room_id, ev.event_id, before_g, after_g))
        return after, after_g

    async def _apply(self, room: RoomState, items: list[_Item], rows: list[EventRow], plan: _Plan,
                     batch: _Batch) -> None:
        """After commit: update the event cache and room state, and prepare publication."""
        batch_events = {i.ctx.event.event_id: i.ctx.event for i in items}
        stored_list = []
        for item, row in zip(items, rows):
            stored = StoredEvent(item.ctx.event, row.stream_ordering, item.ctx.event.depth, item.ctx.outlier)
            groups = plan.state_groups.get(stored.event_id)
            if groups is not None:
                stored.state_before, stored.state_after = groups
            self._events.cache_persisted(stored)
            if item.ctx.txn_key is not None:
                self._events.remember_txn_id(room.room_id, item.ctx.txn_key, stored.event_id, row.inserted_ts)
            stored_list.append(stored)
        # Events named by resolved state that we don't hold in memory yet.
        wanted = {e for _, d in plan.per_event if d for e in d.values()
                  if e not in batch_events and e not in {x.event_id for x in room.state.values()}}
        fetched = await self._events.get_events(wanted, allow_rejected=True) if wanted else {}
        joined = frozenset(room.joined)
        for item, stored, (stream, delta) in zip(items, stored_list, plan.per_event):
            ev = item.ctx.event
            membership = None
            if delta is not None:
                for key, eid in delta.items():
                    new_ev = batch_events.get(eid) or (fetched[eid].event if eid in fetched else None)
                    if new_ev is None:
                        continue
                    if key[0] == "m.room.member" and key[1] == ev.state_key and eid == ev.event_id:
                        membership = (key[1], room.membership(key[1]), ev.membership or "leave")
                    room.apply(new_ev)
                if any(k[0] == "m.room.member" for k in delta):
                    joined = frozenset(room.joined)
            if ev.redacts is not None and not ev.rejected and not item.ctx.outlier:
                # A redacted state event stays in the state, in its redacted form.
                for key, cur in list(room.state.items()):
                    if cur.event_id == ev.redacts:
                        room.apply(cur.redacted())
            item_result = PersistedEvent(ev, stream, ev.depth, joined, membership, item.ctx.txn_key, stored)
            batch.results.append(item_result)
            if delta is not None and not item.ctx.backfilled:
                batch.published.append(item_result)
        removed = [k for k in room.state if k not in plan.current_ids]
        if removed:
            room.set_state({k: v for k, v in room.state.items() if k in plan.current_ids})
        room.state_group = plan.state_group
        room.extremities = plan.extremities
        room.depth = plan.depth

    def _flush(self) -> None:
        """Publish finished batches in stream order, then answer their callers."""
        while self._batches:
            seq, batch = next(iter(self._batches.items()))
            if not batch.done:
                return
            del self._batches[seq]
            self._stream.publish(batch.published, batch.last)
            for item, result in zip(batch.items, batch.results):
                if isinstance(result, BaseException):
                    item.deferred.errback(result)
                else:
                    item.deferred.callback(result)
