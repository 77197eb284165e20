"""Evaluating push rules for every persisted event: unread counts, notifications, pushes.

:class:`NotificationService` implements the counting interface /sync reads
(``on_events``, ``on_receipt``, ``counts``; see ``homeserver/sync/unread.py``):
for each event it evaluates the push rules of every local member except the
sender (plus a local invitee), keeps the unread notifications per (room, user)
in memory, and hands the notifications to listeners (the pusher pool).

Counts are in memory, so the count for an event is in the same /sync
response as the event itself. Durable rows (for ``GET /notifications`` and for
counts after a restart) hold one *group* each: the members notified about an
event with the same actions, so a message makes one to three rows whatever
the size of the group. They are written off the send path, batched: all
groups of every event evaluated during ``flush_delay_s`` go together
(multi-row INSERTs, in transactions of at most ``FLUSH_CHUNK`` notified
members so that message persists interleave), with the read positions that
moved. A crash loses at most that window of rows.

A read receipt (or the member's own event) sets their read position in the
room; the notifications at or before it are dropped from the counts. Threaded
receipts count as reading the main timeline up to the event (counts are not
partitioned per thread).
"""
from __future__ import annotations

import logging
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Collection, Container, Iterable, Mapping, Protocol

from twisted.internet import defer

from homeserver.push.evaluator import EventContext, evaluate
from homeserver.push.rule_service import PushRuleService
from homeserver.storage.push import PushStore, join_user_ids
from homeserver.util.clock import Clock

logger = logging.getLogger(__name__)

#: Notified members (summed over the groups) written per transaction by
#: :meth:`NotificationService.flush`; a group is never split.
FLUSH_CHUNK = 20000
#: Unread notifications tracked per (room, user); older ones only count.
MAX_TRACKED = 1000
#: Recent events remembered (event ID -> position / client dict) to resolve receipts.
RECENT_EVENTS = 20000
#: Notification rows older than this are not loaded into counts at start-up.
RETENTION_MS = 30 * 24 * 3600 * 1000
#: How often rows past the retention are deleted.
PRUNE_INTERVAL_S = 6 * 3600.0


class RoomView(Protocol):
    """What evaluation needs to know about a room (the in-memory room state)."""

    def local_members(self, room_id: str) -> Collection[str]:
        """Joined members on this server."""
    def member_count(self, room_id: str) -> int:
        """Joined members on every server."""
    def display_names(self, room_id: str) -> Mapping[str, str]:
        """user_id -> display name in the room (members without one may be absent)."""
    def power_level(self, room_id: str, user_id: str) -> int: ...
    def notification_levels(self, room_id: str) -> Mapping[str, Any]: ...
    def room_name(self, room_id: str) -> str | None: ...
    def room_alias(self, room_id: str) -> str | None: ...


@dataclass
class Notification:
    """One event a user is notified about (what pushers send)."""

    room_id: str
    user_id: str
    event_id: str
    stream_ordering: int
    event: dict[str, Any]
    actions: tuple[Any, ...]
    highlight: bool
    ts: int


class _Unread:
    """One (room, user)'s unread notifications, oldest first, with running totals.

    ``entries`` holds ``(stream_ordering, highlight, is_call)``; beyond
    :data:`MAX_TRACKED` the oldest stop being tracked one by one but still
    count (``extra``), until a receipt past them clears them.
    """

    __slots__ = ("entries", "count", "highlights", "calls", "extra")

    def __init__(self) -> None:
        self.entries: deque[tuple[int, bool, bool]] = deque()
        self.count = 0
        self.highlights = 0
        self.calls = 0
        self.extra: list[int] = [0, 0, 0]  # count, highlights, calls of untracked ones

    def add(self, so: int, highlight: bool, is_call: bool) -> None:
        self.entries.append((so, highlight, is_call))
        self.count += 1
        self.highlights += highlight
        self.calls += is_call
        if len(self.entries) > MAX_TRACKED:
            _, h, c = self.entries.popleft()
            self.extra[0] += 1
            self.extra[1] += h
            self.extra[2] += c

    def read_up_to(self, so: int) -> None:
        entries = self.entries
        if entries and entries[0][0] <= so and self.extra[0]:
            self.count -= self.extra[0]
            self.highlights -= self.extra[1]
            self.calls -= self.extra[2]
            self.extra = [0, 0, 0]
        while entries and entries[0][0] <= so:
            _, h, c = entries.popleft()
            self.count -= 1
            self.highlights -= h
            self.calls -= c

    def counts(self) -> tuple[int, int]:
        return self.count, self.highlights


