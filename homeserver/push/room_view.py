"""Adapters giving the push module its narrow view of rooms (:class:`RoomView`)."""
from __future__ import annotations

from typing import Any, Collection, Mapping


class EmptyRoomView:
    """No rooms: the view used when no room state is wired in (nothing is evaluated)."""

    def local_members(self, room_id: str) -> Collection[str]:
        return ()

    def member_count(self, room_id: str) -> int:
        return 0

    def display_names(self, room_id: str) -> Mapping[str, str]:
        return {}

    def power_level(self, room_id: str, user_id: str) -> int:
        return 0

    def notification_levels(self, room_id: str) -> Mapping[str, Any]:
        return {}

    def room_name(self, room_id: str) -> str | None:
        return None

    def room_alias(self, room_id: str) -> str | None:
        return None


class _DisplayNames:
    """Display names looked up in the room's member events on demand (no per-event dict)."""

    __slots__ = ("_state",)

    def __init__(self, state: Mapping[tuple[str, str], Any]) -> None:
        self._state = state

    def get(self, user_id: str, default: Any = None) -> Any:
        ev = self._state.get(("m.room.member", user_id))
        if ev is None:
            return default
        name = ev.content.get("displayname")
        return name if isinstance(name, str) else default


class _NotificationLevels:
    __slots__ = ("_pl",)

    def __init__(self, pl: Any) -> None:
        self._pl = pl

    def get(self, key: str, default: Any = None) -> Any:
        return self._pl.notification_level(key)


class StateCacheRoomView:
    """The push module's view of rooms, read from the in-memory room states (no I/O).

    Rooms not loaded in memory have no members here: events are only
    published for rooms the persister has just loaded, so that does not happen
    in practice.
    """

    def __init__(self, states: Any, server_name: str) -> None:
        self._states = states
        self._suffix = ":" + server_name

    def local_members(self, room_id: str) -> Collection[str]:
        room = self._states.peek(room_id)
        if room is None:
            return ()
        suffix = self._suffix
        return [u for u in room.joined if u.endswith(suffix)]

    def member_count(self, room_id: str) -> int:
        room = self._states.peek(room_id)
        return len(room.joined) if room is not None else 0

    def display_names(self, room_id: str) -> Mapping[str, str]:
        room = self._states.peek(room_id)
        return _DisplayNames(room.state) if room is not None else {}  # type: ignore[return-value]

    def power_level(self, room_id: str, user_id: str) -> int:
        room = self._states.peek(room_id)
        return room.power_levels.user_level(user_id) if room is not None else 0

    def notification_levels(self, room_id: str) -> Mapping[str, Any]:
        room = self._states.peek(room_id)
        return _NotificationLevels(room.power_levels) if room is not None else {}  # type: ignore[return-value]

    def room_name(self, room_id: str) -> str | None:
        room = self._states.peek(room_id)
        name = room.content("m.room.name").get("name") if room is not None else None
        return name if isinstance(name, str) and name else None

    def room_alias(self, room_id: str) -> str | None:
        room = self._states.peek(room_id)
        alias = room.content("m.room.canonical_alias").get("alias") if room is not None else None
        return alias if isinstance(alias, str) and alias else None
