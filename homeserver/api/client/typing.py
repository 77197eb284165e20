"""Typing notifications (client-server API module "Typing Notifications")."""
from __future__ import annotations

from typing import Any

from homeserver.api.errors import forbidden
from homeserver.api.http import ApiRequest, Router
from homeserver.api.validate import get_bool, get_int
from homeserver.sync.typing import TypingService


class TypingServlets:
    def __init__(self, typing: TypingService) -> None:
        self._typing = typing

    def register(self, router: Router) -> None:
        router.add_client("PUT", "/rooms/{room_id}/typing/{user_id}", self.on_typing)

    async def on_typing(self, request: ApiRequest) -> dict[str, Any]:
        """PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId} — start or stop typing.

        Spec: module "Typing Notifications".
        """
        user_id = request.path_params["user_id"]
        if user_id != request.requester.user_id:
            raise forbidden("Cannot set typing for other users")
        body = request.json()
        typing = get_bool(body, "typing")
        timeout = get_int(body, "timeout", None, minimum=0) if typing else None
        self._typing.set_typing(request.path_params["room_id"], user_id, typing, timeout)
        return {}
