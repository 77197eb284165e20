"""Wakes waiting /sync long-polls and WebSocket connections.

Every stream (events, typing, receipts, ...) reports its new position here
with the users it concerns, or the rooms (whose joined members it concerns).
Waiters are keyed by user: waking is a dictionary lookup per member, never a
query. A waiting long-poll costs one :class:`Listener` and one ``callLater``
for its timeout; nothing runs on a timer while it waits.

Usage by a long-poll::

    listener = notifier.listen(user_id)      # before building, so nothing is missed
    response = await build(...)
    if empty:
        await notifier.wait(listener, timeout_s)   # True when woken, False on timeout
"""
from __future__ import annotations

import logging
from dataclasses import fields
from typing import Callable, Collection, Iterable

from twisted.internet import defer

from homeserver.sync.tokens import StreamToken
from homeserver.util.clock import Clock

logger = logging.getLogger(__name__)

MembersOf = Callable[[str], Collection[str]]


class Listener:
    """One waiter for one user: fires once (long-poll) or on every wake (WebSocket)."""

    __slots__ = ("user_id", "callback", "persistent", "woken", "deferred")

    def __init__(self, user_id: str, callback: Callable[[], None] | None, persistent: bool) -> None:
        self.user_id = user_id
        self.callback = callback
        self.persistent = persistent
        self.woken = False
        self.deferred: defer.Deferred[bool] | None = None

    def fire(self) -> None:
        """Woken: fire the waiting Deferred, call the callback (subclasses may do otherwise)."""
        if self.deferred is not None and not self.deferred.called:
            self.deferred.callback(True)
        if self.callback is not None:
            self.callback()

    def expire(self) -> None:
        """End the wait now as if its timeout had passed (shutdown; subclasses may do otherwise)."""
        if self.deferred is not None and not self.deferred.called:
            self.deferred.callback(False)


class Notifier:
    def __init__(self, clock: Clock, members_of: MembersOf | None = None) -> None:
        self._clock = clock
        #: A user's listeners, in a list: most users have one or two (a set costs 3x the memory).
        self._listeners: dict[str, list[Listener]] = {}
        self._positions: dict[str, int] = {f.name: 0 for f in fields(StreamToken)}
        self._token: StreamToken | None = None
        #: Joined members of a room, from the in-memory state cache (wired by server.py).
        self.members_of: MembersOf = members_of or (lambda room_id: ())
        #: Callbacks ``(stream, position, user_ids)`` after every notify (metrics, replication).
        self.observers: list[Callable[[str, int, set[str]], None]] = []

    # positions

    def set_position(self, stream: str, position: int) -> None:
        if position > self._positions[stream]:
            self._positions[stream] = position
            self._token = None

    def position(self, stream: str) -> int:
        return self._positions[stream]

    def current_token(self) -> StreamToken:
        # One object per position: every woken member formats the same token (its text is cached).
        if self._token is None:
            self._token = StreamToken(**self._positions)
        return self._token

    # waking

    def notify(self, stream: str, position: int, users: Iterable[str] = (),
               rooms: Iterable[str] = ()) -> None:
        """A stream moved to ``position``; wake the given users and the rooms' members."""
        self.set_position(stream, position)
        targets: set[str] = set()
        listeners = self._listeners
        for user_id in users:
            if user_id in listeners:
                targets.add(user_id)
        for room_id in rooms:
            members = self.members_of(room_id)
            if len(members) <= len(listeners):
                targets.update(m for m in members if m in listeners)
            else:
                targets.update(u for u in listeners if u in members)
        for user_id in targets:
            self._wake(user_id)
        for observer in self.observers:
            observer(stream, position, targets)

    def _wake(self, user_id: str) -> None:
        for listener in list(self._listeners.get(user_id, ())):
            if not listener.persistent:
                self._remove(listener)
            listener.woken = True
            try:
                listener.fire()
            except Exception:  # one broken listener must not stop the fan-out
                logger.exception("listener for %s failed", user_id)

    def listen(self, user_id: str, callback: Callable[[], None] | None = None,
               persistent: bool = False) -> Listener:
        """Register a listener. One-shot unless ``persistent`` (remove it with :meth:`remove`)."""
        return self.add(Listener(user_id, callback, persistent))

    def add(self, listener: Listener) -> Listener:
        """Register a listener made by the caller (a :class:`Listener` subclass: see sync/service.py)."""
        group = self._listeners.get(listener.user_id)
        if group is None:
            group = self._listeners[listener.user_id] = []
        group.append(listener)
        return listener

    def remove(self, listener: Listener) -> None:
        self._remove(listener)

    def _remove(self, listener: Listener) -> None:
        group = self._listeners.get(listener.user_id)
        if group is not None and listener in group:
            group.remove(listener)
            if not group:
                del self._listeners[listener.user_id]

    async def wait(self, listener: Listener, timeout_s: float) -> bool:
        """Wait until ``listener`` is woken (True) or ``timeout_s`` passes (False).

        Cancelling the caller's Deferred (client disconnect) removes the listener.
        """
        if listener.woken:
            return True
        if timeout_s <= 0:
            self._remove(listener)
            return False
        d: defer.Deferred[bool] = defer.Deferred()
        listener.deferred = d
        timer = self._clock.call_later(timeout_s, listener.expire)
        try:
            return await d
        finally:
            if timer.active():
                timer.cancel()
            listener.deferred = None
            self._remove(listener)

    def expire_waiters(self) -> int:
        """End every waiting long-poll now, as if its timeout had passed: each answers
        what it has (shutdown). WebSocket listeners (persistent) are left alone."""
        ended = 0
        for group in list(self._listeners.values()):
            for listener in list(group):
                if not listener.persistent:
                    listener.expire()
                    ended += 1
        return ended

    def waiting_users(self) -> int:
        return len(self._listeners)

    def listener_count(self) -> int:
        return sum(len(g) for g in self._listeners.values())

