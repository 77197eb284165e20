"""Presence: online / unavailable / offline per user, in memory, persisted in batches.

A user is online while they sync (``set_presence`` defaults to online) and
goes offline ``SYNC_TIMEOUT_MS`` after their last sync ends; online users who
have not been active for ``IDLE_TIMEOUT_MS`` become unavailable. One
in-memory sweep every few seconds applies these timeouts (no database reads).
Users see the presence of users they share a room with, and their own.
"""
from __future__ import annotations

import bisect
import logging
from typing import Any, Callable

from twisted.internet import defer

from homeserver.api.errors import MatrixError
from homeserver.storage.presence import PresenceState, PresenceStore
from homeserver.sync.membership import MembershipIndex
from homeserver.sync.notifier import Notifier
from homeserver.util.clock import Clock

logger = logging.getLogger(__name__)

STATES = ("online", "unavailable", "offline")
SYNC_TIMEOUT_MS = 30_000
IDLE_TIMEOUT_MS = 5 * 60_000
SWEEP_INTERVAL_S = 5.0
MAX_STATUS_MSG = 1024
#: Recent changes kept for cheap incremental syncs.
RECENT = 100_000

OutboundPresence = Callable[[dict[str, Any]], None]


class PresenceService:
    def __init__(self, store: PresenceStore, membership: MembershipIndex, notifier: Notifier,
                 clock: Clock, enabled: bool) -> None:
        self._store = store
        self._membership = membership
        self._notifier = notifier
        self._clock = clock
        self.enabled = enabled
        self._states: dict[str, PresenceState] = {}
        self._position = 0
        self._recent_pos: list[int] = []
        self._recent_users: list[str] = []
        self._syncing: dict[str, int] = {}  # user -> open sync count
        self._last_sync_end: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._sweeper: Any = None
        #: ``hook(presence_event)`` for local users' changes (federation sender).
        self.outbound: list[OutboundPresence] = []

    async def start(self) -> None:
        for state in await self._store.load_all():
            self._states[state.user_id] = state
            self._position = max(self._position, state.stream_id)
        self._notifier.set_position("presence", self._position)
        if self.enabled:
            self._sweeper = self._clock.looping_call(self._sweep, SWEEP_INTERVAL_S)

    async def stop(self) -> None:
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        await self.flush()

    def position(self) -> int:
        return self._position

    # changes

    def set_state(self, user_id: str, state: str, status_msg: Any = ..., *, active: bool = True) -> None:
        if state not in STATES:
            raise MatrixError(400, "M_INVALID_PARAM", f"Unknown presence state {state[:32]!r}")
        if status_msg is not ... and status_msg is not None:
            if not isinstance(status_msg, str) or len(status_msg) > MAX_STATUS_MSG:
                raise MatrixError(400, "M_BAD_JSON", "status_msg must be a short string")
        if not self.enabled:
            return
        now = self._clock.time_msec()
        old = self._states.get(user_id)
        msg = (old.status_msg if old else None) if status_msg is ... else status_msg
        last_active = now if (active and state == "online") or old is None else old.last_active_ts
        currently_active = state == "online" and active
        if old is not None and (old.state, old.status_msg, old.currently_active) == (state, msg, currently_active):
            old.last_active_ts = last_active
            return
        self._position += 1
        new = PresenceState(user_id, state, msg, last_active, currently_active, self._position)
        self._states[user_id] = new
        self._record(user_id)
        self._dirty.add(user_id)
        self._notifier.notify("presence", self._position, users=self._membership.co_members(user_id))
        for hook in self.outbound:
            hook(self.event(new))

    def on_remote_presence(self, user_id: str, state: str, status_msg: str | None,
                           last_active_ago: int | None, currently_active: bool) -> None:
        """A presence EDU update from another server."""
        if not self.enabled or state not in STATES:
            return
        now = self._clock.time_msec()
        self._position += 1
        self._states[user_id] = PresenceState(user_id, state, status_msg,
                                              now - (last_active_ago or 0), currently_active, self._position)
        self._record(user_id)
        self._notifier.notify("presence", self._position, users=self._membership.co_members(user_id))

    def _record(self, user_id: str) -> None:
        self._recent_pos.append(self._position)
        self._recent_users.append(user_id)
        if len(self._recent_pos) > RECENT:
            del self._recent_pos[:RECENT // 2]
            del self._recent_users[:RECENT // 2]

    # syncing marks users online; the sweep applies timeouts

    def sync_started(self, user_id: str, set_presence: str | None) -> None:
        if not self.enabled:
            return
        self._syncing[user_id] = self._syncing.get(user_id, 0) + 1
        wanted = set_presence or "online"
        if wanted == "online":
            state = self._states.get(user_id)
            if state is not None and state.state == "online" and state.currently_active:
                # What set_state would find: no change, only the activity time (every long-poll comes here).
                state.last_active_ts = self._clock.time_msec()
                return
        if wanted != "offline":  # syncing with set_presence=offline leaves presence alone
            self.set_state(user_id, wanted, active=wanted == "online")

    def sync_ended(self, user_id: str) -> None:
        if not self.enabled:
            return
        count = self._syncing.get(user_id, 0) - 1
        if count <= 0:
            self._syncing.pop(user_id, None)
            self._last_sync_end[user_id] = self._clock.time_msec()
        else:
            self._syncing[user_id] = count

    def _sweep(self) -> None:
        now = self._clock.time_msec()
        for user_id, ended in list(self._last_sync_end.items()):
            if user_id in self._syncing:
                del self._last_sync_end[user_id]
            elif now - ended >= SYNC_TIMEOUT_MS:
                del self._last_sync_end[user_id]
                state = self._states.get(user_id)
                if state is not None and state.state != "offline":
                    self.set_state(user_id, "offline", active=False)
        for state in list(self._states.values()):
            if state.state == "online" and now - state.last_active_ts >= IDLE_TIMEOUT_MS:
                self.set_state(state.user_id, "unavailable", active=False)
        if self._dirty:
            defer.ensureDeferred(self.flush())

    async def flush(self) -> None:
        dirty, self._dirty = self._dirty, set()
        states = [self._states[u] for u in dirty if u in self._states]
        try:
            await self._store.save(states)
        except Exception:
            logger.exception("saving presence")
            self._dirty |= dirty

    # reading

    def get(self, user_id: str) -> PresenceState | None:
        return self._states.get(user_id)

    def event(self, state: PresenceState) -> dict[str, Any]:
        content: dict[str, Any] = {"presence": state.state,
                                   "last_active_ago": max(0, self._clock.time_msec() - state.last_active_ts),
                                   "currently_active": state.currently_active}
        if state.status_msg is not None:
            content["status_msg"] = state.status_msg
        return {"type": "m.presence", "sender": state.user_id, "content": content}

    def changes_for(self, user_id: str, since: int, upto: int) -> list[dict[str, Any]]:
        """m.presence events of users sharing a room with ``user_id``, changed in (since, upto]."""
        if not self.enabled:
            return []
        if since >= upto:
            return []
        if since == 0 or not self._recent_pos or since < self._recent_pos[0] - 1:
            visible = self._membership.co_members(user_id)
            users = [u for u in visible if u in self._states and since < self._states[u].stream_id <= upto]
        else:
            start = bisect.bisect_right(self._recent_pos, since)
            end = bisect.bisect_right(self._recent_pos, upto)
            share = self._membership.share_room
            users = list(dict.fromkeys(u for u in self._recent_users[start:end] if share(user_id, u)))
        out = []
        for u in users:
            state = self._states.get(u)
            if state is not None and state.stream_id <= upto and (since > 0 or state.state != "offline"):
                out.append(self.event(state))
        return out
