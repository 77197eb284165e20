"""Homeserver → application service HTTP calls (spec: application-service-api).

``PUT /_matrix/app/v1/transactions/{txnId}`` (pushing events),
``GET /_matrix/app/v1/users/{userId}`` and ``GET /_matrix/app/v1/rooms/{roomAlias}``
(queries) and ``POST /_matrix/app/v1/ping``. Every request carries the
service's ``hs_token`` in ``Authorization: Bearer`` (never in the query string).
"""
from __future__ import annotations

import json
import logging
from typing import Any, cast
from urllib.parse import quote, urlencode

from twisted.internet import defer, error as twisted_error

from homeserver.api.errors import MatrixError
from homeserver.util.clock import Clock

from appservice.registration import ApplicationService

logger = logging.getLogger(__name__)

APP_PREFIX = "/_matrix/app/v1"
#: Bytes of an error body quoted back in M_BAD_STATUS.
_MAX_ERROR_BODY = 4096


class PushError(Exception):
    """A transaction was not accepted (connection failure, timeout or non-2xx)."""


class AppserviceApi:
    """HTTP client for the application-service API, one connection pool for every service."""

    def __init__(self, reactor: Any, clock: Clock, push_timeout_s: float = 60.0,
                 query_timeout_s: float = 30.0, ping_timeout_s: float = 10.0) -> None:
        self._clock = clock
        self._reactor = reactor
        self._pool: Any = None
        self._http: Any = None
        self.push_timeout_s = push_timeout_s
        self.query_timeout_s = query_timeout_s
        self.ping_timeout_s = ping_timeout_s

    def _client(self) -> Any:
        """The treq client, made by the first request.

        treq brings Twisted's HTTP client and with it the TLS stack (pyOpenSSL,
        cryptography: about 14 MB resident), which a server without application
        services never needs (docs/performance.md, "On memory").
        """
        if self._http is None:
            import treq
            from twisted.web.client import Agent, HTTPConnectionPool
            from twisted.web.iweb import IAgent

            pool = HTTPConnectionPool(self._reactor, persistent=True)
            pool.maxPersistentPerHost = 4
            pool.retryAutomatically = False
            self._pool = pool
            self._http = treq.client.HTTPClient(cast(IAgent, Agent(self._reactor, pool=pool)))
        return self._http

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.closeCachedConnections()

    async def _request(self, service: ApplicationService, method: str, path: str, body: bytes | None,
                       timeout_s: float) -> tuple[int, bytes]:
        assert service.url is not None
        headers: dict[bytes | str, list[bytes | str]] = {
            "Authorization": [f"Bearer {service.hs_token}"], "Content-Type": ["application/json"]}
        resp = await self._client().request(method, service.url + path, data=body, headers=headers,
                                        timeout=timeout_s)
        content = await resp.content()
        return resp.code, content

    async def push(self, service: ApplicationService, txn_id: int, body: bytes) -> None:
        """PUT one transaction.

        Raises:
            PushError: when the service did not answer 2xx.
        """
        if service.url is None:
            return
        try:
            code, content = await self._request(service, "PUT", f"{APP_PREFIX}/transactions/{txn_id}", body,
                                                self.push_timeout_s)
        except defer.CancelledError:
            raise PushError("timed out") from None
        except Exception as e:  # connection refused, reset, DNS: all mean "retry later"
            raise PushError(f"{type(e).__name__}: {e}") from None
        if not 200 <= code < 300:
            raise PushError(f"status {code}: {content[:200]!r}")

    async def _query(self, service: ApplicationService, path: str) -> bool:
        if service.url is None:
            return False
        try:
            code, _ = await self._request(service, "GET", path, None, self.query_timeout_s)
        except Exception as e:
            logger.warning("query %s to %s failed: %s", path, service.id, e)
            return False
        return code == 200

    async def query_user(self, service: ApplicationService, user_id: str) -> bool:
        """GET /users/{userId}: True when the service says it created the user."""
        return await self._query(service, f"{APP_PREFIX}/users/{quote(user_id, safe='')}")

    async def query_alias(self, service: ApplicationService, alias: str) -> bool:
        """GET /rooms/{roomAlias}: True when the service says it created the room and alias."""
        return await self._query(service, f"{APP_PREFIX}/rooms/{quote(alias, safe='')}")

    async def get_json(self, service: ApplicationService, path: str, query: dict[str, str] | None = None) -> Any:
        """GET a JSON document from the service (third-party lookups); None on any failure."""
        if service.url is None:
            return None
        suffix = ("?" + urlencode(query)) if query else ""
        try:
            code, content = await self._request(service, "GET", f"{APP_PREFIX}{path}{suffix}", None,
                                                self.query_timeout_s)
            return json.loads(content) if code == 200 else None
        except Exception as e:
            logger.warning("GET %s on %s failed: %s", path, service.id, e)
            return None

    async def ping(self, service: ApplicationService, transaction_id: str | None) -> int:
        """POST /ping; returns the round trip in milliseconds.

        Raises:
            MatrixError: M_URL_NOT_SET (400), M_CONNECTION_TIMEOUT (504), M_CONNECTION_FAILED
            or M_BAD_STATUS (502), as the client-server ping endpoint answers.
        """
        if service.url is None:
            raise MatrixError(400, "M_URL_NOT_SET", "Application service URL is not set")
        body = {} if transaction_id is None else {"transaction_id": transaction_id}
        start = self._clock.time()
        try:
            code, content = await self._request(service, "POST", f"{APP_PREFIX}/ping",
                                                json.dumps(body).encode(), self.ping_timeout_s)
        except Exception as e:
            if _is_timeout(e):
                raise MatrixError(504, "M_CONNECTION_TIMEOUT", "Connection to application service timed out") \
                    from None
            raise MatrixError(502, "M_CONNECTION_FAILED", f"Connection to application service failed: {e}") \
                from None
        duration_ms = int((self._clock.time() - start) * 1000)
        if not 200 <= code < 300:
            err = MatrixError(502, "M_BAD_STATUS", f"Ping returned status {code}")
            err.extra.update(status=code, body=content[:_MAX_ERROR_BODY].decode("utf-8", "replace"))
            raise err
        return duration_ms


def _is_timeout(e: BaseException) -> bool:
    """Whether a request failed because treq's timeout cancelled it."""
    if isinstance(e, (defer.CancelledError, twisted_error.TimeoutError, twisted_error.ConnectingCancelledError)):
        return True
    from twisted.web.client import ResponseNeverReceived  # loaded already: a request failed

    if isinstance(e, ResponseNeverReceived):
        return any(r.check(defer.CancelledError) for r in e.reasons)
    return False
