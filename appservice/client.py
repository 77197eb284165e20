"""The client-server API as application services use it.

Plugged into the homeserver through its hooks (see ``homeserver/server.py``):

* a token resolver for :class:`~homeserver.users.auth.Authenticator`: the
  ``as_token`` authenticates the service, which acts as its sender or, with
  ``?user_id=``, as a user in its namespaces, on ``?device_id=`` if given
  (spec "Identity assertion");
* an exclusive check for :class:`~homeserver.users.accounts.AccountService`:
  nobody but the owning service registers users in an exclusive namespace;
* ``m.login.application_service`` for ``POST /register`` and ``POST /login``
  (spec "Server admin style permissions");
* ``POST /_matrix/client/v1/appservice/{appserviceId}/ping``.
"""
from __future__ import annotations

from typing import Any, Sequence

from homeserver.api.errors import MatrixError
from homeserver.api.http import ApiRequest, Router
from homeserver.api.validate import get_bool, get_dict, get_str
from homeserver.storage.users import UserStore
from homeserver.users.accounts import AccountService, Session
from homeserver.users.auth import Requester

from appservice.api import AppserviceApi
from appservice.registration import ApplicationService

LOGIN_TYPE = "m.login.application_service"


def exclusive_error(what: str) -> MatrixError:
    return MatrixError(400, "M_EXCLUSIVE", f"{what} is reserved by an application service")


