"""Random identifiers: tokens, room IDs, device IDs, media IDs.

All come from the OS CSPRNG, so processes never need to coordinate to stay
unique.
"""
from __future__ import annotations

import secrets
import string

_ALNUM = string.ascii_letters + string.digits


def random_string(length: int, alphabet: str = _ALNUM) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def new_room_id(server_name: str) -> str:
    return f"!{random_string(18)}:{server_name}"


def new_device_id() -> str:
    return random_string(10, string.ascii_uppercase)


def new_access_token() -> str:
    return "syt_" + secrets.token_urlsafe(32)
