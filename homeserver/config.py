"""Typed configuration, loaded from YAML and validated with clear errors.

Each section is a frozen dataclass with a ``parse`` classmethod. A bad value
raises :class:`ConfigError` naming the key path (``database.url``) and what is
wrong; the daemon prints that one line and exits.

New sections (media, groups, federation, ...) follow the same pattern: a
dataclass, a ``parse`` that reads from a :class:`Section`, a field on
:class:`Config`, and a documented block in ``sample_config.yaml``.
"""
from __future__ import annotations

import builtins
import os
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlparse

import yaml


class ConfigError(Exception):
    """A config value is missing or wrong. ``str()`` is one line naming the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config error: {key}: {problem}")
        self.key = key
        self.problem = problem


_MISSING = object()


class Section:
    """Typed reads from one mapping of the YAML, with the key path for errors."""

    def __init__(self, data: Any, path: str = "") -> None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(path or "<root>", "must be a mapping")
        self._data = data
        self._path = path

    def key(self, name: str) -> str:
        return f"{self._path}.{name}" if self._path else name

    def _get(self, name: str, default: Any) -> Any:
        value = self._data.get(name, _MISSING)
        if value is _MISSING or value is None:
            if default is _MISSING:
                raise ConfigError(self.key(name), "is required")
            return default
        return value

    def str(self, name: str, default: Any = _MISSING) -> Any:
        value = self._get(name, default)
        if value is not default and not isinstance(value, str):
            raise ConfigError(self.key(name), f"must be a string, not {type(value).__name__}")
        return value

    def bool(self, name: builtins.str, default: Any = _MISSING) -> Any:
        value = self._get(name, default)
        if value is not default and not isinstance(value, bool):
            raise ConfigError(self.key(name), "must be true or false")
        return value

    def int(self, name: builtins.str, default: Any = _MISSING, minimum: int | None = None,
            maximum: int | None = None) -> Any:
        value = self._get(name, default)
        if value is default:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.key(name), "must be an integer")
        if minimum is not None and value < minimum:
            raise ConfigError(self.key(name), f"must be at least {minimum}")
        if maximum is not None and value > maximum:
            raise ConfigError(self.key(name), f"must be at most {maximum}")
        return value

    def float(self, name: builtins.str, default: Any = _MISSING, minimum: float | None = None) -> Any:
        value = self._get(name, default)
        if value is default:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(self.key(name), "must be a number")
        if minimum is not None and value < minimum:
            raise ConfigError(self.key(name), f"must be at least {minimum}")
        return float(value)

    def list(self, name: builtins.str, default: Any = _MISSING) -> Any:
        value = self._get(name, default)
        if value is not default and not isinstance(value, list):
            raise ConfigError(self.key(name), "must be a list")
        return value

    def section(self, name: builtins.str) -> "Section":
        return Section(self._data.get(name), self.key(name))

    def size(self, name: builtins.str, default: Any = _MISSING) -> Any:
        """A byte size: an integer, or a string like ``50M`` / ``1G`` / ``512K``."""
        value = self._get(name, default)
        if value is default:
            return value
        try:
            return parse_size(value)
        except ValueError as e:
            raise ConfigError(self.key(name), str(e)) from None


def parse_size(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be a size such as 50M")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if isinstance(value, str):
        text = value.strip().upper().removesuffix("B").removesuffix("I")
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        mult = units.get(text[-1:], 1)
        number = text[:-1] if text[-1:] in units else text
        if number.isdigit():
            return int(number) * mult
    raise ValueError(f"must be a size such as 50M, not {value!r}")


@dataclass(frozen=True)
class Listener:
    bind: str = "127.0.0.1"
    port: int = 8008


@dataclass(frozen=True)
class DatabaseConfig:
    url: str
    #: psycopg2 connections (threads) for PostgreSQL; SQLite always uses one writer.
    pool_size: int = 8

    @property
    def engine(self) -> str:
        return "postgres" if self.url.startswith(("postgresql://", "postgres://")) else "sqlite"

    @property
    def sqlite_path(self) -> str:
        return self.url[len("sqlite:///"):]

    @classmethod
    def parse(cls, s: Section, data_dir: str) -> "DatabaseConfig":
        url = s.str("url", f"sqlite:///{os.path.join(data_dir, 'homeserver.db')}")
        check_database_url(url, s.key("url"))
        return cls(url=url, pool_size=s.int("pool_size", 8, minimum=1, maximum=256))


def check_database_url(url: str, key: str) -> None:
    if url.startswith("sqlite:///"):
        if url == "sqlite:///":
            raise ConfigError(key, "sqlite URL needs a file path, like sqlite:///data/homeserver.db")
        return
    if url.startswith(("postgresql://", "postgres://")):
        parsed = urlparse(url)
        if not parsed.path.strip("/"):
            raise ConfigError(key, "postgresql URL needs a database name, like postgresql://user@host:5432/dbname")
        return
    raise ConfigError(key, f"must start with sqlite:/// or postgresql://, not {url!r}")


@dataclass(frozen=True)
class RateLimit:
    per_second: float
    burst: int


@dataclass(frozen=True)
class RateLimitConfig:
    enabled: bool = True
    login: RateLimit = RateLimit(0.17, 3)
    register: RateLimit = RateLimit(0.17, 3)
    message: RateLimit = RateLimit(10.0, 50)

    @classmethod
    def parse(cls, s: Section) -> "RateLimitConfig":
        def one(name: str, default: RateLimit) -> RateLimit:
            sub = s.section(name)
            return RateLimit(sub.float("per_second", default.per_second, minimum=0.0),
                             sub.int("burst", default.burst, minimum=1))
        return cls(enabled=s.bool("enabled", True), login=one("login", cls.login),
                   register=one("register", cls.register), message=one("message", cls.message))


@dataclass(frozen=True)
class Config:
    """The whole configuration. Build with :func:`load_config` or :meth:`from_dict`."""

    server_name: str
    data_dir: str
    signing_key_path: str
    database: DatabaseConfig
    listeners: tuple[Listener, ...] = (Listener(),)
    public_baseurl: str | None = None
    enable_registration: bool = False
    registration_shared_secret: str | None = None
    bcrypt_rounds: int = 12
    max_request_body_size: int = 1 << 20
    default_room_version: str = "10"
    rate_limiting: RateLimitConfig = RateLimitConfig()
    metrics_enabled: bool = False
    access_log: bool = True
    presence_enabled: bool = True
    #: Seconds shutdown waits for requests in flight before closing the database anyway.
    shutdown_grace_period: float = 10.0
    #: Unknown top-level sections are kept for extensions to read.
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base_dir: str = ".") -> "Config":
        s = Section(data)
        server_name = s.str("server_name")
        if not server_name or any(c.isspace() for c in server_name) or "/" in server_name:
            raise ConfigError("server_name", f"{server_name!r} is not a valid server name")
        data_dir = _resolve(base_dir, s.str("data_dir", "data"))
        listeners = []
        for i, item in enumerate(s.list("listeners", [{"bind": "127.0.0.1", "port": 8008}])):
            ls = Section(item, f"listeners[{i}]")
            listeners.append(Listener(bind=ls.str("bind", "127.0.0.1"),
                                      port=ls.int("port", 8008, minimum=0, maximum=65535)))
        room_version = s.str("default_room_version", "10")
        if room_version not in {str(v) for v in range(1, 13)}:
            raise ConfigError("default_room_version", f"unknown room version {room_version!r} (1 to 12)")
        secret = s.str("registration_shared_secret", None)
        public_baseurl = s.str("public_baseurl", None)
        if public_baseurl is not None and not public_baseurl.startswith(("http://", "https://")):
            raise ConfigError("public_baseurl", f"must start with http:// or https://, not {public_baseurl!r}")
        return cls(
            server_name=server_name,
            data_dir=data_dir,
            signing_key_path=_resolve(base_dir, s.str("signing_key_path", os.path.join(data_dir, "signing.key"))),
            database=DatabaseConfig.parse(s.section("database"), data_dir),
            listeners=tuple(listeners),
            public_baseurl=public_baseurl,
            enable_registration=s.bool("enable_registration", False),
            registration_shared_secret=secret,
            bcrypt_rounds=s.int("bcrypt_rounds", 12, minimum=4, maximum=31),
            max_request_body_size=s.size("max_request_body_size", 1 << 20),
            default_room_version=room_version,
            rate_limiting=RateLimitConfig.parse(s.section("rate_limiting")),
            metrics_enabled=s.section("metrics").bool("enabled", False),
            access_log=s.bool("access_log", True),
            presence_enabled=s.section("presence").bool("enabled", True),
            shutdown_grace_period=s.float("shutdown_grace_period", 10.0, minimum=0.0),
            raw=dict(data),
        )

    def section(self, name: str) -> Section:
        """The raw mapping of an extension section, for its own ``parse``."""
        return Section(self.raw.get(name), name)


def _resolve(base_dir: str, path: str) -> str:
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))


def load_config(path: str) -> Config:
    """Read and validate a YAML config file. Relative paths are relative to the current directory."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError("<file>", f"cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError("<file>", f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    return Config.from_dict(data or {}, base_dir=os.getcwd())
