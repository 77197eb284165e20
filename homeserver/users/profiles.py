"""Profiles: display names and avatar URLs (spec 'Profiles').

Room membership events carry a copy of the profile; the rooms component keeps
them current by appending to :attr:`ProfileService.on_profile_change`::

    async def propagate(user_id: str, field: str, value: str | None) -> None: ...
    hs.profiles.on_profile_change.append(propagate)

Every callback runs after the new value is stored, in order; one failing is
logged and does not undo the change or stop the others. Federation can set
:attr:`ProfileService.remote_lookup` to answer for users of other servers.
"""
from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

from homeserver.api.errors import MatrixError, forbidden
from homeserver.storage.users import UserStore

logger = logging.getLogger(__name__)

#: The profile fields this server stores, with their length bounds (characters).
FIELDS = {"displayname": 256, "avatar_url": 1000}

ProfileChange = Callable[[str, str, "str | None"], Awaitable[None]]
RemoteLookup = Callable[[str], Awaitable["dict[str, Any] | None"]]


class ProfileService:
    def __init__(self, server_name: str, users: UserStore) -> None:
        self.server_name = server_name
        self._users = users
        #: ``async cb(user_id, field, new_value)`` after a profile field changes.
        self.on_profile_change: list[ProfileChange] = []
        #: ``async lookup(user_id) -> profile dict or None`` for remote users (federation).
        self.remote_lookup: RemoteLookup | None = None
        #: ``async query(user_id) -> None`` for an unknown local user, before answering 404
        #: (application services create users of their namespaces on demand).
        self.user_queries: list[Callable[[str], Awaitable[None]]] = []

    def _is_local(self, user_id: str) -> bool:
        return user_id.startswith("@") and user_id.endswith(":" + self.server_name)

    async def get_profile(self, user_id: str) -> dict[str, str]:
        """The profile's set fields.

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` for unknown or deactivated users.
        """
        if not self._is_local(user_id):
            profile = await self.remote_lookup(user_id) if self.remote_lookup is not None else None
            if profile is None:
                raise MatrixError(404, "M_NOT_FOUND", "Profile not found")
            return {k: v for k, v in profile.items() if k in FIELDS and isinstance(v, str)}
        info = await self._users.get_user(user_id)
        if info is None and self.user_queries:
            for query in self.user_queries:
                await query(user_id)
            info = await self._users.get_user(user_id)
        row = await self._users.get_profile(user_id) if info is not None and not info.deactivated else None
        if row is None:
            raise MatrixError(404, "M_NOT_FOUND", "Profile not found")
        displayname, avatar_url = row
        out = {}
        if displayname is not None:
            out["displayname"] = displayname
        if avatar_url is not None:
            out["avatar_url"] = avatar_url
        return out

    async def set_field(self, requester: str, user_id: str, field: str, value: str | None) -> None:
        """Set (or, with None, clear) one field of ``user_id``'s profile as ``requester``.

        Raises:
            MatrixError: 403 for another user's profile, 400 for an unknown
            field or a value over its bound, 404 for an unknown user.
        """
        if field not in FIELDS:
            raise MatrixError(400, "M_INVALID_PARAM", f"Unsupported profile field {field!r}")
        if requester != user_id:
            raise forbidden("You cannot set another user's profile")
        if value is not None and len(value) > FIELDS[field]:
            raise MatrixError(400, "M_INVALID_PARAM",
                              f"{field} may be at most {FIELDS[field]} characters")
        info = await self._users.get_user(user_id)
        if info is None or info.deactivated:
            raise MatrixError(404, "M_NOT_FOUND", "Profile not found")
        await self._users.set_profile_field(user_id, field, value)
        for cb in self.on_profile_change:
            try:
                await cb(user_id, field, value)
            except Exception:
                logger.exception("profile change hook failed for %s", user_id)
