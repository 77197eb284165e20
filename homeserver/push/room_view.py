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
