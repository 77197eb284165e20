"""The /sync long-poll: build, and if there is nothing new, wait to be woken.

A waiting request holds one notifier listener and one timer. It is woken only
when something concerning its user happens; it then rebuilds from in-memory
positions. A client disconnect cancels the handler's Deferred; the
``finally`` blocks remove the listener and the timer.

:meth:`SyncService.park` is the same wait for the lean HTTP path, without a
coroutine: a :class:`ParkedPoll` is its own notifier listener with a coarse
timer, and most wake-ups answer with a shared body straight from the notifier.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

from homeserver.api.errors import MatrixError
from homeserver.storage.filters import FilterStore
from homeserver.sync.builder import SyncBuilder, SyncRequest
from homeserver.sync.filters import DEFAULT_FILTER, SyncFilter, check_filter_size, parse_filter
from homeserver.sync.notifier import Listener, Notifier
from homeserver.sync.presence import STATES, PresenceService
from homeserver.sync.tokens import StreamToken
from homeserver.util import json as jsonutil
from homeserver.util.clock import Clock, CoarseTimers

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
        #: Parked long-polls' timeouts (:class:`ParkedPoll`).
        self.timeouts = CoarseTimers(clock)
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

    def cached_filter(self, user_id: str, value: str | None) -> SyncFilter | None:
        """:meth:`resolve_filter` when it needs no I/O and raises nothing (else None)."""
        if value is None or value == "":
            return DEFAULT_FILTER
        if value.startswith("{"):
            return self._inline.get(value)
        return self._stored.get((user_id, int(value))) if value.isdecimal() and len(value) < 19 else None

    def park(self, poll: "ParkedPoll", timeout_ms: int) -> bytes | bool:
        """:meth:`sync` for the lean path, where it is cheap: a long-poll with nothing new, or a shared body.

        Returns the encoded body when it is ready now; True when ``poll`` is
        parked (it calls ``poll.answer`` once: with the body, or with None
        when the change needs the ordinary build, :meth:`sync` for what is
        left of the timeout); False when the request is neither (run :meth:`sync`).
        """
        req = poll.req
        if req.since is None or req.full_state:
            return False
        upto = self.notifier.current_token()
        if not self.builder.nothing_new(req, req.since, upto):
            body = self.builder.shared.lookup(req.user_id, req.device_id, req.since, upto, req.filter)
            if body is None:
                return False
            self.presence.sync_started(req.user_id, req.set_presence)
            self.presence.sync_ended(req.user_id)
            return body
        if timeout_ms <= 0:
            return False
        self.presence.sync_started(req.user_id, req.set_presence)
        poll.park(self, upto, min(timeout_ms, MAX_TIMEOUT_MS) / 1000)
        return True

    async def sync(self, req: SyncRequest, timeout_ms: int,
                   park: Callable[[SyncRequest, int], bool] | None = None) -> dict[str, Any] | bytes | None:
        """The /sync body: a dict, or already encoded JSON when it is shared (see sync/shared.py).

        ``park`` (the lean HTTP path's, api/client/sync.py) is offered a
        long-poll whose build came out empty instead of it waiting here: the
        request with ``since`` moved up to the build's position (nothing for
        this user in between, so every later body is the same from there, and
        members parked at one position can share one). When it takes it
        (True), the result is None and the parked poll answers.
        """
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
                if park is not None and not listener.woken and park(replace(req, since=upto), int(remaining * 1000)):
                    return None
                if not await self.notifier.wait(listener, remaining):
                    return body
        finally:
            if listener is not None:
                self.notifier.remove(listener)
            self.presence.sync_ended(req.user_id)


class ParkedPoll(Listener):
    """A /sync long-poll with nothing new, waiting without a coroutine (see :meth:`SyncService.park`).

    It is its own notifier listener (one-shot), with one coarse timer for
    its timeout (at most 0.1 s late), like :meth:`SyncService.sync`'s wait.
    It makes no other object while it waits (no bound methods), so the
    hundreds parked at any moment give the collector little to scan.
    Woken, it answers with the shared body when there is one, else with None
    (the caller runs the ordinary build); on timeout it answers an empty
    body. :meth:`cancel` (the client went away) ends it without answering.
    Subclasses implement :meth:`answer`.
    """

    __slots__ = ("req", "_service", "_upto", "_slot", "_deadline", "_parked")

    def __init__(self, req: SyncRequest) -> None:
        super().__init__(req.user_id, None, False)
        self.req = req
        self._parked = False

    def answer(self, body: bytes | None) -> None:
        raise NotImplementedError

    def park(self, service: SyncService, upto: StreamToken, timeout_s: float) -> None:
        self._service = service
        self._upto = upto
        self._parked = True
        self._deadline = service.clock.time() + timeout_s
        service.notifier.add(self)
        self._slot = service.timeouts.add(timeout_s, self, ParkedPoll.expire)

    def remaining_ms(self) -> int:
        """What is left of the long-poll's timeout."""
        return max(0, int((self._deadline - self._service.clock.time()) * 1000))

    def _end(self) -> bool:
        """Stop waiting; False when it had stopped already."""
        if not self._parked:
            return False
        self._parked = False
        service = self._service
        service.timeouts.cancel(self._slot, self)
        if not self.woken:  # a woken listener was removed already (one-shot)
            service.notifier.remove(self)
        service.presence.sync_ended(self.user_id)
        return True

    def fire(self) -> None:  # woken by the notifier
        if self._end():
            req, service = self.req, self._service
            self.answer(service.builder.shared.lookup(req.user_id, req.device_id, req.since,
                                                      service.notifier.current_token(), req.filter))

    def expire(self) -> None:  # its timeout, or the server shutting down
        if self._end():
            self.answer(jsonutil.dumps_bytes({"next_batch": str(self._upto)}))

    def cancel(self) -> None:
        self._end()
