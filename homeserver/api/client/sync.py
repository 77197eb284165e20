"""/sync and filters (client-server API "Syncing" and "Filtering")."""
from __future__ import annotations

from typing import Any

from homeserver.api.errors import MatrixError, forbidden
from homeserver.api.http import ApiRequest, Response, Router
from homeserver.storage.filters import FilterStore
from homeserver.sync.builder import SyncRequest
from homeserver.sync.filters import check_filter_size, parse_filter
from homeserver.sync.service import SyncService
from homeserver.sync.tokens import StreamToken


class SyncServlets:
    def __init__(self, sync: SyncService, filters: FilterStore) -> None:
        self._sync = sync
        self._filters = filters

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
        body = await self._sync.sync(req, timeout)
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