def event_fields(event: Any) -> tuple[dict[str, Any], str, str, str, int]:
    """(client dict, room ID, event ID, sender, stream ordering) of a SyncEvent or PersistedEvent."""
    client = getattr(event, "client", None)
    if client is None:
        ev = event.event
        pdu = ev.pdu
        client = {"type": ev.type, "content": ev.content, "sender": ev.sender, "event_id": ev.event_id,
                  "room_id": ev.room_id, "origin_server_ts": ev.origin_server_ts}
        if ev.state_key is not None:
            client["state_key"] = ev.state_key
        if pdu.get("unsigned"):
            client["unsigned"] = pdu["unsigned"]
    elif "room_id" not in client:  # the /sync timeline form leaves it out; room rules need it
        client = {**client, "room_id": event.room_id}
    return client, event.room_id, event.event_id, client.get("sender", ""), int(event.stream_ordering)


class NotificationService:
    """Push rule evaluation on every event, the unread counts, and the notification list.

    Args:
        position_of: ``async (room_id, event_id) -> stream ordering or None``,
            for receipts on events older than the recent-events window.
        fetch_events: ``async (event_ids) -> {event_id: client dict}`` for
            ``GET /notifications`` on events older than that window.
        rooms_of: ``async (user_id) -> room IDs`` the user is or was in, where
            ``GET /notifications`` looks; without it, it looks in every room.
        ignored_by: ``user_id -> the users they ignore`` (``m.ignored_user_list``, no I/O):
            their events neither notify nor count for that user.
    """

    def __init__(self, store: PushStore, rules: PushRuleService, rooms: RoomView, clock: Clock,
                 is_local: Callable[[str], bool], flush_delay_s: float = 0.5,
                 position_of: Callable[[str, str], Awaitable[int | None]] | None = None,
                 fetch_events: Callable[[list[str]], Awaitable[dict[str, dict[str, Any]]]] | None = None,
                 ) -> None:
        self._store = store
        self._rules = rules
        self._rooms = rooms
        self._clock = clock
        self._is_local = is_local
        self._flush_delay_s = flush_delay_s
        self.position_of = position_of
        self.fetch_events = fetch_events
        self.rooms_of: Callable[[str], Awaitable[list[str]]] | None = None
        self.ignored_by: Callable[[str], Container[str]] = lambda user_id: ()
        #: room_id -> user_id -> unread notifications (per room, so an event does one lookup).
        self._unread: dict[str, dict[str, _Unread]] = {}
        self._user_rooms: dict[str, set[str]] = {}
        self._read: dict[tuple[str, str], int] = {}
        self._recent: OrderedDict[str, tuple[int, dict[str, Any]]] = OrderedDict()
        #: (room, stream ordering, grp, event ID, actions JSON, highlight, is_call, ts, user IDs)
        #: groups to write (see PushStore.add_notifications).
        self._pending_rows: list[tuple] = []
        self._pending_read: dict[tuple[str, str], int] = {}
        self._flush_call: Any = None
        self._prune_call: Any = None
        self._flushing: defer.Deferred[None] | None = None
        #: ``fn(notifications)`` after each batch is evaluated (the pusher pool).
        self.listeners: list[Callable[[list[Notification]], None]] = []
        #: Users whose notifications listeners want (those with pushers); set by the pool.
        self.wanted: Container[str] = frozenset()

    # --- start-up and shutdown ---------------------------------------------------

    async def load(self) -> None:
        """Rebuild the counts from the stored rows (once; later calls do nothing)."""
        if self._prune_call is not None:
            return
        since = self._clock.time_msec() - RETENTION_MS
        read, rows = await self._store.load_unread(since)
        self._read = read
        for room_id, so, highlight, is_call, user_ids in rows:
            for user_id in user_ids:
                self._unread_for(room_id, user_id).add(so, highlight, is_call)
        self._prune_call = self._clock.looping_call(self._prune, PRUNE_INTERVAL_S, now=True)

    def _prune(self) -> "defer.Deferred[Any]":
        """Delete notification rows past the retention (they no longer count or list)."""
        d = defer.ensureDeferred(self._store.prune_notifications(self._clock.time_msec() - RETENTION_MS))
        d.addErrback(lambda f: logger.error("pruning notifications: %s", f.value))
        return d

    async def stop(self) -> None:
        if self._prune_call is not None and self._prune_call.running:
            self._prune_call.stop()
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        await self.flush()

    # --- the counting interface ----------------------------------------------------

    def counts(self, user_id: str, room_id: str) -> tuple[int, int]:
        """(notification_count, highlight_count) of a user in a room."""
        unread = self._unread.get(room_id, {}).get(user_id)
        return unread.counts() if unread is not None else (0, 0)

    def totals(self, user_id: str) -> tuple[int, int]:
        """(unread notifications, missed calls) over all the user's rooms (push badges)."""
        total = calls = 0
        for room_id in self._user_rooms.get(user_id, ()):
            unread = self._unread.get(room_id, {}).get(user_id)
            if unread is not None:
                total += unread.counts()[0]
                calls += unread.calls
        return total, calls

    def read_position(self, room_id: str, user_id: str) -> int:
        return self._read.get((room_id, user_id), 0)

    def is_read(self, notification: Notification) -> bool:
        return notification.stream_ordering <= self.read_position(notification.room_id, notification.user_id)

    def on_events(self, events: Iterable[Any]) -> None:
        """Evaluate a batch of persisted events (SyncEvent or PersistedEvent objects)."""
        out: list[Notification] = []
        now = self._clock.time_msec()
        for event in events:
            try:
                self._evaluate(event, now, out)
            except Exception:
                logger.exception("push rule evaluation failed for %s", getattr(event, "event_id", "?"))
        if out and self.listeners:
            for listener in self.listeners:
                try:
                    listener(out)
                except Exception:
                    logger.exception("notification listener failed")
        self._schedule()

    def on_receipt(self, room_id: str, user_id: str, event_id: str) -> None:
        """A read receipt (m.read or m.read.private) of a local user."""
        known = self._recent.get(event_id)
        if known is not None:
            self.mark_read(room_id, user_id, known[0])
        elif self.position_of is not None:
            defer.ensureDeferred(self._receipt_later(room_id, user_id, event_id))

    async def _receipt_later(self, room_id: str, user_id: str, event_id: str) -> None:
        assert self.position_of is not None
        try:
            so = await self.position_of(room_id, event_id)
        except Exception:
            logger.exception("resolving the position of receipted event %s", event_id)
            return
        if so is not None:
            self.mark_read(room_id, user_id, so)

    def forget(self, room_id: str, user_id: str) -> None:
        """The user left the room: their counts there go."""
        room = self._unread.get(room_id)
        if room is not None and room.pop(user_id, None) is not None:
            self._user_rooms.get(user_id, set()).discard(room_id)

    def mark_read(self, room_id: str, user_id: str, stream_ordering: int) -> None:
        key = (room_id, user_id)
        if stream_ordering <= self._read.get(key, 0):
            return
        self._read[key] = stream_ordering
        self._pending_read[key] = stream_ordering
        room = self._unread.get(room_id)
        unread = room.get(user_id) if room is not None else None
        if unread is not None:
            unread.read_up_to(stream_ordering)
            if not unread.count:
                del room[user_id]  # type: ignore[union-attr]
                rooms = self._user_rooms.get(user_id)
                if rooms is not None:
                    rooms.discard(room_id)
        self._schedule()

    # --- evaluation ------------------------------------------------------------------

    def _unread_for(self, room_id: str, user_id: str) -> _Unread:
        room = self._unread.setdefault(room_id, {})
        unread = room.get(user_id)
        if unread is None:
            unread = room[user_id] = _Unread()
            self._user_rooms.setdefault(user_id, set()).add(room_id)
        return unread

    def _evaluate(self, event: Any, now: int, out: list[Notification]) -> None:
        client, room_id, event_id, sender, so = event_fields(event)
        self._recent[event_id] = (so, client)
        if len(self._recent) > RECENT_EVENTS:
            self._recent.popitem(last=False)
        if self._is_local(sender):
            self.mark_read(room_id, sender, so)  # sending is reading
        rooms = self._rooms
        members: Collection[str] = rooms.local_members(room_id)
        if client.get("type") == "m.room.member":
            target = client.get("state_key")
            membership = (client.get("content") or {}).get("membership")
            if isinstance(target, str) and self._is_local(target):
                if membership == "invite":
                    members = set(members) | {target}
                elif membership in ("leave", "ban"):
                    self.forget(room_id, target)
        if not members:
            return
        ctx = EventContext(client, rooms.member_count(room_id), rooms.power_level(room_id, sender),
                           rooms.notification_levels(room_id))
        names = rooms.display_names(room_id)
        compiled = self._rules.compiled
        is_call = client.get("type") == "m.call.invite"
        wanted = self.wanted
        room_unread = self._unread.setdefault(room_id, {})
        # One stored row per distinct actions: most members share the default rule's.
        groups: dict[str, tuple[bool, list[str]]] = {}
        ignored_by = self.ignored_by
        for user_id in members:
            if user_id == sender or sender in ignored_by(user_id):
                continue  # module "Ignoring Users": no notification, no unread count
            rule = evaluate(ctx, compiled(user_id), user_id, names.get(user_id))
            if rule is None or not rule.notify:
                continue
            unread = room_unread.get(user_id)
            if unread is None:
                unread = self._unread_for(room_id, user_id)
            unread.add(so, rule.highlight, is_call)
            group = groups.get(rule.actions_json)
            if group is None:
                group = groups[rule.actions_json] = (rule.highlight, [])
            group[1].append(user_id)
            if user_id in wanted:
                out.append(Notification(room_id, user_id, event_id, so, client, rule.actions,
                                        rule.highlight, now))
        rows = self._pending_rows
        for grp, (actions_json, (highlight, user_ids)) in enumerate(groups.items()):
            rows.append((room_id, so, grp, event_id, actions_json, highlight, is_call, now,
                         join_user_ids(user_ids)))

    # --- durable rows --------------------------------------------------------------------

    def _schedule(self) -> None:
        if (self._pending_rows or self._pending_read) and self._flush_call is None:
            self._flush_call = self._clock.call_later(self._flush_delay_s, self._flush_now)

    def _flush_now(self) -> None:
        self._flush_call = None
        defer.ensureDeferred(self.flush())

    async def flush(self) -> None:
        """Write the pending notification rows and read positions in one transaction."""
        while self._flushing is not None:  # one flush at a time keeps rows in order
            await self._flushing
        rows, self._pending_rows = self._pending_rows, []
        positions, self._pending_read = self._pending_read, {}
        if not rows and not positions:
            return
        self._flushing = defer.Deferred()
        try:
            # In chunks: SQLite has one writer, and a message's persist queued
            # behind one big transaction (500 members x a burst of messages)
            # would wait for all of it; between chunks it goes first.
            while True:
                end = members = 0
                while end < len(rows) and members < FLUSH_CHUNK:
                    members += rows[end][8].count("\n") - 1
                    end += 1
                if end == len(rows):
                    break
                await self._store.add_notifications(rows[:end], ())
                del rows[:end]
            await self._store.add_notifications(rows, [(r, u, so) for (r, u), so in positions.items()])
        except Exception:
            logger.exception("saving %d notifications", len(rows))
            self._pending_rows[:0] = rows
            for key, so in positions.items():
                self._pending_read[key] = max(so, self._pending_read.get(key, 0))
            self._schedule()
        finally:
            done, self._flushing = self._flushing, None
            done.callback(None)

    # --- GET /notifications ----------------------------------------------------------------

    async def notifications(self, user_id: str, before: int | None, limit: int,
                            only_highlight: bool) -> tuple[list[dict[str, Any]], int | None]:
        """A page of the user's notifications, newest first, and the next ``from`` position."""
        await self.flush()
        rooms = await self.rooms_of(user_id) if self.rooms_of is not None else None
        rows = await self._store.get_notifications(user_id, rooms, before, limit, only_highlight)
        events: dict[str, dict[str, Any]] = {}
        if self.fetch_events is not None:  # the event store: redactions applied
            events = await self.fetch_events([row.event_id for row in rows])
        else:
            for row in rows:
                recent = self._recent.get(row.event_id)
                if recent is not None:
                    events[row.event_id] = recent[1]
        out = []
        for row in rows:
            event = events.get(row.event_id)
            if event is None:
                continue
            event = {k: v for k, v in event.items() if k != "room_id"}
            out.append({"actions": list(row.actions), "event": event, "room_id": row.room_id,
                        "ts": row.ts, "read": row.stream_ordering <= self.read_position(row.room_id, user_id)})
        next_from = rows[-1].stream_ordering if len(rows) == limit else None
        return out, next_from
