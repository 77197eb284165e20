"""The federation listener's endpoints and the X-Matrix check in front of them.

:class:`FederationRoutes` registers handlers ``async def h(request, origin)``
behind request authentication: every request must carry a valid X-Matrix
signature by ``origin`` for this destination, or gets 401
``M_UNAUTHORIZED``. Each authenticated request also tells ``on_origin``
(the sender wakes that destination's queue).
"""
from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

from federation.inbound import MAX_EDUS_PER_TXN, MAX_PDUS_PER_TXN, TransactionHandler
from federation.transport.auth import RequestVerifier
from homeserver.api.errors import MatrixError, bad_json, too_large
from homeserver.api.http import ApiRequest, HttpSite, Router
from homeserver.util import json as jsonutil

logger = logging.getLogger(__name__)

FederationHandler = Callable[[ApiRequest, str], Awaitable[Any]]
MAX_TXN_ID_LENGTH = 255


class FederationRoutes:
    """Registers federation endpoints on a router, each behind X-Matrix authentication."""

    def __init__(self, router: Router, verifier: RequestVerifier, on_origin: Callable[[str], None]) -> None:
        self._router = router
        self._verifier = verifier
        self._on_origin = on_origin

    def add(self, method: str, path: str, handler: FederationHandler) -> None:
        async def authenticated(request: ApiRequest) -> Any:
            content = _body(request)
            uri = request.raw.uri.decode("ascii", "replace") if request.raw is not None else request.path
            origin = await self._verifier.verify(request.method, uri, request.headers, content)
            request.requester = origin
            self._on_origin(origin)
            return await handler(request, origin)

        self._router.add(method, path, authenticated, auth="none", name=path)


def _body(request: ApiRequest) -> Any:
    """The JSON body (None when empty); read from the spool when over the in-memory limit."""
    if request.body_too_large:
        raise too_large()
    raw = request.content
    if not raw and request.raw is not None and request.method in ("PUT", "POST"):
        request.raw.content.seek(0)
        raw = request.raw.content.read()
    if not raw:
        return None
    try:
        value = jsonutil.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise MatrixError(400, "M_NOT_JSON", "Content not JSON.") from None
    request.content = raw
    request._json = value if isinstance(value, dict) else None
    return value


class TransactionServlets:
    """``/send`` and ``/version``."""

    def __init__(self, transactions: TransactionHandler, version: str) -> None:
        self._transactions = transactions
        self._version = version

    def register(self, routes: FederationRoutes, router: Router) -> None:
        routes.add("PUT", "/_matrix/federation/v1/send/{txn_id}", self.send)
        router.add("GET", "/_matrix/federation/v1/version", self.version, auth="none")

    async def send(self, request: ApiRequest, origin: str) -> dict[str, Any]:
        """PUT /_matrix/federation/v1/send/{txnId}: receive PDUs and EDUs ("Transactions")."""
        txn_id = request.path_params["txn_id"]
        if len(txn_id) > MAX_TXN_ID_LENGTH:
            raise MatrixError(400, "M_INVALID_PARAM", "Transaction ID is too long")
        body = request.json()
        pdus, edus = body.get("pdus", []), body.get("edus", [])
        if not isinstance(pdus, list) or not isinstance(edus, list):
            raise bad_json("pdus and edus must be lists")
        if len(pdus) > MAX_PDUS_PER_TXN or len(edus) > MAX_EDUS_PER_TXN:
            raise bad_json(f"At most {MAX_PDUS_PER_TXN} PDUs and {MAX_EDUS_PER_TXN} EDUs per transaction")
        if body.get("origin", origin) != origin:
            raise MatrixError(403, "M_FORBIDDEN", "Transaction origin does not match the signed origin")
        return await self._transactions.on_transaction(origin, txn_id, body)

    async def version(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/federation/v1/version: this server's implementation name and version."""
        return {"server": {"name": "qun-homeserver", "version": self._version}}


class FederationSite(HttpSite):
    """The federation listener's site; it can close its keep-alive connections on shutdown."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._channels: set[Any] = set()

    def buildProtocol(self, addr: Any) -> Any:  # noqa: N802 - Twisted's name
        channel = super().buildProtocol(addr)
        if channel is not None:
            self._channels.add(channel)
            lost = channel.connectionLost

            def connection_lost(reason: Any) -> None:
                self._channels.discard(channel)
                lost(reason)

            channel.connectionLost = connection_lost
        return channel

    def close_connections(self) -> None:
        for channel in list(self._channels):
            transport = getattr(channel, "transport", None) or getattr(
                getattr(channel, "_channel", None), "transport", None)
            if transport is not None:
                transport.abortConnection()
        self._channels.clear()
