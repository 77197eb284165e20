"""Media administration: quarantine and delete (Synapse's admin media API paths)."""
from __future__ import annotations

from typing import Any, Protocol

from homeserver.api.errors import forbidden, not_found
from homeserver.api.http import ApiRequest, Router
from homeserver.media.service import MediaService

PREFIX = "/_synapse/admin/v1/media"


class AdminChecker(Protocol):
    async def is_admin(self, user_id: str) -> bool: ...


class AdminMediaServlets:
    def __init__(self, media: MediaService, users: AdminChecker) -> None:
        self.media = media
        self.users = users

    def register(self, router: Router) -> None:
        router.add("POST", f"{PREFIX}/quarantine/{{server_name}}/{{media_id}}", self.quarantine)
        router.add("POST", f"{PREFIX}/unquarantine/{{server_name}}/{{media_id}}", self.unquarantine)
        router.add("DELETE", f"{PREFIX}/{{server_name}}/{{media_id}}", self.delete)

    async def _require_admin(self, request: ApiRequest) -> None:
        if not await self.users.is_admin(request.requester.user_id):
            raise forbidden("You are not a server admin")

    async def quarantine(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_synapse/admin/v1/media/quarantine/{serverName}/{mediaId} — hide media (404 on download)."""
        await self._require_admin(request)
        p = request.path_params
        if not await self.media.quarantine(p["server_name"], p["media_id"], True):
            raise not_found("Unknown media")
        return {}

    async def unquarantine(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_synapse/admin/v1/media/unquarantine/{serverName}/{mediaId} — serve it again."""
        await self._require_admin(request)
        p = request.path_params
        if not await self.media.quarantine(p["server_name"], p["media_id"], False):
            raise not_found("Unknown media")
        return {}

    async def delete(self, request: ApiRequest) -> dict[str, Any]:
        """DELETE /_synapse/admin/v1/media/{serverName}/{mediaId} — delete media, thumbnails, files."""
        await self._require_admin(request)
        p = request.path_params
        if not await self.media.delete(p["server_name"], p["media_id"]):
            raise not_found("Unknown media")
        return {"deleted_media": [p["media_id"]], "total": 1}
