"""The /sync long-poll: build, and if there is nothing new, wait to be woken.

A waiting request holds one notifier listener and one timer. It is woken only
when something concerning its user happens; it then rebuilds from in-memory
positions. A client disconnect cancels the handler's Deferred; the
``finally`` blocks remove the listener and the timer.
"""
from __future__ import annotations

from typing import Any

from homeserver.api.errors import MatrixError
from homeserver.storage.filters import FilterStore
from homeserver.sync.builder import SyncBuilder, SyncRequest
from homeserver.sync.filters import DEFAULT_FILTER, SyncFilter, check_filter_size, parse_filter
from homeserver.sync.notifier import Notifier
from homeserver.sync.presence import STATES, PresenceService
from homeserver.util import json as jsonutil
from homeserver.util.clock import Clock

#: Longest long-poll honoured.
MAX_TIMEOUT_MS = 5 * 60_000


class SyncService:
    def __init__(self, builder: SyncBuilder, notifier: Notifier, presence: PresenceService,
                 filters: FilterStore, clock: Clock) -> None:
        self.builder = builder
        self.notifier = notifier
        self.presence = presence
        self.filters = filters
        self.clock = clock
        self._inline: dict[str, SyncFilter] = {}
        self._stored: dict[tuple[str, int], SyncFilter] = {}

    async def resolve_filter(self, user_id: str, value: str | None) -> SyncFilter:
        """A ``filter`` query parameter: a stored filter ID or inline JSON."""
        if value is None or value == "":
            return DEFAULT_FILTER
        if value.startswith("{"):
            cached = self._inline.get(value)
            if cached is not None:
                return cached
            check_filter_size(value)
            try:
                body = jsonutil.loads(value)
            except ValueError:
                raise MatrixError(400, "M_NOT_JSON", "Inline filter is not valid JSON") from None
            parsed = parse_filter(body)
            # Clients send the same inline filter on every poll: parse it once.
            if len(self._inline) >= 1000:
                self._inline.clear()
            self._inline[value] = parsed
            return parsed
        try:
            filter_id = int(value)
        except ValueError:
            raise MatrixError(400, "M_INVALID_PARAM", "filter must be a filter ID or a JSON object") from None
        key = (user_id, filter_id)
        parsed = self._stored.get(key)
        if parsed is not None:
            return parsed
        stored = await self.filters.get(user_id, filter_id)
        if stored is None:
            raise MatrixError(400, "M_INVALID_PARAM", "Unknown filter")
        parsed = parse_filter(stored)
        if len(self._stored) >= 100_000:
            self._stored.clear()
        self._stored[key] = parsed  # stored filters never change
        return parsed

    @staticmethod
    def check_set_presence(value: str | None) -> str | None:
        if value is not None and value not in STATES:
            raise MatrixError(400, "M_INVALID_PARAM", "set_presence must be online, unavailable or offline")
        return value

    async def sync(self, req: SyncRequest, timeout_ms: int) -> dict[str, Any] | bytes:
        """The /sync body: a dict, or already encoded JSON when it is shared (see sync/shared.py)."""
        timeout_s = min(max(timeout_ms, 0), MAX_TIMEOUT_MS) / 1000
        self.presence.sync_started(req.user_id, req.set_presence)
        listener = None
        try:
            deadline = self.clock.time() + timeout_s
            while True:
                # Listen before building: a change during the build wakes us at once.
                listener = self.notifier.listen(req.user_id)
                upto = self.notifier.current_token()
                if self.builder.nothing_new(req, req.since, upto):
                    body, empty = {"next_batch": str(upto)}, True
                else:
                    shared = self.builder.shared.lookup(req.user_id, req.device_id, req.since, upto, req.filter,
                                                        req.full_state)
                    if shared is not None:
                        return shared
                    body, empty = await self.builder.build(req, upto)
                    if not empty:
                        self.builder.shared.remember(req.user_id, req.since, upto, req.filter, body, req.full_state)
                remaining = deadline - self.clock.time()
                if not empty or req.since is None or req.full_state or remaining <= 0:
                    return body
                if not await self.notifier.wait(listener, remaining):
                    return body
        finally:
            if listener is not None:
                self.notifier.remove(listener)
            self.presence.sync_ended(req.user_id)
