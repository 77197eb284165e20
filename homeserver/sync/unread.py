"""Unread notification counts per (room, user), kept incrementally.

:class:`UnreadCounter` is the interface /sync reads; :class:`DefaultUnreadCounter`
implements the default push rules' semantics for counting, and the push-rules
work (issue 11) can replace it with one that evaluates each user's rules:

- count messages (``m.room.message`` except notices, ``m.room.encrypted``,
  ``m.sticker``, call invites) from others, except edits;
- highlight when the event mentions the user (``m.mentions.user_ids``, or for
  events without ``m.mentions`` the user's display name or localpart in the
  body), or mentions the room (``m.mentions.room``, or ``@room`` in a legacy
  body) and the sender has the ``notifications.room`` power;
- a read receipt (``m.read`` or ``m.read.private``) resets the counts to the
  messages after the receipted event.

Counts live in memory and are written to ``unread_counts`` in batches (one
transaction at most every ``FLUSH_DELAY_S``), so a sync never recomputes them.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Callable, Collection, Iterable, Protocol

from twisted.internet import defer

from homeserver.storage.database import Database, Txn
from homeserver.sync.events import SyncEvent
from homeserver.sync.recent import RecentEvents
from homeserver.util.clock import Clock

logger = logging.getLogger(__name__)

FLUSH_DELAY_S = 1.0
COUNTED_TYPES = frozenset({"m.room.message", "m.room.encrypted", "m.sticker", "m.call.invite"})


class UnreadCounter(Protocol):
    def on_events(self, events: Iterable[SyncEvent]) -> None: ...
    def on_receipt(self, room_id: str, user_id: str, event_id: str) -> None: ...
    def counts(self, user_id: str, room_id: str) -> tuple[int, int]: ...


class DefaultUnreadCounter:
    def __init__(self, db: Database, clock: Clock, recent: RecentEvents,
                 members_of: Callable[[str], Collection[str]]) -> None:
        self._db = db
        self._clock = clock
        self._recent = recent
        self._members_of = members_of
        self._counts: dict[tuple[str, str], list[int]] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._flush_call: Any = None
        #: ``(room_id, user_id) -> display name or None``; wired to room state by server.py.
        self.display_name: Callable[[str, str], str | None] = lambda room_id, user_id: None
        #: ``(room_id, sender) -> bool``: may the sender notify the whole room?
        self.can_notify_room: Callable[[str, str], bool] = lambda room_id, sender: False

    async def load(self) -> None:
        rows = await self._db.run(lambda txn: txn.query(
            "SELECT room_id, user_id, notification_count, highlight_count FROM unread_counts"
            " WHERE notification_count > 0 OR highlight_count > 0"))
        self._counts = {(r[0], r[1]): [int(r[2]), int(r[3])] for r in rows}

    def counts(self, user_id: str, room_id: str) -> tuple[int, int]:
        value = self._counts.get((room_id, user_id))
        return (value[0], value[1]) if value else (0, 0)

    def on_events(self, events: Iterable[SyncEvent]) -> None:
        for event in events:
            if event.type not in COUNTED_TYPES or event.state_key is not None:
                continue
            content = event.client.get("content")
            if not isinstance(content, dict) or _is_suppressed(content):
                continue
            room_wide = self._mentions_room(event, content)
            for user_id in self._members_of(event.room_id):
                if user_id == event.sender:
                    continue
                key = (event.room_id, user_id)
                value = self._counts.setdefault(key, [0, 0])
                value[0] += 1
                if room_wide or self._mentions_user(event, content, user_id):
                    value[1] += 1
                self._dirty.add(key)
        self._schedule()

    def on_receipt(self, room_id: str, user_id: str, event_id: str) -> None:
        after = self._recent.after(room_id, event_id)
        value = [0, 0]
        for event in after or ():
            if event.sender == user_id:
                value = [0, 0]  # own message: everything before it is read
                continue
            if event.type in COUNTED_TYPES and event.state_key is None:
                content = event.client.get("content")
                if isinstance(content, dict) and not _is_suppressed(content):
                    value[0] += 1
                    if self._mentions_room(event, content) or self._mentions_user(event, content, user_id):
                        value[1] += 1
        key = (room_id, user_id)
        if self._counts.get(key, [0, 0]) != value:
            self._counts[key] = value
            self._dirty.add(key)
            self._schedule()

    def _mentions_user(self, event: SyncEvent, content: dict[str, Any], user_id: str) -> bool:
        mentions = content.get("m.mentions")
        if isinstance(mentions, dict):
            ids = mentions.get("user_ids")
            return isinstance(ids, list) and user_id in ids
        body = content.get("body")
        if not isinstance(body, str):
            return False
        localpart = user_id[1:].split(":", 1)[0]
        if _word_in(localpart, body):
            return True
        name = self.display_name(event.room_id, user_id)
        return bool(name) and _word_in(name, body)

    def _mentions_room(self, event: SyncEvent, content: dict[str, Any]) -> bool:
        mentions = content.get("m.mentions")
        if isinstance(mentions, dict):
            wants = mentions.get("room") is True
        else:
            body = content.get("body")
            wants = isinstance(body, str) and "@room" in body
        return wants and self.can_notify_room(event.room_id, event.sender)

    def forget(self, room_id: str, user_id: str) -> None:
        key = (room_id, user_id)
        if self._counts.pop(key, None) is not None:
            self._dirty.add(key)
            self._schedule()

    def _schedule(self) -> None:
        if self._dirty and self._flush_call is None:
            self._flush_call = self._clock.call_later(FLUSH_DELAY_S, self._flush_now)

    def _flush_now(self) -> None:
        self._flush_call = None
        defer.ensureDeferred(self.flush())

    async def flush(self) -> None:
        dirty, self._dirty = self._dirty, set()
        rows = [(r, u, *self._counts.get((r, u), [0, 0])) for r, u in dirty]
        if not rows:
            return

        def fn(txn: Txn) -> None:
            txn.executemany(
                "INSERT INTO unread_counts (room_id, user_id, notification_count, highlight_count)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (room_id, user_id) DO UPDATE SET"
                " notification_count = excluded.notification_count, highlight_count = excluded.highlight_count",
                rows)

        try:
            await self._db.run(fn)
        except Exception:
            logger.exception("saving unread counts")
            self._dirty |= dirty

    async def stop(self) -> None:
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        await self.flush()


def _is_suppressed(content: dict[str, Any]) -> bool:
    if content.get("msgtype") == "m.notice":
        return True
    rel = content.get("m.relates_to")
    return isinstance(rel, dict) and rel.get("rel_type") == "m.replace"


def _word_in(needle: str, body: str) -> bool:
    return re.search(r"(?<![\w])" + re.escape(needle) + r"(?![\w])", body, re.IGNORECASE) is not None
