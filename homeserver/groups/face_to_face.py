"""Face-to-face groups (WeChat's 面对面建群): same four digits, same place, same time.

The first caller with a code creates a group and opens a *session*: the
code, the caller's location and the group, kept in memory only and dropped
when the window closes (a timer on the injected clock). Later callers with
the same digits within the radius of that location and inside the window
are admitted to that group (invited on behalf of its creator, or of another
local member able to invite if the creator left, then joined).
The same digits elsewhere open another session. Calls with one code are
serialised by a per-code lock, so two first callers cannot create two groups.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall

from homeserver.groups.service import GroupService
from homeserver.rooms.create import CreateRoomRequest, RoomCreator
from homeserver.util.clock import Clock

EARTH_RADIUS_M = 6_371_000.0
#: Open sessions per code at most (bounded memory; the oldest is dropped).
MAX_SESSIONS_PER_CODE = 100


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


@dataclass
class Session:
    room_id: str
    creator: str
    lat: float
    lon: float
    closes_at: int
    timer: IDelayedCall | None = None


class FaceToFace:
    def __init__(self, groups: GroupService, creator: RoomCreator, clock: Clock,
                 radius_m: float, window_ms: int) -> None:
        self.groups = groups
        self.creator = creator
        self.clock = clock
        self.radius_m = radius_m
        self.window_ms = window_ms
        self._sessions: dict[str, list[Session]] = {}
        self._locks: dict[str, defer.DeferredLock] = {}

    def open_sessions(self) -> int:
        return sum(len(v) for v in self._sessions.values())

    async def enter(self, user_id: str, code: str, lat: float, lon: float) -> dict[str, Any]:
        """Join (or create) the group for these digits here and now: ``{"room_id", "members"}``."""
        lock = self._locks.setdefault(code, defer.DeferredLock())
        await lock.acquire()
        try:
            room_id = await self._enter(user_id, code, lat, lon)
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._locks.pop(code, None)
        room = await self.groups.sender.room_or_forbidden(room_id)
        return {"room_id": room_id, "members": self.groups.members(room)}

    async def _enter(self, user_id: str, code: str, lat: float, lon: float) -> str:
        now = self.clock.time_msec()
        for s in self._sessions.get(code, []):
            if s.closes_at > now and distance_m(s.lat, s.lon, lat, lon) <= self.radius_m:
                room = await self.groups.sender.room_or_forbidden(s.room_id)
                membership = room.membership(user_id)
                if membership != "join":
                    if membership == "ban":
                        continue  # banned there: this caller gets a group of their own
                    self.groups.check_room_has_space(room)
                    if membership != "invite":
                        await self.groups.invite_as(room, self.groups.inviter_for(room, s.creator), user_id)
                    await self.groups.membership.join(user_id, s.room_id)
                return s.room_id
        room_id, _ = await self.creator.create(user_id, CreateRoomRequest(preset="private_chat"))
        session = Session(room_id, user_id, lat, lon, now + self.window_ms)
        sessions = self._sessions.setdefault(code, [])
        sessions.append(session)
        if len(sessions) > MAX_SESSIONS_PER_CODE:
            self._close(code, sessions[0])
        session.timer = self.clock.call_later(self.window_ms / 1000.0, self._close, code, session)
        return room_id

    def _close(self, code: str, session: Session) -> None:
        """The window closed: forget the session and its location."""
        if session.timer is not None and session.timer.active():
            session.timer.cancel()
        sessions = self._sessions.get(code, [])
        if session in sessions:
            sessions.remove(session)
        if not sessions:
            self._sessions.pop(code, None)

    def stop(self) -> None:
        for code, sessions in list(self._sessions.items()):
            for s in list(sessions):
                self._close(code, s)
