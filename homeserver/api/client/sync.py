"""/sync and filters (client-server API "Syncing" and "Filtering")."""
from __future__ import annotations

import time
from functools import partial
from typing import TYPE_CHECKING, Any

from homeserver.api.errors import MatrixError, forbidden
from homeserver.api.http import PARKED, ApiRequest, Response, Router, access_token, parse_query
from homeserver.storage.filters import FilterStore
from homeserver.sync.builder import SyncRequest
from homeserver.sync.filters import check_filter_size, parse_filter
from homeserver.sync.presence import STATES
from homeserver.sync.service import ParkedPoll, SyncService
from homeserver.sync.tokens import StreamToken

if TYPE_CHECKING:
    from homeserver.api.fasthttp import ClientSite, FastChannel, _Head
    from homeserver.users.auth import Authenticator, Requester


class SyncServlets:
    def __init__(self, sync: SyncService, filters: FilterStore) -> None:
        self._sync = sync
        self._filters = filters
        #: The lean HTTP path's /sync (set by :class:`LeanSync`), to park long-polls that found nothing.
        self.lean: LeanSync | None = None

    def register(self, router: Router) -> None:
        router.add_client("GET", "/sync", self.on_sync, allow_guest=True)
        router.add_client("POST", "/user/{user_id}/filter", self.on_create_filter, allow_guest=True)
        router.add_client("GET", "/user/{user_id}/filter/{filter_id}", self.on_get_filter, allow_guest=True)

    async def parse(self, request: ApiRequest) -> SyncRequest:
        """The /sync query parameters (shared with the WebSocket channel's)."""
        requester = request.requester
        since = request.query("since")
        return SyncRequest(
            user_id=requester.user_id,
            device_id=requester.device_id,
            since=StreamToken.parse(since) if since else None,
            filter=await self._sync.resolve_filter(requester.user_id, request.query("filter")),
            full_state=request.query_bool("full_state", False),
            set_presence=self._sync.check_set_presence(request.query("set_presence")),
        )

    async def on_sync(self, request: ApiRequest) -> dict[str, Any] | Response:
        """GET /_matrix/client/v3/sync — the user's updates since a token, long-polling up to ``timeout`` ms.

        Spec: client-server API "Syncing".
        """
        req = await self.parse(request)
        timeout = request.query_int("timeout", 0, minimum=0)
        park = None
        if self.lean is not None and request.lean is not None:
            park = partial(self.lean.park_after_build, request)
        body = await self._sync.sync(req, timeout, park)
        if body is None:
            return PARKED
        return Response(200, body) if isinstance(body, bytes) else body

    async def on_create_filter(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/v3/user/{userId}/filter — store a filter, answer its ID.

        Spec: client-server API "Filtering".
        """
        user_id = request.path_params["user_id"]
        if user_id != request.requester.user_id:
            raise forbidden("Cannot create filters for other users")
        check_filter_size(request.content)
        body = request.json()
        parse_filter(body)
        filter_id = await self._filters.add(user_id, body)
        return {"filter_id": str(filter_id)}

    async def on_get_filter(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/user/{userId}/filter/{filterId} — a stored filter.

        Spec: client-server API "Filtering".
        """
        user_id = request.path_params["user_id"]
        if user_id != request.requester.user_id:
            raise forbidden("Cannot get filters for other users")
        try:
            filter_id = int(request.path_params["filter_id"])
        except ValueError:
            raise MatrixError(404, "M_NOT_FOUND", "No such filter") from None
        stored = await self._filters.get(user_id, filter_id)
        if stored is None:
            raise MatrixError(404, "M_NOT_FOUND", "No such filter")
        return stored


_ABSENT = (None,)


class LeanSync:
    """/sync on the lean HTTP path (api/fasthttp.py), before the router (docs/sync.md, "Long-polls").

    With 500 members long-polling, each message is answered 500 times and
    asked for again 500 times; through the router each of those cycles runs
    a chain of coroutines (dispatch, auth, the servlet, the wait). This takes
    a request only when everything it needs is in memory (a cached access
    token, a cached filter, a ``since``) and it is either a long-poll with
    nothing new, parked as a :class:`ParkedPoll`, or answered by a shared body.
    Anything else, every error included, goes to the router untouched, and a
    parked poll whose wake-up needs the ordinary build is handed to the router
    with what is left of its timeout; the router hands back a long-poll whose
    build found nothing (:meth:`park_after_build`). Metrics and the access log
    are the router's.
    """

    def __init__(self, site: "ClientSite", auth: "Authenticator", sync: SyncService, servlets: SyncServlets) -> None:
        self._site = site
        self._auth = auth
        self._sync = sync
        servlets.lean = self
        self._route = site.router.match("GET", "/_matrix/client/v3/sync")[0]
        for path in ("/_matrix/client/v3/sync", "/_matrix/client/r0/sync"):
            site.lean_gets[path.encode("ascii")] = self

    def __call__(self, channel: "FastChannel", head: "_Head") -> bool:
        try:
            args = parse_query(head.query)
        except MatrixError:
            return False
        token = access_token(head.headers, args)
        requester = self._auth.cached(token) if token else None
        if requester is None:
            return False
        get = args.get  # a parameter's last value, as ApiRequest.query reads it
        since, timeout = (get("since") or _ABSENT)[-1], (get("timeout") or _ABSENT)[-1]
        set_presence, full_state = (get("set_presence") or _ABSENT)[-1], (get("full_state") or _ABSENT)[-1]
        f = self._sync.cached_filter(requester.user_id, (get("filter") or _ABSENT)[-1])
        if (since is None or f is None or full_state not in (None, "false", "0")
                or (set_presence is not None and set_presence not in STATES)
                or (timeout is not None and not (timeout.isdecimal() and len(timeout) < 19))):
            return False
        try:
            since_token = StreamToken.parse(since)
        except MatrixError:
            return False
        poll = _LeanPoll(SyncRequest(requester.user_id, requester.device_id, since_token, f, False, set_presence),
                         self, channel, head, requester, time.perf_counter())
        result = self._sync.park(poll, int(timeout) if timeout else 0)
        if result is True:
            self._hold(poll)
        elif result:
            poll.answer(result)
        return result is not False

    def park_after_build(self, request: ApiRequest, req: SyncRequest, timeout_ms: int) -> bool:
        """``SyncService.sync``'s ``park``: the router built this long-poll's body, found it empty, and
        offers it here (``since`` moved up) rather than waiting in its coroutine."""
        channel, head, started = request.lean
        poll = _LeanPoll(req, self, channel, head, request.requester, started)
        if self._sync.park(poll, timeout_ms) is not True:
            return False
        self._hold(poll)
        return True

    def _hold(self, poll: "_LeanPoll") -> None:
        self._site.begin(poll)
        poll.channel.handling = poll


class _LeanPoll(ParkedPoll):
    """One /sync request taken by :class:`LeanSync`: answers its channel, or hands it to the router."""

    __slots__ = ("lean", "channel", "head", "requester", "started")

    def __init__(self, req: SyncRequest, lean: LeanSync, channel: "FastChannel", head: "_Head",
                 requester: "Requester", started: float) -> None:
        super().__init__(req)
        self.lean, self.channel, self.head, self.requester, self.started = lean, channel, head, requester, started

    def answer(self, body: bytes | None) -> None:
        lean, channel = self.lean, self.channel
        lean._site.end(self)
        if body is None:  # the change needs the ordinary build: the router's, with the rest of the timeout
            args = dict(parse_query(self.head.query), timeout=[str(self.remaining_ms())])
            channel.handling = None
            channel.start(self.head, b"", args, self.started)
            return
        channel.respond_json(body)
        lean._site.observe("GET", lean._route, 200, time.perf_counter() - self.started, channel.client_ip,
                           self.head.target, self.requester)

    def cancel(self) -> None:
        """The client went away."""
        super().cancel()
        self.lean._site.end(self)
