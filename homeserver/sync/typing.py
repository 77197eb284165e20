"""Typing notifications: in memory only, expired with the injected Clock.

Each room has a serial that moves on every change; /sync includes a room's
``m.typing`` when the room's serial is past the token's typing position.
Remote (federation) typing arrives through :meth:`TypingService.on_remote_typing`;
local changes are offered to ``outbound`` hooks for the federation sender.
"""
from __future__ import annotations

from typing import Any, Callable

from homeserver.api.errors import forbidden
from homeserver.sync.membership import MembershipIndex
from homeserver.sync.notifier import Notifier
from homeserver.util.clock import Clock

#: Longest typing timeout honoured; clients ask for 30 s typically.
MAX_TIMEOUT_MS = 120_000
DEFAULT_TIMEOUT_MS = 30_000

OutboundTyping = Callable[[str, str, bool, int], None]


class TypingService:
    def __init__(self, clock: Clock, membership: MembershipIndex, notifier: Notifier,
                 is_local: Callable[[str], bool] = lambda user_id: True) -> None:
        self._clock = clock
        self._membership = membership
        self._notifier = notifier
        self._is_local = is_local
        self._typing: dict[str, dict[str, Any]] = {}  # room -> user -> timer
        self._room_serial: dict[str, int] = {}
        self._serial = 0
        #: ``hook(room_id, user_id, typing, timeout_ms)`` for local users' changes.
        self.outbound: list[OutboundTyping] = []

    def position(self) -> int:
        return self._serial

    def set_typing(self, room_id: str, user_id: str, typing: bool, timeout_ms: int | None) -> None:
        """A local user starts or stops typing. Members only."""
        if not self._membership.is_joined(room_id, user_id):
            raise forbidden("You are not a member of this room")
        timeout = min(max(timeout_ms or DEFAULT_TIMEOUT_MS, 0), MAX_TIMEOUT_MS)
        self._apply(room_id, user_id, typing, timeout)
        for hook in self.outbound:
            hook(room_id, user_id, typing, timeout)

    def on_remote_typing(self, room_id: str, user_id: str, typing: bool,
                         timeout_ms: int = DEFAULT_TIMEOUT_MS) -> None:
        """A typing EDU from another server (already checked to come from the user's server)."""
        if not self._membership.is_joined(room_id, user_id):
            return
        self._apply(room_id, user_id, typing, min(timeout_ms, MAX_TIMEOUT_MS))

    def _apply(self, room_id: str, user_id: str, typing: bool, timeout_ms: int) -> None:
        users = self._typing.setdefault(room_id, {})
        timer = users.pop(user_id, None)
        was_typing = timer is not None
        if timer is not None and timer.active():
            timer.cancel()
        if typing:
            users[user_id] = self._clock.call_later(timeout_ms / 1000, self._expire, room_id, user_id)
        elif not users:
            del self._typing[room_id]
        if typing != was_typing:
            self._changed(room_id)

    def _expire(self, room_id: str, user_id: str) -> None:
        users = self._typing.get(room_id)
        if users is None or user_id not in users:
            return
        del users[user_id]
        if not users:
            del self._typing[room_id]
        self._changed(room_id)

    def _changed(self, room_id: str) -> None:
        self._serial += 1
        self._room_serial[room_id] = self._serial
        self._notifier.notify("typing", self._serial, rooms=[room_id])

    def typing_users(self, room_id: str) -> list[str]:
        return sorted(self._typing.get(room_id, {}))

    def changed_since(self, room_id: str, since: int) -> bool:
        # A token from before a restart may be ahead of the serial: treat it as stale.
        return since > self._serial or self._room_serial.get(room_id, 0) > since

    def event(self, room_id: str) -> dict[str, Any]:
        return {"type": "m.typing", "content": {"user_ids": self.typing_users(room_id)}}
