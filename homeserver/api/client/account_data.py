"""Client config / account data (client-server API module "Client Config")."""
from __future__ import annotations

from typing import Any

from homeserver.api.errors import MatrixError, forbidden, not_found
from homeserver.api.http import ApiRequest, Router
from homeserver.sync.account_data import AccountDataService

MAX_TYPE = 255


class AccountDataServlets:
    def __init__(self, account_data: AccountDataService) -> None:
        self._data = account_data

    def register(self, router: Router) -> None:
        router.add_client("GET", "/user/{user_id}/account_data/{type}", self.on_get)
        router.add_client("PUT", "/user/{user_id}/account_data/{type}", self.on_put)
        router.add_client("GET", "/user/{user_id}/rooms/{room_id}/account_data/{type}", self.on_get)
        router.add_client("PUT", "/user/{user_id}/rooms/{room_id}/account_data/{type}", self.on_put)

    def _params(self, request: ApiRequest, verb: str) -> tuple[str, str | None, str]:
        p = request.path_params
        if p["user_id"] != request.requester.user_id:
            raise forbidden(f"Cannot {verb} account data for other users.")
        data_type = p["type"]
        if not data_type or len(data_type) > MAX_TYPE:
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid account data type")
        room_id = p.get("room_id")
        if room_id is not None and (not room_id.startswith("!") or ":" not in room_id):
            raise MatrixError(400, "M_INVALID_PARAM", f"{room_id[:64]!r} is not a valid room ID")
        return p["user_id"], room_id, data_type

    async def on_get(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/user/{userId}[/rooms/{roomId}]/account_data/{type} — read account data.

        Spec: module "Client Config".
        """
        user_id, room_id, data_type = self._params(request, "get")
        content = await self._data.get(user_id, room_id, data_type)
        if content is None or content == {} and data_type != "m.tag":
            raise not_found("Account data not found")
        return content

    async def on_put(self, request: ApiRequest) -> dict[str, Any]:
        """PUT /_matrix/client/v3/user/{userId}[/rooms/{roomId}]/account_data/{type} — set account data.

        Spec: module "Client Config".
        """
        user_id, room_id, data_type = self._params(request, "add")
        await self._data.put(user_id, room_id, data_type, request.json())
        return {}
