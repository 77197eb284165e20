"""Application-service registrations: the YAML files, validated, and their namespaces.

A registration (spec: application-service-api "Registration") names the
service, its URL, its two tokens, its sender and the namespaces of user IDs,
room aliases and room IDs it is interested in. Namespaces are regular
expressions matched against the *whole* identifier; an ``exclusive``
namespace keeps humans and other services out of it (``M_EXCLUSIVE``).

Every problem with a file is one :class:`~homeserver.config.ConfigError`
whose key names the file and the key inside it, e.g.
``bridge.yaml: namespaces.users[0].regex``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import yaml

from homeserver.config import ConfigError
from homeserver.core.ids import is_valid_localpart

#: Upper bound on regexes per namespace kind, so a typo cannot make matching slow.
MAX_NAMESPACES = 100
_TOKEN_MAX = 1024


@dataclass(frozen=True)
class Namespace:
    exclusive: bool
    regex: re.Pattern[str]

    def matches(self, value: str) -> bool:
        return self.regex.fullmatch(value) is not None


def _matches(namespaces: Sequence[Namespace], value: str, exclusive_only: bool = False) -> bool:
    return any(ns.matches(value) for ns in namespaces if ns.exclusive or not exclusive_only)


@dataclass(frozen=True, eq=False)
class ApplicationService:
    """One registered application service (compared by identity)."""

    id: str
    url: str | None
    as_token: str
    hs_token: str
    sender: str
    server_name: str
    users: tuple[Namespace, ...] = ()
    aliases: tuple[Namespace, ...] = ()
    rooms: tuple[Namespace, ...] = ()
    #: Whether masqueraded users are rate-limited (the sender never is). Synapse's default.
    rate_limited: bool = True
    receive_ephemeral: bool = False
    protocols: tuple[str, ...] = ()
    source: str = field(default="", compare=False)

    # users --------------------------------------------------------------

    def is_local(self, user_id: str) -> bool:
        return user_id.endswith(":" + self.server_name)

    def is_interested_in_user(self, user_id: str) -> bool:
        """The sender, or a *local* user in one of the user namespaces."""
        return user_id == self.sender or (self.is_local(user_id) and _matches(self.users, user_id))

    def is_exclusive_user(self, user_id: str) -> bool:
        return _matches(self.users, user_id, exclusive_only=True)

    # aliases and rooms -------------------------------------------------

    def is_interested_in_alias(self, alias: str) -> bool:
        return _matches(self.aliases, alias)

    def is_exclusive_alias(self, alias: str) -> bool:
        return _matches(self.aliases, alias, exclusive_only=True)

    def is_interested_in_room_id(self, room_id: str) -> bool:
        return _matches(self.rooms, room_id)

    def is_exclusive_room(self, room_id: str) -> bool:
        return _matches(self.rooms, room_id, exclusive_only=True)


class _Reader:
    """Typed reads from one registration mapping; errors name ``file: key``."""

    def __init__(self, source: str, data: Any, path: str = "") -> None:
        self.source = source
        self.path = path
        if not isinstance(data, Mapping):
            raise self.error("", "must be a mapping")
        self.data = data

    def key(self, name: str) -> str:
        inner = f"{self.path}.{name}" if self.path and name else (self.path or name)
        return f"{self.source}: {inner}" if inner else self.source

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.key(name), problem)

    def get(self, name: str, kind: type | tuple[type, ...], what: str, *, required: bool = True,
            default: Any = None) -> Any:
        if name not in self.data:
            if required:
                raise self.error(name, "is required")
            return default
        value = self.data[name]
        if value is None and not required:
            return default
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise self.error(name, f"must be {what}")
        return value

    def text(self, name: str, max_len: int = _TOKEN_MAX) -> str:
        value = self.get(name, str, "a string")
        if not value.strip():
            raise self.error(name, "must not be empty")
        if len(value) > max_len:
            raise self.error(name, f"must be at most {max_len} characters")
        return value


def _namespaces(reader: _Reader, kind: str) -> tuple[Namespace, ...]:
    items = reader.get(kind, list, "a list", required=False, default=[])
    if len(items) > MAX_NAMESPACES:
        raise reader.error(kind, f"has more than {MAX_NAMESPACES} entries")
    out = []
    for i, item in enumerate(items):
        r = _Reader(reader.source, item, f"{reader.path}.{kind}[{i}]")
        exclusive = r.get("exclusive", bool, "true or false")
        pattern = r.text("regex")
        try:
            regex = re.compile(pattern)
        except re.error as e:
            raise r.error("regex", f"is not a valid regular expression: {e}") from None
        out.append(Namespace(exclusive, regex))
    return tuple(out)


def parse_registration(data: Any, server_name: str, source: str = "<registration>") -> ApplicationService:
    """Validate one registration mapping.

    Raises:
        ConfigError: naming ``source`` and the key that is wrong.
    """
    r = _Reader(source, data)
    service_id = r.text("id", 255)
    if "url" not in r.data:
        raise r.error("url", "is required (use null for a service that receives no traffic)")
    url = r.get("url", str, "a URL string or null", required=False, default=None)
    if url is not None and not url.startswith(("http://", "https://")):
        raise r.error("url", f"must start with http:// or https://, not {url!r}")
    as_token = r.text("as_token")
    hs_token = r.text("hs_token")
    if as_token == hs_token:
        raise r.error("hs_token", "must differ from as_token")
    localpart = r.text("sender_localpart", 255)
    if not is_valid_localpart(localpart):
        raise r.error("sender_localpart", f"{localpart!r} is not a valid user ID localpart")
    ns = _Reader(source, r.get("namespaces", dict, "a mapping with users, aliases and rooms"), "namespaces")
    unknown = set(ns.data) - {"users", "aliases", "rooms"}
    if unknown:
        raise ns.error(sorted(unknown)[0], "is not a namespace kind (users, aliases, rooms)")
    ephemeral = r.get("receive_ephemeral", bool, "true or false", required=False, default=None)
    if ephemeral is None:  # MSC2409's unstable name, still written by older bridges
        ephemeral = r.get("de.sorunome.msc2409.push_ephemeral", bool, "true or false", required=False,
                          default=False)
    protocols = r.get("protocols", list, "a list of strings", required=False, default=[])
    for i, p in enumerate(protocols):
        if not isinstance(p, str) or not p:
            raise r.error(f"protocols[{i}]", "must be a non-empty string")
    return ApplicationService(
        id=service_id, url=url.rstrip("/") if url else None, as_token=as_token, hs_token=hs_token,
        sender=f"@{localpart}:{server_name}", server_name=server_name,
        users=_namespaces(ns, "users"), aliases=_namespaces(ns, "aliases"),
        rooms=_namespaces(ns, "rooms"),
        rate_limited=r.get("rate_limited", bool, "true or false", required=False, default=True),
        receive_ephemeral=ephemeral, protocols=tuple(protocols), source=source)


def load_registration(path: str, server_name: str) -> ApplicationService:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(path, f"cannot read the registration: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(path, f"is not valid YAML: {str(e).splitlines()[0]}") from None
    return parse_registration(data, server_name, path)


def check_unique(services: Iterable[ApplicationService]) -> list[ApplicationService]:
    """Refuse two services with the same ID, as_token or hs_token (the spec's MUST)."""
    seen: dict[tuple[str, str], ApplicationService] = {}
    out = []
    for s in services:
        for key, value in (("id", s.id), ("as_token", s.as_token), ("hs_token", s.hs_token)):
            other = seen.get((key, value))
            if other is not None:
                raise ConfigError(f"{s.source}: {key}", f"is also used by {other.source}; each service needs its own")
            seen[(key, value)] = s
        # A token of one service must not be a token of another either.
        for key, value in (("as_token", s.as_token), ("hs_token", s.hs_token)):
            swapped = "hs_token" if key == "as_token" else "as_token"
            other = seen.get((swapped, value))
            if other is not None and other is not s:
                raise ConfigError(f"{s.source}: {key}", f"is also used by {other.source}; each service needs its own")
        out.append(s)
    return out


def load_registrations(paths: Sequence[str], server_name: str) -> list[ApplicationService]:
    """Load, validate and cross-check every registration file, in order."""
    return check_unique(load_registration(p, server_name) for p in paths)
