"""Login and logout (spec 'Client Authentication')."""
from __future__ import annotations

from typing import Any

from homeserver.api.errors import MatrixError
from homeserver.api.http import ApiRequest, Router
from homeserver.api.ratelimit import RateLimiter
from homeserver.api.validate import get_dict, get_str
from homeserver.users.accounts import MAX_DEVICE_NAME_LEN, MAX_PASSWORD_LEN, AccountService


class LoginServlets:
    def __init__(self, accounts: AccountService, limiter: RateLimiter) -> None:
        self._accounts = accounts
        self._limiter = limiter
        #: Login types offered; application services add ``m.login.application_service``.
        self.flows: list[dict[str, Any]] = [{"type": "m.login.password"}]
        #: Extra login handlers by type: ``async (body, request) -> user_id``.
        self.extra_types: dict[str, Any] = {}
        #: Login types not rate-limited by client IP (the application service's own).
        self.rate_limit_exempt: set[str] = set()

    def register(self, router: Router) -> None:
        router.add_client("GET", "/login", self.get_login, auth="none")
        router.add_client("POST", "/login", self.post_login, auth="none")
        router.add_client("POST", "/logout", self.logout)
        router.add_client("POST", "/logout/all", self.logout_all)

    async def get_login(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/login — the login types this server accepts."""
        return {"flows": self.flows}

    async def post_login(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/v3/login — exchange credentials for an access token.

        Rate limited per client IP, and failed attempts per account (``rate_limiting.login``).
        """
        body = request.json()
        login_type = get_str(body, "type")
        device_id = get_str(body, "device_id", None, max_len=255)
        display_name = get_str(body, "initial_device_display_name", None, max_len=MAX_DEVICE_NAME_LEN)
        if login_type not in self.rate_limit_exempt:
            self._limiter.check("ip:" + request.client_ip)
        if login_type == "m.login.password":
            user = self._user_from_identifier(body)
            password = get_str(body, "password", max_len=MAX_PASSWORD_LEN)
            # Failed attempts are also counted per account, so guessing one user's
            # password from many addresses is slow too (successes are not counted).
            account_key = "user:" + user.lower()
            self._limiter.check(account_key, update=False)
            user_id = await self._accounts.check_password(user, password)
            if user_id is None:
                self._limiter.record(account_key)
                raise MatrixError(403, "M_FORBIDDEN", "Invalid username or password")
        elif login_type in self.extra_types:
            user_id = await self.extra_types[login_type](body, request)
        else:
            raise MatrixError(400, "M_UNKNOWN", f"Unknown login type {login_type!r}")
        session = await self._accounts.create_session(user_id, device_id, display_name, request.client_ip)
        return {"user_id": session.user_id, "access_token": session.access_token,
                "device_id": session.device_id, "home_server": self._accounts.server_name}

    def _user_from_identifier(self, body: dict[str, Any]) -> str:
        """The user ID from ``identifier`` (``m.id.user``) or the legacy ``user`` field."""
        identifier = get_dict(body, "identifier", None)
        if identifier is not None:
            id_type = get_str(identifier, "type")
            if id_type != "m.id.user":
                raise MatrixError(400, "M_UNKNOWN", f"Unsupported identifier type {id_type!r}")
            user = get_str(identifier, "user", max_len=255)
        else:
            user = get_str(body, "user", max_len=255)
        return user if user.startswith("@") else self._accounts.user_id(user.lower())

    async def logout(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/v3/logout — invalidate this access token and its device."""
        r = request.requester
        await self._accounts.logout(r.access_token, r.user_id, r.device_id)
        return {}

    async def logout_all(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/v3/logout/all — invalidate every token of the user."""
        await self._accounts.logout_all(request.requester.user_id)
        return {}
