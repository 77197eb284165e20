"""Matrix identifiers: grammar from the appendices' "Identifier Grammar".

Two strictness levels exist for user IDs: the current grammar (what we
allow when *creating* users) and the historical one (any code point except
``:`` and NUL), which servers must still accept in events over federation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_ID_BYTES = 255

_LOCALPART_RE = re.compile(r"[a-z0-9._=\-/+]+")
_IPV4_RE = re.compile(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})")
_IPV6_RE = re.compile(r"\[[0-9A-Fa-f:.]{2,45}\]")
_DNS_RE = re.compile(r"[A-Za-z0-9\-.]{1,255}")
_PORT_RE = re.compile(r"\d{1,5}")


class InvalidIdError(ValueError):
    """Raised when a string does not follow an identifier grammar."""


def is_valid_localpart(localpart: str) -> bool:
    """Whether ``localpart`` follows the current (v1.8+) user ID grammar."""
    return bool(_LOCALPART_RE.fullmatch(localpart))


def is_historical_localpart(localpart: str) -> bool:
    """Whether ``localpart`` is acceptable under the historical grammar."""
    return ":" not in localpart and "\x00" not in localpart


def server_name_is_valid(server_name: str) -> bool:
    """Whether ``server_name`` matches ``hostname [":" port]``."""
    if not server_name:
        return False
    host, port = server_name, None
    if server_name.startswith("["):
        end = server_name.find("]")
        if end < 0:
            return False
        host, rest = server_name[: end + 1], server_name[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                return False
            port = rest[1:]
        if not _IPV6_RE.fullmatch(host):
            return False
    else:
        if ":" in server_name:
            host, port = server_name.rsplit(":", 1)
        m = _IPV4_RE.fullmatch(host)
        if m:
            if any(int(part) > 255 for part in m.groups()):
                return False
        elif not _DNS_RE.fullmatch(host):
            return False
    if port is not None and not _PORT_RE.fullmatch(port):
        return False
    return True


def get_domain_from_id(identifier: str) -> str:
    """Return the part after the first ``:`` of an ``&local:domain`` ID.

    Raises:
        InvalidIdError: if there is no ``:``.
    """
    idx = identifier.find(":")
    if idx == -1:
        raise InvalidIdError(f"{identifier!r} has no domain part")
    return identifier[idx + 1 :]


def get_localpart_from_id(identifier: str) -> str:
    """Return the part between the sigil and the first ``:``."""
    idx = identifier.find(":")
    if idx == -1:
        raise InvalidIdError(f"{identifier!r} has no domain part")
    return identifier[1:idx]


@dataclass(frozen=True, slots=True)
class _DomainId:
    """An ``&localpart:domain`` identifier."""

    localpart: str
    domain: str

    SIGIL = ""

    @classmethod
    def parse(cls, s: str) -> "_DomainId":
        if not isinstance(s, str) or not s.startswith(cls.SIGIL):
            raise InvalidIdError(f"{s!r} does not start with {cls.SIGIL!r}")
        if len(s.encode("utf-8")) > MAX_ID_BYTES:
            raise InvalidIdError(f"{s[:40]!r}... is longer than {MAX_ID_BYTES} bytes")
        if ":" not in s:
            raise InvalidIdError(f"{s!r} has no domain part")
        local, domain = s[1:].split(":", 1)
        if "\x00" in local:
            raise InvalidIdError(f"{s!r} contains NUL")
        if not server_name_is_valid(domain):
            raise InvalidIdError(f"{s!r} has an invalid server name")
        return cls(local, domain)

    @classmethod
    def is_valid(cls, s: str) -> bool:
        try:
            cls.parse(s)
        except InvalidIdError:
            return False
        return True

    def to_string(self) -> str:
        return f"{self.SIGIL}{self.localpart}:{self.domain}"

    def __str__(self) -> str:
        return self.to_string()


class UserID(_DomainId):
    """A user ID ``@localpart:domain``.

    ``parse`` accepts the historical grammar (as federation must);
    :meth:`is_compliant` tells whether the localpart follows the current one.
    """

    SIGIL = "@"

    @classmethod
    def parse(cls, s: str) -> "UserID":
        uid = super().parse(s)
        assert isinstance(uid, UserID)
        return uid

    def is_compliant(self) -> bool:
        return is_valid_localpart(self.localpart)


class RoomAlias(_DomainId):
    """A room alias ``#localpart:domain``."""

    SIGIL = "#"

    @classmethod
    def parse(cls, s: str) -> "RoomAlias":
        alias = super().parse(s)
        assert isinstance(alias, RoomAlias)
        return alias


def is_valid_user_id(s: str, *, strict: bool = False) -> bool:
    """Whether ``s`` is a user ID (historical grammar unless ``strict``)."""
    try:
        uid = UserID.parse(s)
    except InvalidIdError:
        return False
    return uid.is_compliant() if strict else True


def is_valid_room_id(s: str) -> bool:
    """Whether ``s`` is a room ID in either form (``!x:domain`` or ``!hash``)."""
    if not isinstance(s, str) or not s.startswith("!") or len(s) < 2:
        return False
    if len(s.encode("utf-8")) > MAX_ID_BYTES or "\x00" in s:
        return False
    if ":" in s:
        return server_name_is_valid(s.split(":", 1)[1])
    return True


def is_valid_event_id(s: str) -> bool:
    """Whether ``s`` is an event ID in any room version's form."""
    return (
        isinstance(s, str)
        and s.startswith("$")
        and len(s) > 1
        and len(s.encode("utf-8")) <= MAX_ID_BYTES
    )


def is_valid_room_alias(s: str) -> bool:
    return RoomAlias.is_valid(s)
