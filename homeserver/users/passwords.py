"""Password hashing with bcrypt, off the reactor thread (hashing is slow on purpose).

The cost is ``bcrypt_rounds`` from the config. Stored hashes carry their own
cost, so raising it affects new and changed passwords only.
"""
from __future__ import annotations

import base64
import hashlib

import bcrypt
from twisted.internet import threads

# bcrypt only looks at the first 72 bytes and refuses NUL bytes; such passwords
# are pre-hashed (SHA-256, base64) so that long passwords sharing a 72-byte
# prefix do not collide and any password works.
_BCRYPT_MAX = 72


def _prepare(password: str) -> bytes:
    raw = password.encode("utf-8")
    if len(raw) > _BCRYPT_MAX or b"\x00" in raw:
        raw = base64.b64encode(hashlib.sha256(raw).digest())
    return raw


class PasswordHasher:
    def __init__(self, rounds: int = 12, pepper: str = "") -> None:
        self.rounds = rounds
        self._pepper = pepper

    def hash_sync(self, password: str) -> str:
        return bcrypt.hashpw(_prepare(password + self._pepper), bcrypt.gensalt(self.rounds)).decode("ascii")

    def check_sync(self, password: str, stored: str | None) -> bool:
        if not stored:
            return False
        try:
            return bcrypt.checkpw(_prepare(password + self._pepper), stored.encode("ascii"))
        except ValueError:
            return False

    async def hash(self, password: str) -> str:
        return await threads.deferToThread(self.hash_sync, password)

    async def check(self, password: str, stored: str | None) -> bool:
        return await threads.deferToThread(self.check_sync, password, stored)
