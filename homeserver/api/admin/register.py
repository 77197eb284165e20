"""Shared-secret registration: ``/_synapse/admin/v1/register``.

The protocol of Synapse's ``register_new_user`` tool, so existing tools work:

1. ``GET`` returns ``{"nonce": N}``. Nonces are single-use and expire after
   :data:`NONCE_TTL_MS`.
2. ``POST {"nonce", "username", "password", "admin", "displayname"?,
   "user_type"?, "mac"}`` where ``mac`` is the hex HMAC-SHA1, keyed with
   ``registration_shared_secret``, of
   ``nonce NUL username NUL password NUL ("admin" | "notadmin") [NUL user_type]``.

It works whether or not open registration is enabled; without a configured
secret both calls answer 400. It is not rate limited: nothing can be done
without the secret, and the nonce table is bounded (:data:`MAX_NONCES`).
"""
from __future__ import annotations

import hashlib
import hmac
from typing import Any

from homeserver.api.errors import MatrixError, forbidden
from homeserver.api.http import ApiRequest, Router
from homeserver.api.validate import get_bool, get_str
from homeserver.users.accounts import MAX_PASSWORD_LEN, AccountService, Session
from homeserver.users.profiles import ProfileService
from homeserver.util.clock import Clock
from homeserver.util.ids import random_string

NONCE_TTL_MS = 60_000
MAX_NONCES = 10_000
#: user_type values Synapse defines; accepted (they are part of the MAC) but not stored.
USER_TYPES = ("support", "bot")

PATH = "/_synapse/admin/v1/register"


def compute_mac(secret: str, nonce: str, username: str, password: str, admin: bool,
                user_type: str | None = None) -> str:
    """The hex HMAC-SHA1 both sides compute (also used by ``register_new_user``)."""
    mac = hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha1)
    mac.update(nonce.encode("utf-8"))
    for part in (username, password, "admin" if admin else "notadmin"):
        mac.update(b"\x00")
        mac.update(part.encode("utf-8"))
    if user_type:
        mac.update(b"\x00")
        mac.update(user_type.encode("utf-8"))
    return mac.hexdigest()


class AdminRegisterServlets:
    def __init__(self, accounts: AccountService, profiles: ProfileService, shared_secret: str | None,
                 clock: Clock) -> None:
        self._accounts = accounts
        self._profiles = profiles
        self._secret = shared_secret
        self._clock = clock
        self._nonces: dict[str, int] = {}  # nonce -> issued at (ms)

    def register(self, router: Router) -> None:
        router.add("GET", PATH, self.get_nonce, auth="none")
        router.add("POST", PATH, self.post_register, auth="none")

    def _require_secret(self) -> str:
        if not self._secret:
            raise MatrixError(400, "M_UNKNOWN", "Shared secret registration is not enabled")
        return self._secret

    def _expire(self) -> None:
        cutoff = self._clock.time_msec() - NONCE_TTL_MS
        for nonce in [n for n, ts in self._nonces.items() if ts < cutoff]:
            del self._nonces[nonce]

    async def get_nonce(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_synapse/admin/v1/register — a fresh single-use nonce for shared-secret registration."""
        self._require_secret()
        self._expire()
        while len(self._nonces) >= MAX_NONCES:
            del self._nonces[next(iter(self._nonces))]
        nonce = random_string(32)
        self._nonces[nonce] = self._clock.time_msec()
        return {"nonce": nonce}

    async def post_register(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_synapse/admin/v1/register — create a user, authorised by the shared-secret HMAC."""
        secret = self._require_secret()
        body = request.json()
        nonce = get_str(body, "nonce", max_len=128)
        username = get_str(body, "username", max_len=255)
        password = get_str(body, "password", max_len=MAX_PASSWORD_LEN)
        admin = get_bool(body, "admin", False)
        displayname = get_str(body, "displayname", None, max_len=256, allow_none=True)
        user_type = get_str(body, "user_type", None, max_len=64, allow_none=True)
        mac = get_str(body, "mac", max_len=128)
        if user_type is not None and user_type not in USER_TYPES:
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid user type")
        if not password:
            raise MatrixError(400, "M_MISSING_PARAM", "A password is required")
        if "\x00" in username or "\x00" in password:
            raise MatrixError(400, "M_INVALID_PARAM", "username and password may not contain NUL")
        self._expire()
        # single use: the nonce is gone whether or not the rest succeeds
        if self._nonces.pop(nonce, None) is None:
            raise MatrixError(400, "M_UNKNOWN", "Unrecognised nonce")
        want = compute_mac(secret, nonce, username, password, admin, user_type)
        if not hmac.compare_digest(want.encode("ascii"), mac.encode("utf-8", "replace")):
            raise forbidden("HMAC incorrect")
        localpart = username.lower()
        if localpart.startswith("@"):
            localpart = localpart[1:].split(":", 1)[0]
        result = await self._accounts.register(localpart, password, admin=admin,
                                               ip=request.client_ip, check_username=False)
        assert isinstance(result, Session)
        if displayname:
            await self._profiles.set_field(result.user_id, result.user_id, "displayname", displayname)
        return {"user_id": result.user_id, "access_token": result.access_token,
                "device_id": result.device_id, "home_server": self._accounts.server_name}
