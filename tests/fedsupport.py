"""Running several federating homeservers in one test (embedding API, real TLS on loopback)."""
from __future__ import annotations

import socket
from typing import Any

from homeserver import HomeServer
from support import make_config, start_homeserver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def federation_config(tmp_path: Any, database_url: str, name: str, port: int | None = None,
                      sections: dict[str, Any] | None = None, **federation: Any) -> Any:
    """A config for server ``localhost:<port>`` with an insecure TLS federation listener.

    ``federation`` adds keys to the ``federation:`` section (e.g. ``join_backfill_limit=5``);
    ``sections`` other top-level settings (e.g. ``{"groups": {"max_members": 2000}}``).
    """
    port = port or free_port()
    return make_config(tmp_path / name, database_url, server_name=f"localhost:{port}",
                       federation={"port": port, "bind": "127.0.0.1", "insecure": True, **federation},
                       **(sections or {}))


async def start_federating(tmp_path: Any, database_url: str, name: str, port: int | None = None,
                           sections: dict[str, Any] | None = None, **federation: Any) -> HomeServer:
    return await start_homeserver(federation_config(tmp_path, database_url, name, port, sections, **federation))


async def eventually(check: Any, tries: int = 200, interval_s: float = 0.05) -> Any:
    """Await ``check()`` until it is truthy (federation is asynchronous); fail after ``tries``."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    for _ in range(tries):
        result = await check()
        if result:
            return result
        await deferLater(reactor, interval_s, lambda: None)
    raise AssertionError("condition not met")
