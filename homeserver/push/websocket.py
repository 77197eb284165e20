"""The WebSocket channel: pushed /sync frames and client requests over one socket.

``GET /_matrix/client/unstable/im.qun/ws`` on the client listener upgrades to
a WebSocket (autobahn on Twisted) after the access token (``Authorization:
Bearer`` or ``access_token``) checks out; otherwise the answer is a plain
HTTP 401 Matrix error. The protocol is specified in docs/websocket.md:

- server → client ``{"type": "sync", "body": <a /sync body>}`` whenever the
  user has something new (built by the same :class:`SyncBuilder` as /sync);
- client → server ``{"type": "request", "id", "method", "path", "body"}``,
  run through the same :class:`Router` as HTTP, answered with
  ``{"type": "response", "id", "status", "body"}``;
- bad frames get ``{"type": "error", "body": {"errcode", "error"}}``;
- a reader too slow to take its updates is closed with code 4008.

Sync frames are never queued: a connection remembers the token of the last
frame it sent, and when woken builds one frame covering everything since.
While the transport is paused (the peer is not reading), wake-ups only mark
the connection dirty, so a slow reader costs no memory beyond its socket
buffer; it is closed once it stays behind for ``slow_reader_timeout`` or
its answers to requests pile past ``max_buffer_size``.

Fan-out cost (see docs/performance.md, "Realtime"): a message to a
500-member group wakes 500 sockets in one reactor turn. Nearly every member
takes the body the first one built (sync/shared.py), so each frame is
written as soon as it exists, header and all (server frames are unmasked and
uncompressed), straight to the socket when Twisted holds nothing buffered
for it: the first member reads the message while the others are still
being woken. The access token is not re-checked per frame: deleting a
token closes its sockets (:meth:`Authenticator.invalidate` tells the
channel) and an expiring token is checked against its expiry time.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.web import server

from homeserver.api.errors import MatrixError
from homeserver.api.http import ApiRequest, Router, error_response
from homeserver.storage.users import hash_token
from homeserver.sync.builder import SyncBuilder, SyncRequest
from homeserver.sync.config import SyncConfig
from homeserver.sync.notifier import Notifier
from homeserver.sync.presence import PresenceService
from homeserver.util.clock import Clock

if TYPE_CHECKING:
    from homeserver.push.ws_protocol import SyncSocket

logger = logging.getLogger(__name__)

WS_PATH = "/_matrix/client/unstable/im.qun/ws"
#: Close codes (documented in docs/websocket.md).
CLOSE_SLOW_READER = 4008
CLOSE_TOKEN_INVALID = 4001
CLOSE_SHUTDOWN = 1001
METHODS = ("GET", "PUT", "POST", "DELETE")


class _Session:
    """What the HTTP upgrade established: who, and the /sync parameters."""

    def __init__(self, request: ApiRequest, sync_request: SyncRequest, token_hash: str,
                 expires_ms: int | None) -> None:
        self.request = request
        self.sync_request = sync_request
        self.token_hash = token_hash
        #: When the access token expires (refresh tokens), or None.
        self.expires_ms = expires_ms


class WebSocketChannel:
    """Builds the autobahn factory and answers upgrade requests on the client listener."""

    def __init__(self, router: Router, authenticator: Any, sync_servlets: Any, builder: SyncBuilder,
                 notifier: Notifier, presence: PresenceService, clock: Clock, config: SyncConfig,
                 max_body_size: int = 1 << 20) -> None:
        self.router = router
        self.authenticator = authenticator
        self.sync_servlets = sync_servlets
        self.builder = builder
        self.notifier = notifier
        self.presence = presence
        self.clock = clock
        self.config = config
        self.max_body_size = max_body_size
        self.connections: set[SyncSocket] = set()
        self._by_token: dict[str, set[SyncSocket]] = {}
        authenticator.on_invalidate.append(self._tokens_invalidated)
        # autobahn is loaded by the first upgrade request (_protocol_resource), not before.
        self._factory: Any = None
        self._resource: Any = None
        self._pending: set[defer.Deferred[Any]] = set()

    def _protocol_resource(self) -> Any:
        """autobahn's resource over our factory, built (and autobahn imported) on first use."""
        if self._resource is None:
            from homeserver.push import ws_protocol  # about 6 MB resident: only once a client upgrades

            factory = ws_protocol.make_factory(self)
            factory.setProtocolOptions(
                autoPingInterval=self.config.ping_interval_s or 0,
                autoPingTimeout=self.config.ping_timeout_s or 0,
                maxMessagePayloadSize=self.max_body_size,
                maxFramePayloadSize=self.max_body_size,
                openHandshakeTimeout=10,
                closeHandshakeTimeout=5,
            )
            self._factory = factory
            self._resource = ws_protocol.WebSocketResource(factory)
        return self._resource

    def install(self, site: Any) -> None:
        if self.config.websocket_enabled:
            site.upgrade_handlers[WS_PATH] = self.upgrade
            self.max_body_size = site.max_body_size

    def upgrade(self, twreq: server.Request) -> None:
        """Authenticate the upgrade request, then hand the connection to autobahn."""
        d = defer.ensureDeferred(self._upgrade(twreq))
        self._pending.add(d)
        d.addBoth(lambda r: (self._pending.discard(d), None)[1])

    async def _upgrade(self, twreq: server.Request) -> None:
        request = ApiRequest(
            method="GET",
            path=WS_PATH,
            args={k.decode("utf-8", "replace"): [v.decode("utf-8", "replace") for v in vs]
                  for k, vs in twreq.args.items()},
            headers={k.decode("latin-1").lower(): v[-1].decode("latin-1")
                     for k, v in twreq.requestHeaders.getAllRawHeaders()},
            client_ip=getattr(twreq.getClientAddress(), "host", "-"),
        )
        try:
            request.requester = await self.authenticator.authenticate(request)
            sync_request = await self.sync_servlets.parse(request)
            if (request.headers.get("upgrade") or "").lower() != "websocket":
                raise MatrixError(400, "M_UNRECOGNIZED", "This endpoint needs a WebSocket upgrade")
        except MatrixError as e:
            if not twreq.finished and not twreq._disconnected:
                response = error_response(e)
                twreq.setResponseCode(response.status)
                twreq.setHeader(b"Content-Type", b"application/json")
                for name, value in response.headers.items():
                    twreq.setHeader(name.encode("ascii"), value.encode("latin-1"))
                twreq.write(response.body)
                twreq.finish()
            return
        if twreq._disconnected:
            return
        token = request.access_token() or ""
        info = None if request.requester.appservice is not None else await self.authenticator.lookup(token)
        if twreq._disconnected:
            return
        resource = self._protocol_resource()
        self._factory.next_session = _Session(request, sync_request, hash_token(token),
                                              info.valid_until_ms if info is not None else None)
        try:
            resource.render(twreq)
        finally:
            self._factory.next_session = None

    def _tokens_invalidated(self, token_hashes: list[str]) -> None:
        for h in token_hashes:
            for socket in list(self._by_token.get(h, ())):
                socket._close(CLOSE_TOKEN_INVALID, "access token is no longer valid")

    def _opened(self, socket: SyncSocket) -> None:
        self.connections.add(socket)
        self._by_token.setdefault(socket.session.token_hash, set()).add(socket)

    def _closed(self, socket: SyncSocket) -> None:
        self.connections.discard(socket)
        group = self._by_token.get(socket.session.token_hash)
        if group is not None:
            group.discard(socket)
            if not group:
                del self._by_token[socket.session.token_hash]

    def close_all(self) -> None:
        for socket in list(self.connections):
            socket._close(CLOSE_SHUTDOWN, "server shutting down")
