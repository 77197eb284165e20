"""Accounts: registration, password login and changes, devices, deactivation.

Other components plug in through three hook lists (constructor injection
happens in ``server.py``):

- :attr:`AccountService.exclusive_checks` — ``check(user_id, appservice) -> bool``
  returns True when ``user_id`` lies in a namespace reserved by *another*
  application service; registration then answers ``M_EXCLUSIVE``.
- :attr:`AccountService.on_devices_deleted` — ``async cb(user_id, device_ids)``
  after devices are deleted (end-to-end keys drop the devices' keys).
- :attr:`AccountService.on_deactivate` — ``async cb(user_id, erase)`` after an
  account is deactivated (rooms make the user leave every room).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from homeserver.api.errors import MatrixError
from homeserver.core.ids import is_valid_localpart
from homeserver.storage.users import Device, UserStore, hash_token
from homeserver.users.auth import Authenticator
from homeserver.users.passwords import PasswordHasher
from homeserver.users.uia import StageChecker, UiaSession
from homeserver.util.clock import Clock
from homeserver.util.ids import new_access_token, new_device_id, random_string

logger = logging.getLogger(__name__)

#: Longest password accepted anywhere (bcrypt pre-hashes beyond 72 bytes, so length is free).
MAX_PASSWORD_LEN = 1024
#: Longest device display name.
MAX_DEVICE_NAME_LEN = 255

ExclusiveCheck = Callable[[str, Any], bool]
DevicesDeleted = Callable[[str, list[str]], Awaitable[None]]
Deactivated = Callable[[str, bool], Awaitable[None]]


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
        #: Reserved-namespace checks (application services add theirs); see the module docstring.
        self.exclusive_checks: list[ExclusiveCheck] = []
        self.on_devices_deleted: list[DevicesDeleted] = []
        self.on_deactivate: list[Deactivated] = []

    def user_id(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    def is_local(self, user_id: str) -> bool:
        return user_id.endswith(":" + self.server_name) and user_id.startswith("@")

    def check_username(self, localpart: str, appservice: Any = None) -> str:
        """Validate a requested localpart (spec 'User Identifiers'); returns the full user ID.

        Raises:
            MatrixError: ``M_INVALID_USERNAME`` or ``M_EXCLUSIVE``.
        """
        if not localpart or not is_valid_localpart(localpart):
            raise MatrixError(400, "M_INVALID_USERNAME",
                              "User ID may only contain a-z, 0-9, and the characters . _ = - / +")
        if appservice is None and (localpart.startswith("_") or localpart.isdigit()):
            # As in Synapse: '_' prefixes are left to bridges (application
            # services), all-digit localparts to generated guest IDs.
            raise MatrixError(400, "M_INVALID_USERNAME",
                              "User ID may not start with '_' or consist only of digits")
        user_id = self.user_id(localpart)
        if len(user_id.encode("utf-8")) > 255:
            raise MatrixError(400, "M_INVALID_USERNAME", "User ID may not be longer than 255 bytes")
        for check in self.exclusive_checks:
            if check(user_id, appservice):
                raise MatrixError(400, "M_EXCLUSIVE",
                                  "This user ID is reserved by an application service")
        return user_id

    async def is_available(self, localpart: str, appservice: Any = None) -> bool:
        user_id = self.check_username(localpart, appservice)
        return not await self._users.find_user_case_insensitive(user_id)

    async def register(self, localpart: str | None, password: str | None, *, admin: bool = False,
                       appservice_id: str | None = None, appservice: Any = None,
                       device_id: str | None = None, device_display_name: str | None = None,
                       inhibit_login: bool = False, ip: str | None = None,
                       check_username: bool = True) -> Session | str:
        """Create an account (and, unless ``inhibit_login``, a device and token).

        ``check_username=False`` skips the reserved-name rules (not the grammar):
        the operator's shared-secret registration may create ``_bot`` names.

        Returns a :class:`Session`, or only the user ID when ``inhibit_login``.
        """
        if localpart is None:
            localpart = await self._generate_localpart()
        if check_username:
            user_id = self.check_username(localpart, appservice)
        else:
            if not localpart or not is_valid_localpart(localpart):
                raise MatrixError(400, "M_INVALID_USERNAME", "Invalid user ID localpart")
            user_id = self.user_id(localpart)
        if appservice is not None:
            appservice_id = appservice_id or getattr(appservice, "id", None)
        if await self._users.find_user_case_insensitive(user_id):
            raise MatrixError(400, "M_USER_IN_USE", "User ID already taken.")
        password_hash = await self._hasher.hash(password) if password else None
        if not await self._users.create_user(user_id, password_hash, self._clock.time_msec(), admin=admin,
                                             appservice_id=appservice_id):
            raise MatrixError(400, "M_USER_IN_USE", "User ID already taken.")
        logger.info("registered %s", user_id)
        if inhibit_login:
            return user_id
        return await self.create_session(user_id, device_id, device_display_name, ip)

    async def _generate_localpart(self) -> str:
        while True:
            candidate = random_string(12).lower()
            if candidate.isdigit():
                continue
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

    def password_stage(self, user_id: str) -> StageChecker:
        """The UIA ``m.login.password`` stage for an action by ``user_id``.

        The identifier (``m.id.user`` or legacy ``user``) must name that user:
        a user cannot authorise an action with someone else's password.
        """
        async def check(auth: dict[str, Any], session: UiaSession) -> bool:
            password = auth.get("password")
            identifier = auth.get("identifier")
            if isinstance(identifier, dict):
                if identifier.get("type") != "m.id.user":
                    return False
                claimed = identifier.get("user")
            else:
                claimed = auth.get("user")
            if not isinstance(password, str) or len(password) > MAX_PASSWORD_LEN or not isinstance(claimed, str):
                return False
            if not claimed.startswith("@"):
                claimed = self.user_id(claimed.lower())
            if claimed.lower() != user_id.lower():
                return False
            return await self.check_password(user_id, password) == user_id
        return check

    async def change_password(self, user_id: str, new_password: str, keep_device: str | None,
                              logout_devices: bool = True, keep_token: str | None = None) -> None:
        """Set a new password; with ``logout_devices`` every other device (and its tokens) goes.

        ``keep_device`` / ``keep_token`` identify the session making the request, which survives.
        """
        await self._users.set_password_hash(user_id, await self._hasher.hash(new_password))
        if not logout_devices:
            return
        devices = [d.device_id for d in await self._users.get_devices(user_id) if d.device_id != keep_device]
        await self.delete_devices(user_id, devices)
        # every other token goes too (tokens without a device, older tokens of this device)
        self._auth.invalidate(await self._users.delete_tokens(user_id, except_token=keep_token))

    async def get_devices(self, user_id: str) -> list[Device]:
        return await self._users.get_devices(user_id)

    async def get_device(self, user_id: str, device_id: str) -> Device | None:
        return await self._users.get_device(user_id, device_id)

    async def create_device(self, user_id: str, device_id: str, display_name: str | None) -> None:
        """A device without an access token (application services manage their users' devices)."""
        await self._users.upsert_device(user_id, device_id, display_name, self._clock.time_msec())

    async def set_device_display_name(self, user_id: str, device_id: str, name: str | None) -> bool:
        return await self._users.set_device_display_name(user_id, device_id, name)

    async def delete_devices(self, user_id: str, device_ids: list[str]) -> None:
        """Delete devices and their access tokens, then tell the ``on_devices_deleted`` hooks."""
        if not device_ids:
            return
        self._auth.invalidate(await self._users.delete_devices(user_id, device_ids))
        for cb in self.on_devices_deleted:
            await cb(user_id, list(device_ids))

    async def deactivate(self, user_id: str, erase: bool = False) -> None:
        """Deactivate for good: no password, tokens, devices or profile; the ID stays taken.

        ``erase`` is recorded for the ``on_deactivate`` hooks (GDPR erasure of
        messages is theirs to honour); the account itself is handled the same.
        """
        devices = [d.device_id for d in await self._users.get_devices(user_id)]
        self._auth.invalidate(await self._users.deactivate(user_id))
        for cb in self.on_devices_deleted:
            await cb(user_id, devices)
        for hook in self.on_deactivate:
            await hook(user_id, erase)
        logger.info("deactivated %s (erase=%s)", user_id, erase)

    async def logout(self, access_token: str, user_id: str, device_id: str | None) -> None:
        """Log one session out: the device goes with its token, as the spec says."""
        if device_id is not None:
            await self.delete_devices(user_id, [device_id])
        else:
            await self._users.delete_token(access_token)
            self._auth.invalidate([hash_token(access_token)])

    async def logout_all(self, user_id: str) -> None:
        devices = await self._users.get_devices(user_id)
        await self.delete_devices(user_id, [d.device_id for d in devices])
        self._auth.invalidate(await self._users.delete_tokens(user_id))
