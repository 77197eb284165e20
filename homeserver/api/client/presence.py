"""Presence (client-server API module "Presence")."""
from __future__ import annotations

from typing import Any

from homeserver.api.errors import MatrixError, forbidden
from homeserver.api.http import ApiRequest, Router
from homeserver.api.validate import get_str
from homeserver.sync.membership import MembershipIndex
from homeserver.sync.presence import MAX_STATUS_MSG, PresenceService


class PresenceServlets:
    def __init__(self, presence: PresenceService, membership: MembershipIndex) -> None:
        self._presence = presence
        self._membership = membership

    def register(self, router: Router) -> None:
        router.add_client("GET", "/presence/{user_id}/status", self.on_get, allow_guest=True)
        router.add_client("PUT", "/presence/{user_id}/status", self.on_put, allow_guest=True)

    async def on_get(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/presence/{userId}/status — a user's presence.

        Only for yourself and users you share a room with. Spec: module "Presence".
        """
        if not self._presence.enabled:
            raise forbidden("Presence is disabled on this server")
        user_id = request.path_params["user_id"]
        if not self._membership.share_room(request.requester.user_id, user_id):
            raise forbidden("You do not share a room with this user")
        state = self._presence.get(user_id)
        if state is None:
            return {"presence": "offline"}
        content = self._presence.event(state)["content"]
        result: dict[str, Any] = {"presence": content["presence"], "last_active_ago": content["last_active_ago"],
                                  "currently_active": content["currently_active"]}
        if "status_msg" in content:
            result["status_msg"] = content["status_msg"]
        return result

    async def on_put(self, request: ApiRequest) -> dict[str, Any]:
        """PUT /_matrix/client/v3/presence/{userId}/status — set your presence.

        Spec: module "Presence".
        """
        user_id = request.path_params["user_id"]
        if user_id != request.requester.user_id:
            raise forbidden("Cannot set presence for other users")
        body = request.json()
        state = get_str(body, "presence")
        status_msg = get_str(body, "status_msg", ..., max_len=MAX_STATUS_MSG, allow_none=True)
        if state not in ("online", "unavailable", "offline"):
            raise MatrixError(400, "M_INVALID_PARAM", "presence must be online, unavailable or offline")
        if not self._presence.enabled:
            raise forbidden("Presence is disabled on this server")
        self._presence.set_state(user_id, state, status_msg)
        return {}
