"""A Matrix homeserver library for WeChat-style group chat, built on Twisted.

Embed it with :class:`HomeServer` and a :class:`Config` (see docs/embedding.md),
or run the daemon with ``python -m homeserver``.

The names below are loaded lazily, so that importing the pure
``homeserver.core`` does not pull in Twisted.
"""
from typing import Any

__all__ = ["Config", "ConfigError", "HomeServer", "load_config"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("Config", "ConfigError", "load_config"):
        from homeserver import config
        return getattr(config, name)
    if name == "HomeServer":
        from homeserver.server import HomeServer
        return HomeServer
    raise AttributeError(name)
