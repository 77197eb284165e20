"""Room tagging (client-server API module "Room Tagging"); tags are m.tag room account data."""
from __future__ import annotations

from typing import Any

from homeserver.api.errors import MatrixError, forbidden
from homeserver.api.http import ApiRequest, Router
from homeserver.api.validate import get_dict
from homeserver.sync.account_data import AccountDataService

MAX_TAG = 255


class TagServlets:
    def __init__(self, account_data: AccountDataService) -> None:
        self._data = account_data

    def register(self, router: Router) -> None:
        router.add_client("GET", "/user/{user_id}/rooms/{room_id}/tags", self.on_get)
        router.add_client("PUT", "/user/{user_id}/rooms/{room_id}/tags/{tag}", self.on_put)
        router.add_client("DELETE", "/user/{user_id}/rooms/{room_id}/tags/{tag}", self.on_delete)

    def _owner(self, request: ApiRequest) -> tuple[str, str]:
        p = request.path_params
        if p["user_id"] != request.requester.user_id:
            raise forbidden("Cannot access tags of other users")
        return p["user_id"], p["room_id"]

    async def on_get(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags — the room's tags.

        Spec: module "Room Tagging".
        """
        user_id, room_id = self._owner(request)
        return {"tags": await self._data.get_tags(user_id, room_id)}

    async def on_put(self, request: ApiRequest) -> dict[str, Any]:
        """PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag} — add a tag.

        Spec: module "Room Tagging".
        """
        user_id, room_id = self._owner(request)
        tag = request.path_params["tag"]
        if not tag or len(tag) > MAX_TAG:
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid tag")
        body = request.json()
        order = body.get("order")
        if order is not None and (isinstance(order, bool) or not isinstance(order, (int, float))):
            raise MatrixError(400, "M_BAD_JSON", "'order' must be a number")
        get_dict({"b": body}, "b")
        await self._data.set_tag(user_id, room_id, tag, body)
        return {}

    async def on_delete(self, request: ApiRequest) -> dict[str, Any]:
        """DELETE /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag} — remove a tag.

        Spec: module "Room Tagging".
        """
        user_id, room_id = self._owner(request)
        await self._data.remove_tag(user_id, room_id, request.path_params["tag"])
        return {}
