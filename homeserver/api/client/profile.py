"""Profiles (spec 'Profiles'): display name and avatar URL."""
from __future__ import annotations

from typing import Any

from homeserver.api.errors import MatrixError, forbidden
from homeserver.api.http import ApiRequest, Router
from homeserver.api.validate import get_str
from homeserver.core.ids import is_valid_user_id
from homeserver.users.profiles import FIELDS, ProfileService


class ProfileServlets:
    def __init__(self, profiles: ProfileService) -> None:
        self._profiles = profiles

    def register(self, router: Router) -> None:
        router.add_client("GET", "/profile/{user_id}", self.get_profile, auth="optional")
        router.add_client("GET", "/profile/{user_id}/{field}", self.get_field, auth="optional")
        router.add_client("PUT", "/profile/{user_id}/{field}", self.put_field)
        router.add_client("DELETE", "/profile/{user_id}/{field}", self.delete_field)

    def _user_id(self, request: ApiRequest) -> str:
        user_id = request.path_params["user_id"]
        if len(user_id) > 255 or not is_valid_user_id(user_id):
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid user ID")
        return user_id

    def _field(self, request: ApiRequest) -> str:
        field = request.path_params["field"]
        if field not in FIELDS:
            # Only displayname and avatar_url are stored; other keys do not exist.
            raise MatrixError(404, "M_NOT_FOUND", f"Profile field {field[:64]!r} not found")
        return field

    async def get_profile(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/profile/{userId} — a user's display name and avatar URL."""
        return await self._profiles.get_profile(self._user_id(request))

    async def get_field(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/profile/{userId}/{keyName} — one profile field, 404 when unset."""
        user_id = self._user_id(request)
        field = self._field(request)
        profile = await self._profiles.get_profile(user_id)
        if field not in profile:
            raise MatrixError(404, "M_NOT_FOUND", f"{field} is not set")
        return {field: profile[field]}

    async def put_field(self, request: ApiRequest) -> dict[str, Any]:
        """PUT /_matrix/client/v3/profile/{userId}/{keyName} — set the caller's own display name or avatar."""
        user_id = self._user_id(request)
        field = request.path_params["field"]
        if field not in FIELDS:
            raise MatrixError(400, "M_INVALID_PARAM", f"Unsupported profile field {field[:64]!r}")
        if user_id != request.requester.user_id:
            raise forbidden("You cannot set another user's profile")
        body = request.json()
        value = get_str(body, field, allow_none=True)
        await self._profiles.set_field(request.requester.user_id, user_id, field, value)
        return {}

    async def delete_field(self, request: ApiRequest) -> dict[str, Any]:
        """DELETE /_matrix/client/v3/profile/{userId}/{keyName} — clear a field of the caller's profile."""
        user_id = self._user_id(request)
        field = request.path_params["field"]
        if field not in FIELDS:
            raise MatrixError(400, "M_INVALID_PARAM", f"Unsupported profile field {field[:64]!r}")
        await self._profiles.set_field(request.requester.user_id, user_id, field, None)
        return {}
