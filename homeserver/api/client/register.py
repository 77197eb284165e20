"""Registration with user-interactive auth (spec 'Account registration')."""
from __future__ import annotations

from typing import Any

from homeserver.api.errors import MatrixError
from homeserver.api.http import ApiRequest, Router
from homeserver.api.ratelimit import RateLimiter
from homeserver.api.validate import get_bool, get_str
from homeserver.users.accounts import MAX_DEVICE_NAME_LEN, MAX_PASSWORD_LEN, AccountService, Session
from homeserver.users.uia import UiaManager, UiaSession


class RegisterServlets:
    def __init__(self, accounts: AccountService, uia: UiaManager, limiter: RateLimiter,
                 enable_registration: bool) -> None:
        self._accounts = accounts
        self._uia = uia
        self._limiter = limiter
        self.enable_registration = enable_registration
        #: Registration types answered without UIA, by ``body["type"]``:
        #: ``async (body, request) -> response``. Application services add
        #: ``m.login.application_service``; the handler does its own auth and limits.
        self.extra_types: dict[str, Any] = {}

    def register(self, router: Router) -> None:
        router.add_client("POST", "/register", self.post_register, auth="none")
        router.add_client("GET", "/register/available", self.available, auth="none")

    async def _dummy(self, auth: dict[str, Any], session: UiaSession) -> bool:
        return True

    async def post_register(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/v3/register — create an account (UIA: m.login.dummy).

        Username rules answer ``M_INVALID_USERNAME``, ``M_USER_IN_USE`` or
        ``M_EXCLUSIVE`` before auth is completed; ``kind=guest`` is refused
        (guest access is not offered). Rate limited per IP on success.
        """
        body = request.json()
        body_type = body.get("type")
        extra = self.extra_types.get(body_type) if isinstance(body_type, str) else None
        if extra is not None:
            return await extra(body, request)
        kind = request.query("kind", "user")
        if kind == "guest":
            raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access is disabled")
        if kind != "user":
            raise MatrixError(400, "M_INVALID_PARAM", "kind must be 'user' or 'guest'")
        username = get_str(body, "username", None, max_len=255)
        password = get_str(body, "password", None, max_len=MAX_PASSWORD_LEN)
        device_id = get_str(body, "device_id", None, max_len=255)
        display_name = get_str(body, "initial_device_display_name", None, max_len=MAX_DEVICE_NAME_LEN)
        inhibit_login = get_bool(body, "inhibit_login", False)
        if not self.enable_registration:
            raise MatrixError(403, "M_FORBIDDEN", "Registration has been disabled")
        ip_key = "ip:" + request.client_ip
        self._limiter.check(ip_key, update=False)
        if username is not None:
            username = username.lower()
            # Check early so a client learns of a taken name before completing auth.
            if not await self._accounts.is_available(username):
                raise MatrixError(400, "M_USER_IN_USE", "User ID already taken.")
        if not password:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing parameter: password")
        await self._uia.check(body, [["m.login.dummy"]], {"m.login.dummy": self._dummy})
        result = await self._accounts.register(username, password, device_id=device_id,
                                               device_display_name=display_name,
                                               inhibit_login=inhibit_login, ip=request.client_ip)
        self._limiter.record(ip_key)
        if isinstance(result, Session):
            return {"user_id": result.user_id, "access_token": result.access_token,
                    "device_id": result.device_id, "home_server": self._accounts.server_name}
        return {"user_id": result, "home_server": self._accounts.server_name}

    async def available(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/register/available — is this username free and allowed?"""
        username = request.query("username")
        if not username:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing parameter: username")
        if len(username) > 255:
            raise MatrixError(400, "M_INVALID_USERNAME", "User ID may not be longer than 255 bytes")
        self._limiter.check("ip:" + request.client_ip)
        if not await self._accounts.is_available(username.lower()):
            raise MatrixError(400, "M_USER_IN_USE", "User ID already taken.")
        return {"available": True}
