"""Account endpoints (spec 'Account management'): whoami, password change, deactivation."""
from __future__ import annotations

from typing import Any

from homeserver.api.errors import MatrixError
from homeserver.api.http import ApiRequest, Router
from homeserver.api.validate import get_bool, get_str
from homeserver.users.accounts import MAX_PASSWORD_LEN, AccountService
from homeserver.users.uia import UiaManager


class AccountServlets:
    def __init__(self, accounts: AccountService, uia: UiaManager) -> None:
        self._accounts = accounts
        self._uia = uia

    def register(self, router: Router) -> None:
        router.add_client("GET", "/account/whoami", self.whoami)
        router.add_client("POST", "/account/password", self.change_password)
        router.add_client("POST", "/account/deactivate", self.deactivate)

    async def whoami(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/account/whoami — the owner of this access token."""
        r = request.requester
        body: dict[str, Any] = {"user_id": r.user_id, "is_guest": r.is_guest}
        if r.device_id is not None:
            body["device_id"] = r.device_id
        return body

    async def _password_uia(self, request: ApiRequest, body: dict[str, Any]) -> None:
        user_id = request.requester.user_id
        await self._uia.check(body, [["m.login.password"]],
                              {"m.login.password": self._accounts.password_stage(user_id)},
                              context={"user_id": user_id, "path": request.path})

    async def change_password(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/v3/account/password — set a new password (UIA: m.login.password).

        With ``logout_devices`` (default true) every other device and access
        token of the user is logged out; the caller's own token survives.
        """
        body = request.json()
        new_password = get_str(body, "new_password", max_len=MAX_PASSWORD_LEN)
        logout_devices = get_bool(body, "logout_devices", True)
        if not new_password:
            raise MatrixError(400, "M_WEAK_PASSWORD", "The new password may not be empty")
        await self._password_uia(request, body)
        r = request.requester
        await self._accounts.change_password(r.user_id, new_password, keep_device=r.device_id,
                                             logout_devices=logout_devices, keep_token=r.access_token)
        return {}

    async def deactivate(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/v3/account/deactivate — deactivate the caller's account (UIA).

        ``erase`` is accepted and passed to the deactivation hooks; identity
        servers are not used, so the unbind result is always ``no-support``.
        """
        body = request.json()
        erase = get_bool(body, "erase", False)
        get_str(body, "id_server", None, max_len=255)
        await self._password_uia(request, body)
        await self._accounts.deactivate(request.requester.user_id, erase=erase)
        return {"id_server_unbind_result": "no-support"}
