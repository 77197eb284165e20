"""Accounts: registration, password login, devices and access tokens."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from homeserver.api.errors import MatrixError
from homeserver.storage.users import UserStore, hash_token
from homeserver.users.auth import Authenticator
from homeserver.users.passwords import PasswordHasher
from homeserver.util.clock import Clock
from homeserver.util.ids import new_access_token, new_device_id, random_string

# Spec (appendices, user identifiers): new localparts use only these characters.
_LOCALPART = re.compile(r"^[a-z0-9._=\-/+]+$")


@dataclass(frozen=True)
class Session:
    user_id: str
    device_id: str
    access_token: str


class AccountService:
    def __init__(self, server_name: str, users: UserStore, auth: Authenticator, hasher: PasswordHasher,
                 clock: Clock) -> None:
        self.server_name = server_name
        self._users = users
        self._auth = auth
        self._hasher = hasher
        self._clock = clock
        #: Checks a new user ID against reserved namespaces (application services add theirs).
        self.exclusive_checks: list = []

    def user_id(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    def check_username(self, localpart: str, appservice: object = None) -> str:
        """Validate a requested localpart; returns the full user ID.

        Raises:
            MatrixError: ``M_INVALID_USERNAME`` or ``M_EXCLUSIVE``.
        """
        if not localpart or not _LOCALPART.match(localpart):
            raise MatrixError(400, "M_INVALID_USERNAME",
                              "User ID may only contain a-z, 0-9, and the characters . _ = - / +")
        user_id = self.user_id(localpart)
        if len(user_id.encode("utf-8")) > 255:
            raise MatrixError(400, "M_INVALID_USERNAME", "User ID may not be longer than 255 bytes")
        for check in self.exclusive_checks:
            check(user_id, appservice)
        return user_id

    async def is_available(self, localpart: str) -> bool:
        user_id = self.check_username(localpart)
        return not await self._users.find_user_case_insensitive(user_id)

    async def register(self, localpart: str | None, password: str | None, *, admin: bool = False,
                       appservice_id: str | None = None, device_id: str | None = None,
                       device_display_name: str | None = None, inhibit_login: bool = False,
                       ip: str | None = None, appservice: Any = None) -> Session | str:
        """Create an account (and, unless ``inhibit_login``, a device and token).

        Args:
            appservice: The application service registering the user (its
                namespace checks apply, and the user is marked as its own).

        Returns a :class:`Session`, or only the user ID when ``inhibit_login``.
        """
        if localpart is None:
            localpart = await self._generate_localpart()
        user_id = self.check_username(localpart, appservice)
        if appservice is not None:
            appservice_id = appservice_id or appservice.id
        if await self._users.find_user_case_insensitive(user_id):
            raise MatrixError(400, "M_USER_IN_USE", "User ID already taken.")
        password_hash = await self._hasher.hash(password) if password else None
        if not await self._users.create_user(user_id, password_hash, self._clock.time_msec(), admin=admin,
                                             appservice_id=appservice_id):
            raise MatrixError(400, "M_USER_IN_USE", "User ID already taken.")
        if inhibit_login:
            return user_id
        return await self.create_session(user_id, device_id, device_display_name, ip)

    async def _generate_localpart(self) -> str:
        while True:
            candidate = random_string(12).lower()
            if not await self._users.find_user_case_insensitive(self.user_id(candidate)):
                return candidate

    async def create_session(self, user_id: str, device_id: str | None, display_name: str | None,
                             ip: str | None = None) -> Session:
        """A new access token on a new or existing device. Re-using a device ID logs its old tokens out."""
        if device_id is None:
            device_id = new_device_id()
        else:
            self._auth.invalidate(await self._users.delete_tokens(user_id, [device_id]))
        now = self._clock.time_msec()
        await self._users.upsert_device(user_id, device_id, display_name, now, ip)
        token = new_access_token()
        await self._users.add_access_token(token, user_id, device_id, now)
        return Session(user_id, device_id, token)

    async def check_password(self, user_id: str, password: str) -> str | None:
        """The canonical user ID when the password matches an active account, else None."""
        candidates = await self._users.find_user_case_insensitive(user_id)
        if user_id in candidates:
            candidates = [user_id]
        if len(candidates) != 1:
            return None
        info = await self._users.get_user(candidates[0])
        if info is None or info.deactivated:
            return None
        if not await self._hasher.check(password, info.password_hash):
            return None
        return info.user_id

    async def logout(self, access_token: str, user_id: str, device_id: str | None) -> None:
        """Log one session out: the device goes with its token, as the spec says."""
        if device_id is not None:
            self._auth.invalidate(await self._users.delete_devices(user_id, [device_id]))
        else:
            await self._users.delete_token(access_token)
            self._auth.invalidate([hash_token(access_token)])

    async def logout_all(self, user_id: str) -> None:
        devices = await self._users.get_devices(user_id)
        self._auth.invalidate(await self._users.delete_devices(user_id, [d.device_id for d in devices]))
        self._auth.invalidate(await self._users.delete_tokens(user_id))
