"""Room aliases, the public room directory and room summaries
(client-server-api "Room aliases", "Listing rooms", "Room summaries")."""
from __future__ import annotations

from typing import Any

from homeserver.api.errors import MatrixError
from homeserver.api.http import ApiRequest, Router
from homeserver.api.validate import get_dict, get_int, get_str
from homeserver.core.ids import is_valid_room_id
from homeserver.rooms.directory import Directory
from homeserver.storage.users import UserStore


def _room_id(request: ApiRequest) -> str:
    room_id = request.path_params["room_id"]
    if not is_valid_room_id(room_id):
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid room ID")
    return room_id


class DirectoryServlets:
    def __init__(self, directory: Directory, users: UserStore) -> None:
        self.directory = directory
        self.users = users

    def register(self, router: Router) -> None:
        c = router.add_client
        c("PUT", "/directory/room/{alias}", self.put_alias)
        c("GET", "/directory/room/{alias}", self.get_alias, auth="none")
        c("DELETE", "/directory/room/{alias}", self.delete_alias)
        c("GET", "/rooms/{room_id}/aliases", self.room_aliases)
        c("GET", "/directory/list/room/{room_id}", self.get_visibility, auth="none")
        c("PUT", "/directory/list/room/{room_id}", self.set_visibility)
        c("GET", "/publicRooms", self.get_public_rooms, auth="optional")
        c("POST", "/publicRooms", self.post_public_rooms)
        router.add("GET", "/_matrix/client/v1/room_summary/{room_id_or_alias}", self.summary, auth="optional")

    async def put_alias(self, request: ApiRequest) -> dict[str, Any]:
        """PUT /_matrix/client/v3/directory/room/{roomAlias} — map an alias to a room."""
        body = request.json()
        await self.directory.create_alias(request.requester.user_id, request.path_params["alias"],
                                          get_str(body, "room_id", max_len=255),
                                          getattr(request.requester, "appservice", None))
        return {}

    async def get_alias(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/directory/room/{roomAlias} — resolve an alias."""
        return await self.directory.get_alias(request.path_params["alias"])

    async def delete_alias(self, request: ApiRequest) -> dict[str, Any]:
        """DELETE /_matrix/client/v3/directory/room/{roomAlias} — remove an alias."""
        user = await self.users.get_user(request.requester.user_id)
        await self.directory.delete_alias(request.requester.user_id, request.path_params["alias"],
                                          bool(user and user.admin), getattr(request.requester, "appservice", None))
        return {}

    async def room_aliases(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/rooms/{roomId}/aliases — the room's local aliases."""
        return {"aliases": await self.directory.room_aliases(request.requester.user_id, _room_id(request))}

    async def get_visibility(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/directory/list/room/{roomId} — is the room published."""
        return {"visibility": await self.directory.get_visibility(_room_id(request))}

    async def set_visibility(self, request: ApiRequest) -> dict[str, Any]:
        """PUT /_matrix/client/v3/directory/list/room/{roomId} — publish or unpublish a room."""
        body = request.json()
        await self.directory.set_visibility(request.requester.user_id, _room_id(request),
                                            get_str(body, "visibility", "public"))
        return {}

    async def get_public_rooms(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/publicRooms — the public room directory."""
        return await self.directory.public_rooms(request.query_int("limit", None, minimum=1, maximum=500),
                                                 request.query("since"), None)

    async def post_public_rooms(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/v3/publicRooms — the directory, with a search filter."""
        body = request.json()
        flt = get_dict(body, "filter", {})
        term = get_str(flt, "generic_search_term", None, max_len=1024, allow_none=True)
        return await self.directory.public_rooms(get_int(body, "limit", None, minimum=1),
                                                 get_str(body, "since", None, max_len=64), term)

    async def summary(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v1/room_summary/{roomIdOrAlias} — a preview of a room."""
        user = request.requester.user_id if request.requester else None
        return await self.directory.summary(user, request.path_params["room_id_or_alias"],
                                            request.args.get("via", [])[:20])
