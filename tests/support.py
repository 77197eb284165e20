"""Test helpers: configs, running homeservers, and a small JSON HTTP client.

Tests use the same embedding API as any application (docs/embedding.md).
"""
from __future__ import annotations

import asyncio
import json
from typing import Any, Coroutine

import treq
from twisted.internet import defer

from homeserver import Config, HomeServer

PASSWORD = "correct horse battery"


def make_config(tmp_path: Any, database_url: str, **overrides: Any) -> Config:
    """A test config: loopback on a free port, fast bcrypt, no rate limits."""
    data = {
        "server_name": "test.local",
        "data_dir": str(tmp_path / "data"),
        "database": {"url": database_url, "pool_size": 4},
        "listeners": [{"bind": "127.0.0.1", "port": 0}],
        "enable_registration": True,
        "registration_shared_secret": "test-shared-secret",
        "bcrypt_rounds": 4,
        "rate_limiting": {"enabled": False},
        "access_log": False,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return Config.from_dict(data, base_dir=str(tmp_path))


async def start_homeserver(config: Config) -> HomeServer:
    from twisted.internet import reactor  # installed by pytest-twisted, so imported late

    hs = HomeServer(config, reactor)
    await hs.start()
    return hs


def base_url(hs: HomeServer) -> str:
    return f"http://127.0.0.1:{hs.ports[0]}"


def aio(coro: Coroutine[Any, Any, Any]) -> defer.Deferred[Any]:
    """Await an asyncio coroutine (e.g. a matrix-nio call) from a Twisted test."""
    return defer.Deferred.fromFuture(asyncio.ensure_future(coro))


class Client:
    """Speaks JSON to a homeserver over real HTTP on loopback."""

    def __init__(self, hs: HomeServer | str) -> None:
        """``hs``: one of our homeservers, or the base URL of any (e.g. Synapse's client listener)."""
        self.hs = hs if not isinstance(hs, str) else None
        self.base = hs if isinstance(hs, str) else base_url(hs)
        self.token: str | None = None
        self.user_id: str | None = None
        self.device_id: str | None = None

    async def request(self, method: str, path: str, body: Any = None, token: str | None = None,
                      raw: bytes | None = None, headers: dict[str, str] | None = None,
                      params: dict[str, Any] | None = None) -> tuple[int, Any]:
        hdrs = {"Content-Type": ["application/json"]}
        tok = token if token is not None else self.token
        if tok:
            hdrs["Authorization"] = [f"Bearer {tok}"]
        for k, v in (headers or {}).items():
            hdrs[k] = [v]
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        resp = await treq.request(method, self.base + path, data=data, headers=hdrs, params=params)
        content = await resp.content()
        try:
            parsed = json.loads(content) if content else None
        except ValueError:
            parsed = content
        return resp.code, parsed

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("POST", path, body if body is not None else {}, **kw)

    async def put(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("PUT", path, body if body is not None else {}, **kw)

    async def register(self, username: str, password: str = PASSWORD) -> dict[str, Any]:
        """Register through the m.login.dummy flow and keep the access token."""
        body: dict[str, Any] = {"username": username, "password": password}
        status, first = await self.post("/_matrix/client/v3/register", body)
        assert status == 401, (status, first)
        body["auth"] = {"type": "m.login.dummy", "session": first["session"]}
        status, result = await self.post("/_matrix/client/v3/register", body)
        assert status == 200, (status, result)
        self.token, self.user_id, self.device_id = result["access_token"], result["user_id"], result["device_id"]
        return result
