"""Each user's membership in every room they have been in, in memory.

Loaded from the database on a user's first sync and then kept current from
the event stream, so an incremental sync learns which rooms to look at
without a query.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable

from twisted.internet import defer


@dataclass(frozen=True)
class MembershipInfo:
    membership: str
    stream_ordering: int
    event_id: str


Loader = Callable[[str], Awaitable[dict[str, MembershipInfo]]]


class UserRooms:
    def __init__(self, loader: Loader | None = None, max_users: int = 500_000) -> None:
        self.loader = loader
        self._by_user: dict[str, dict[str, MembershipInfo]] = {}
        self._loading: dict[str, defer.Deferred[None]] = {}
        self._max_users = max_users

    async def get(self, user_id: str) -> dict[str, MembershipInfo]:
        rooms = self._by_user.get(user_id)
        if rooms is not None and user_id not in self._loading:
            return rooms
        if user_id in self._loading:
            await _wait(self._loading[user_id])
            return self._by_user.get(user_id, {})
        if len(self._by_user) >= self._max_users:
            self._by_user.clear()
        # Updates that arrive while the load runs go into this dict; the load
        # only fills rooms it has a newer row for.
        rooms = self._by_user[user_id] = {}
        done: defer.Deferred[None] = defer.Deferred()
        self._loading[user_id] = done
        try:
            loaded = await self.loader(user_id) if self.loader is not None else {}
            for room_id, info in loaded.items():
                current = rooms.get(room_id)
                if current is None or current.stream_ordering < info.stream_ordering:
                    rooms[room_id] = info
        except BaseException:
            self._by_user.pop(user_id, None)
            raise
        finally:
            del self._loading[user_id]
            done.callback(None)
        return rooms

    def update(self, user_id: str, room_id: str, info: MembershipInfo) -> None:
        rooms = self._by_user.get(user_id)
        if rooms is None:
            return  # not loaded: the database has it
        current = rooms.get(room_id)
        if current is None or current.stream_ordering <= info.stream_ordering:
            rooms[room_id] = info

    def forget(self, user_id: str, room_id: str) -> None:
        rooms = self._by_user.get(user_id)
        if rooms is not None:
            rooms.pop(room_id, None)


async def _wait(d: "defer.Deferred[None]") -> None:
    waiter: defer.Deferred[None] = defer.Deferred()
    d.addBoth(lambda r: (waiter.callback(None), r)[1])
    await waiter