class AppserviceClientApi:
    """Token resolution, namespace checks, registration/login and ping for services."""

    def __init__(self, services: Sequence[ApplicationService], users: UserStore, accounts: AccountService,
                 api: AppserviceApi) -> None:
        self.services = list(services)
        self._by_token = {s.as_token: s for s in self.services}
        self._by_id = {s.id: s for s in self.services}
        self._users = users
        self._accounts = accounts
        self._api = api
        #: Called with the service after a successful ping (the scheduler retries at once).
        self.ping_listeners: list[Any] = []

    def by_token(self, token: str | None) -> ApplicationService | None:
        return self._by_token.get(token) if token else None

    # exclusivity ------------------------------------------------------------

    def check_user_id(self, user_id: str, appservice: Any = None) -> bool:
        """``AccountService.exclusive_checks`` hook: True when ``user_id`` is reserved by a service
        other than ``appservice`` (None: a human), so registration answers ``M_EXCLUSIVE``.

        Raises:
            MatrixError: 400 ``M_EXCLUSIVE`` when a service registers outside its own namespaces.
        """
        if isinstance(appservice, ApplicationService) and not appservice.is_interested_in_user(user_id):
            raise MatrixError(400, "M_EXCLUSIVE", f"{user_id} is outside the application service's namespaces")
        return any(s is not appservice and s.is_exclusive_user(user_id) for s in self.services)

    def check_alias(self, alias: str, appservice: Any = None) -> None:
        """May ``appservice`` (None: a human) create or delete ``alias``?

        Raises:
            MatrixError: 400 ``M_EXCLUSIVE``.
        """
        if isinstance(appservice, ApplicationService) and not appservice.is_interested_in_alias(alias):
            raise MatrixError(400, "M_EXCLUSIVE", f"{alias} is outside the application service's namespaces")
        for s in self.services:
            if s is not appservice and s.is_exclusive_alias(alias):
                raise exclusive_error(alias)

    def exclusive_user_owner(self, user_id: str) -> ApplicationService | None:
        return next((s for s in self.services if s.is_exclusive_user(user_id)), None)

    def exclusive_alias_owner(self, alias: str) -> ApplicationService | None:
        return next((s for s in self.services if s.is_exclusive_alias(alias)), None)

    # authentication ---------------------------------------------------------

    def claims_token(self, token: str) -> bool:
        """Whether ``token`` is an application service's ``as_token``."""
        return token in self._by_token

    async def resolve_token(self, token: str, request: ApiRequest) -> Requester | None:
        """``Authenticator.resolvers`` hook: a Requester for an ``as_token``, else None."""
        service = self._by_token.get(token)
        if service is None:
            return None
        user_id = request.query("user_id") or service.sender
        if user_id != service.sender:
            if not service.is_interested_in_user(user_id):
                raise MatrixError(403, "M_FORBIDDEN",
                                  "Application service cannot masquerade as this user: outside its namespaces")
            info = await self._users.get_user(user_id)
            if info is None or info.deactivated:
                raise MatrixError(403, "M_FORBIDDEN", "Application service has not registered this user")
        device_id = request.query("device_id") or request.query("org.matrix.msc3202.device_id")
        if device_id is not None and await self._users.get_device(user_id, device_id) is None:
            raise MatrixError(400, "M_UNKNOWN_DEVICE", "Unknown device for this user")
        return Requester(user_id, device_id, token, appservice=service)

    def _require_service(self, request: ApiRequest) -> ApplicationService:
        token = request.access_token()
        if token is None:
            raise MatrixError(401, "M_MISSING_TOKEN", "Missing access token")
        service = self._by_token.get(token)
        if service is None:
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Unknown access token", soft_logout=False)
        return service

    async def ensure_senders(self) -> None:
        """Create each service's sender account if it does not exist yet."""
        for s in self.services:
            if await self._users.get_user(s.sender) is None:
                await self._users.create_user(s.sender, None, 0, appservice_id=s.id)

    # register and login ---------------------------------------------------------

    async def register(self, body: dict[str, Any], request: ApiRequest) -> dict[str, Any]:
        """``POST /register`` with ``type: m.login.application_service``: no UIA, no password."""
        service = self._require_service(request)
        username = get_str(body, "username", max_len=255)
        if username.startswith("@"):
            if not username.endswith(":" + self._accounts.server_name):
                raise MatrixError(400, "M_INVALID_USERNAME", "Can only register users on this server")
            username = username[1:].rsplit(":", 1)[0]
        result = await self._accounts.register(
            username, None, appservice=service,
            device_id=get_str(body, "device_id", None, max_len=255),
            device_display_name=get_str(body, "initial_device_display_name", None, max_len=255),
            inhibit_login=get_bool(body, "inhibit_login", False), ip=request.client_ip)
        if isinstance(result, Session):
            return {"user_id": result.user_id, "access_token": result.access_token,
                    "device_id": result.device_id, "home_server": self._accounts.server_name}
        return {"user_id": result, "home_server": self._accounts.server_name}

    async def login(self, body: dict[str, Any], request: ApiRequest) -> str:
        """``POST /login`` with ``type: m.login.application_service``: returns the user ID."""
        service = self._require_service(request)
        identifier = get_dict(body, "identifier", None)
        if identifier is not None:
            if get_str(identifier, "type") != "m.id.user":
                raise MatrixError(400, "M_UNKNOWN", "Only m.id.user identifiers log in application service users")
            user = get_str(identifier, "user", max_len=255)
        else:
            user = get_str(body, "user", max_len=255)
        user_id = user if user.startswith("@") else self._accounts.user_id(user.lower())
        if not service.is_interested_in_user(user_id):
            raise MatrixError(403, "M_EXCLUSIVE", f"{user_id} is outside the application service's namespaces")
        info = await self._users.get_user(user_id)
        if info is None or info.deactivated:
            raise MatrixError(403, "M_FORBIDDEN", "Invalid username")
        return user_id

    # ping -------------------------------------------------------------------

    def register_routes(self, router: Router) -> None:
        router.add("POST", "/_matrix/client/v1/appservice/{appservice_id}/ping", self.ping)

    async def ping(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/v1/appservice/{appserviceId}/ping — check the homeserver reaches the service.

        Spec: application-service-api "Pinging" (client-server companion).
        """
        body = request.json()
        txn_id = get_str(body, "transaction_id", None, max_len=255)
        service = getattr(request.requester, "appservice", None)
        target = self._by_id.get(request.path_params["appservice_id"])
        if service is None or target is not service:
            raise MatrixError(403, "M_FORBIDDEN", "This access token does not belong to that application service")
        assert isinstance(service, ApplicationService)
        duration_ms = await self._api.ping(service, txn_id)
        for listener in self.ping_listeners:
            listener(service)
        return {"duration_ms": duration_ms}
