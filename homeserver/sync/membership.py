"""Who is joined to which room, in memory, for waking and for presence/typing checks.

Seeded at start from the rooms' state cache and kept current from the event
stream (``m.room.member`` events), so "the members of this room" and "the
rooms of this user" are dictionary lookups on the hot path.
"""
from __future__ import annotations

from typing import Collection, Iterable

_EMPTY: frozenset[str] = frozenset()


class MembershipIndex:
    def __init__(self) -> None:
        self._members: dict[str, set[str]] = {}
        self._rooms: dict[str, set[str]] = {}

    def joined_members(self, room_id: str) -> Collection[str]:
        return self._members.get(room_id, _EMPTY)

    def rooms_for_user(self, user_id: str) -> Collection[str]:
        return self._rooms.get(user_id, _EMPTY)

    def is_joined(self, room_id: str, user_id: str) -> bool:
        return user_id in self._members.get(room_id, _EMPTY)

    def set_membership(self, room_id: str, user_id: str, membership: str) -> None:
        if membership == "join":
            self._members.setdefault(room_id, set()).add(user_id)
            self._rooms.setdefault(user_id, set()).add(room_id)
        else:
            members = self._members.get(room_id)
            if members is not None:
                members.discard(user_id)
                if not members:
                    del self._members[room_id]
            rooms = self._rooms.get(user_id)
            if rooms is not None:
                rooms.discard(room_id)
                if not rooms:
                    del self._rooms[user_id]

    def seed(self, room_id: str, joined: Iterable[str]) -> None:
        for user_id in joined:
            self.set_membership(room_id, user_id, "join")

    def share_room(self, a: str, b: str) -> bool:
        if a == b:
            return True
        ra, rb = self.rooms_for_user(a), self.rooms_for_user(b)
        small, big = (ra, rb) if len(ra) <= len(rb) else (rb, ra)
        return any(r in big for r in small)

    def co_members(self, user_id: str) -> set[str]:
        """Every user sharing a room with ``user_id`` (including themself)."""
        out = {user_id}
        for room_id in self.rooms_for_user(user_id):
            out.update(self._members.get(room_id, _EMPTY))
        return out
