"""A real application service for tests: a small Twisted web app on a loopback port."""
from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

from twisted.internet import defer
from twisted.web import resource, server

AS_TOKEN = "as-token-wechat"
HS_TOKEN = "hs-token-wechat"


class FakeAppservice(resource.Resource):
    """Records what the homeserver pushes; answers queries with the handlers tests set."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.transactions: list[tuple[str, dict[str, Any]]] = []
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, authorization)
        self.down = False
        self.status = 200
        self.user_query: Callable[[str], Awaitable[bool]] | None = None
        self.alias_query: Callable[[str], Awaitable[bool]] | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay: defer.Deferred[None] | None = None
        self._waiters: list[tuple[Callable[[], bool], defer.Deferred[None]]] = []
        self.port: Any = None
        #: Third-party answers by path after /thirdparty/ (e.g. "protocol/wechat"), and the queries seen.
        self.thirdparty: dict[str, Any] = {}
        self.thirdparty_queries: list[tuple[str, dict[str, str]]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port.getHost().port}"

    def render(self, request: server.Request) -> Any:
        defer.ensureDeferred(self._handle(request))
        return server.NOT_DONE_YET

    async def _handle(self, request: server.Request) -> None:
        path = request.path.decode()
        auth = request.getHeader("authorization")
        self.requests.append((request.method.decode(), path, auth))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            status, body = await self._answer(request, path, auth)
        finally:
            self.in_flight -= 1
        if status is None:
            request.transport.abortConnection()
            self._check_waiters()
            return
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"application/json")
        request.write(json.dumps(body).encode())
        request.finish()
        self._check_waiters()

    async def _answer(self, request: server.Request, path: str, auth: str | None) -> tuple[int | None, Any]:
        if auth != f"Bearer {HS_TOKEN}":
            return 403, {"errcode": "M_FORBIDDEN"}
        if self.delay is not None:
            await self.delay
        if self.down:
            return None, None
        if path.startswith("/_matrix/app/v1/transactions/"):
            if self.status != 200:
                return self.status, {"errcode": "M_UNKNOWN"}
            txn_id = path.rsplit("/", 1)[1]
            if all(t != txn_id for t, _ in self.transactions):
                self.transactions.append((txn_id, json.loads(request.content.read())))
            return 200, {}
        if path.startswith("/_matrix/app/v1/users/"):
            from urllib.parse import unquote
            ok = self.user_query is not None and await self.user_query(unquote(path.rsplit("/", 1)[1]))
            return (200, {}) if ok else (404, {"errcode": "M_NOT_FOUND"})
        if path.startswith("/_matrix/app/v1/rooms/"):
            from urllib.parse import unquote
            ok = self.alias_query is not None and await self.alias_query(unquote(path.rsplit("/", 1)[1]))
            return (200, {}) if ok else (404, {"errcode": "M_NOT_FOUND"})
        if path.startswith("/_matrix/app/v1/thirdparty/"):
            key = path[len("/_matrix/app/v1/thirdparty/"):]
            args = {k.decode(): v[-1].decode() for k, v in request.args.items()}
            self.thirdparty_queries.append((key, args))
            return (200, self.thirdparty[key]) if key in self.thirdparty else (404, {"errcode": "M_NOT_FOUND"})
        if path == "/_matrix/app/v1/ping":
            return (self.status, {} if self.status == 200 else {"errcode": "M_UNKNOWN_TOKEN"})
        return 404, {"errcode": "M_UNRECOGNIZED"}

    def events(self) -> list[dict[str, Any]]:
        return [e for _, body in self.transactions for e in body.get("events", [])]

    def wait_for(self, predicate: Callable[[], bool]) -> defer.Deferred[None]:
        """Fires once ``predicate()`` holds after a request (no timed sleeps)."""
        from twisted.internet import reactor
        d: defer.Deferred[None] = defer.Deferred()
        if predicate():
            d.callback(None)
        else:
            self._waiters.append((predicate, d))
            d.addTimeout(30, reactor)  # a safety net against a hung test, not a timing assertion
        return d

    def _check_waiters(self) -> None:
        for item in list(self._waiters):
            if item[0]():
                self._waiters.remove(item)
                item[1].callback(None)


def registration(url: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "wechat", "url": url, "as_token": AS_TOKEN, "hs_token": HS_TOKEN,
        "sender_localpart": "wechatbot",
        "namespaces": {"users": [{"exclusive": True, "regex": "@wechat_.*:test.local"}],
                       "aliases": [{"exclusive": True, "regex": "#wechat_.*:test.local"}],
                       "rooms": []},
        "rate_limited": False, "receive_ephemeral": True, **extra,
    }


