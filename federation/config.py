"""The ``federation:`` config section."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from homeserver.config import ConfigError, Section


@dataclass(frozen=True)
class OldKey:
    """A retired signing key still published in ``old_verify_keys``."""
    key_id: str
    key: str  # unpadded base64 verify key
    expired_ts: int


@dataclass(frozen=True)
class FederationConfig:
    """Federation settings. ``port`` None means federation is off."""
    port: int | None = None
    bind: str = "0.0.0.0"
    tls_certificate_path: str | None = None
    tls_private_key_path: str | None = None
    #: Accept self-signed certificates and private/loopback destinations (tests only).
    insecure: bool = False
    #: How long the keys we publish are valid for (``valid_until_ts`` = now + this).
    key_validity_ms: int = 24 * 3600 * 1000
    #: Notary servers asked for keys when a server cannot be reached directly.
    trusted_key_servers: tuple[str, ...] = ()
    old_verify_keys: tuple[OldKey, ...] = field(default=())
    #: Largest /send transaction body, in bytes.
    max_transaction_size: int = 4 << 20
    #: Events of history fetched right after a remote join (older ones are fetched when paged to).
    join_backfill_limit: int = 50

    @property
    def enabled(self) -> bool:
        return self.port is not None

    @classmethod
    def parse(cls, s: Section) -> "FederationConfig":
        port = s.int("port", None, minimum=0, maximum=65535)
        cert = s.str("tls_certificate_path", None)
        key = s.str("tls_private_key_path", None)
        if (cert is None) != (key is None):
            raise ConfigError(s.key("tls_certificate_path"),
                              "set both tls_certificate_path and tls_private_key_path, or neither")
        old = []
        old_section = s.section("old_verify_keys")
        for key_id in old_section._data:  # noqa: SLF001 - a mapping of key IDs
            entry = old_section.section(str(key_id))
            if not str(key_id).startswith("ed25519:"):
                raise ConfigError(old_section.key(str(key_id)), "key IDs look like ed25519:abc")
            old.append(OldKey(str(key_id), entry.str("key"), entry.int("expired_ts", minimum=0)))
        servers = s.list("trusted_key_servers", [])
        if not all(isinstance(x, str) and x for x in servers):
            raise ConfigError(s.key("trusted_key_servers"), "must be a list of server names")
        return cls(
            port=port,
            bind=s.str("bind", "0.0.0.0"),
            tls_certificate_path=_abs(cert),
            tls_private_key_path=_abs(key),
            insecure=s.bool("insecure", False),
            key_validity_ms=s.int("key_validity_ms", 24 * 3600 * 1000, minimum=60_000),
            trusted_key_servers=tuple(servers),
            old_verify_keys=tuple(old),
            max_transaction_size=s.size("max_transaction_size", 4 << 20),
            join_backfill_limit=s.int("join_backfill_limit", 50, minimum=0, maximum=100),
        )


def _abs(path: str | None) -> str | None:
    # Relative paths are relative to the working directory, as the rest of the config's are.
    return None if path is None else os.path.abspath(path)
