"""The request machinery every endpoint shares.

A :class:`Router` maps ``(method, path)`` to an async handler. Dispatch does
not depend on Twisted's request object: :meth:`Router.dispatch` takes an
:class:`ApiRequest`, so the WebSocket channel runs client requests through
exactly the same routes, auth and errors as HTTP does. :class:`HttpSite`
adapts Twisted Web to it and adds what only HTTP has: CORS, the body size
limit, access logs and metrics.

A handler is ``async def handler(request: ApiRequest) -> Result`` where
``Result`` is a JSON-able dict (200), ``(status, dict)``, or a
:class:`Response` for non-JSON bodies and pre-encoded JSON.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Protocol, cast
from urllib.parse import unquote, unquote_to_bytes

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource

from homeserver.api.errors import MatrixError, bad_json, too_large, unrecognized
from homeserver.util import json as jsonutil

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("homeserver.access")

CLIENT_PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")


@dataclass
class Response:
    """A finished response: bytes with a content type, and extra headers."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class Requester(Protocol):
    user_id: str
    device_id: str | None


@dataclass
class ApiRequest:
    """A client request, independent of the transport that carried it."""

    method: str
    path: str
    args: dict[str, list[str]] = field(default_factory=dict)
    content: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    client_ip: str = "-"
    path_params: dict[str, str] = field(default_factory=dict)
    requester: Any = None
    #: The Twisted request, for handlers that stream (media). None over WebSocket.
    raw: Any = None
    #: Set by the transport when the body was over the size limit.
    body_too_large: bool = False
    #: ``(channel, head, start time)`` of the lean HTTP connection carrying it (api/fasthttp.py), if any:
    #: /sync may hand a long-poll to it (answering :data:`PARKED`).
    lean: Any = None
    _json: Any = None

    def json(self) -> dict[str, Any]:
        """The body as a JSON object; ``M_NOT_JSON`` / ``M_BAD_JSON`` otherwise."""
        if self._json is None:
            if self.body_too_large:
                raise too_large()
            try:
                value = jsonutil.loads(self.content or b"{}")
            except (ValueError, UnicodeDecodeError, RecursionError):
                # RecursionError: absurdly deep nesting ("[[[[..."), still just bad input
                raise MatrixError(400, "M_NOT_JSON", "Content not JSON.") from None
            if not isinstance(value, dict):
                raise bad_json("Request body must be a JSON object")
            self._json = value
        return self._json

    def query(self, name: str, default: Any = None) -> Any:
        values = self.args.get(name)
        return values[-1] if values else default

    def query_int(self, name: str, default: Any = None, minimum: int | None = None,
                  maximum: int | None = None) -> Any:
        value = self.query(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise MatrixError(400, "M_INVALID_PARAM", f"Query parameter '{name}' must be an integer") from None
        if minimum is not None and number < minimum:
            number = minimum
        if maximum is not None and number > maximum:
            number = maximum
        return number

    def query_int_strict(self, name: str, minimum: int = 0, maximum: int = 2**53 - 1) -> int | None:
        """An integer query parameter that must lie in range (``M_INVALID_PARAM`` otherwise); None if absent."""
        value = self.query(name)
        if value is None:
            return None
        if not value.lstrip("-").isdigit() or len(value) > 20 or not minimum <= int(value) <= maximum:
            raise MatrixError(400, "M_INVALID_PARAM",
                              f"Query parameter '{name}' must be an integer from {minimum} to {maximum}")
        return int(value)

    def query_bool(self, name: str, default: bool = False) -> bool:
        value = self.query(name)
        if value is None:
            return default
        if value in ("true", "1"):
            return True
        if value in ("false", "0"):
            return False
        raise MatrixError(400, "M_INVALID_PARAM", f"Query parameter '{name}' must be true or false")

    def access_token(self) -> str | None:
        return access_token(self.headers, self.args)


def access_token(headers: dict[str, str], args: dict[str, list[str]]) -> str | None:
    """The request's access token: ``Authorization: Bearer``, else the ``access_token`` query parameter."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    values = args.get("access_token")
    return values[-1] if values else None


Handler = Callable[[ApiRequest], Awaitable[Any]]


class Authenticator(Protocol):
    async def authenticate(self, request: ApiRequest, allow_guest: bool = False) -> Any: ...


@dataclass
class Route:
    method: str
    regex: re.Pattern[str]
    handler: Handler
    name: str
    auth: str  # "required", "optional" or "none"
    allow_guest: bool


_PARAM = re.compile(r"\{(\w+)\}")


def compile_path(template: str) -> re.Pattern[str]:
    """``/rooms/{room_id}/send`` → a regex with one named group per parameter."""
    pos = 0
    out = []
    for m in _PARAM.finditer(template):
        out.append(re.escape(template[pos:m.start()]))
        out.append(f"(?P<{m.group(1)}>[^/]+)")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("^" + "".join(out) + "$")


class Router:
    """Routes by exact method and path template. Used for HTTP and WebSocket alike."""

    def __init__(self, authenticator: Authenticator | None = None) -> None:
        self._routes: list[Route] = []
        # Literal paths (no parameters) are a dict lookup; the rest are scanned.
        self._literal: dict[str, list[Route]] = {}
        self.authenticator = authenticator

    def add(self, method: str, path: str, handler: Handler, *, auth: str = "required",
            name: str | None = None, allow_guest: bool = False) -> None:
        if auth not in ("required", "optional", "none"):
            raise ValueError(auth)
        route = Route(method.upper(), compile_path(path), handler, name or path, auth, allow_guest)
        if "{" in path:
            self._routes.append(route)
        else:
            self._literal.setdefault(path, []).append(route)

    def add_client(self, method: str, path: str, handler: Handler, **kwargs: Any) -> None:
        """Register ``path`` under every client-server prefix (``/v3`` and legacy ``/r0``)."""
        kwargs.setdefault("name", "/_matrix/client/v3" + path)
        for prefix in CLIENT_PREFIXES:
            self.add(method, prefix + path, handler, **kwargs)

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route for a request, or a 404 / 405 ``M_UNRECOGNIZED``."""
        candidates = self._literal.get(path)
        path_matched = bool(candidates)
        if candidates:
            for route in candidates:
                if route.method == method:
                    return route, {}
        for route in self._routes:
            m = route.regex.match(path)
            if m is None:
                continue
            path_matched = True
            if route.method == method:
                return route, {k: unquote(v) for k, v in m.groupdict().items()}
        if path_matched:
            raise unrecognized(405, "Unrecognized request: method not allowed")
        raise unrecognized(404, "Unrecognized request")

    def routes(self) -> Iterable[Route]:
        for routes in self._literal.values():
            yield from routes
        yield from self._routes

    async def dispatch(self, request: ApiRequest) -> tuple[Route | None, Response]:
        """Authenticate, run the handler, and turn every outcome into a Response."""
        route: Route | None = None
        try:
            route, request.path_params = self.match(request.method, request.path)
            if route.auth != "none" and self.authenticator is not None:
                if route.auth == "required" or request.access_token() is not None:
                    request.requester = await self.authenticator.authenticate(
                        request, allow_guest=route.allow_guest)
            result = await route.handler(request)
            return route, to_response(result)
        except MatrixError as e:
            return route, error_response(e)
        except defer.CancelledError:
            raise
        except Exception:
            logger.exception("%s %s failed", request.method, request.path)
            return route, error_response(MatrixError(500, "M_UNKNOWN", "Internal server error"))


#: A handler's answer when the request was handed to something that answers it later (a parked /sync).
PARKED = Response(0, b"")


def to_response(result: Any) -> Response:
    if isinstance(result, Response):
        return result
    if isinstance(result, tuple):
        status, body = result
        return Response(status, jsonutil.dumps_bytes(body))
    return Response(200, jsonutil.dumps_bytes(result if result is not None else {}))


def error_response(e: MatrixError) -> Response:
    return Response(e.status, jsonutil.dumps_bytes(e.to_json()), headers=dict(e.headers))


CORS_HEADERS = {
    b"Access-Control-Allow-Origin": b"*",
    b"Access-Control-Allow-Methods": b"GET, HEAD, POST, PUT, DELETE, OPTIONS",
    b"Access-Control-Allow-Headers": b"X-Requested-With, Content-Type, Authorization",
}


class BoundedRequest(server.Request):
    """A Twisted request that stops buffering a body past the site's size limit."""

    _too_large = False
    _received = 0
    #: The Deferred handling this request (HttpSite.handle), cancelled if the client goes away
    #: first; cheaper per held long-poll than a notifyFinish() Deferred with an errback.
    handling: defer.Deferred[None] | None = None

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        d, self.handling = self.handling, None
        if d is not None:
            d.cancel()

    def gotLength(self, length: int | None) -> None:
        self._limit = self.channel.site.body_limit_for(self)  # type: ignore[attr-defined]
        if length is not None and length > self._limit:
            self._too_large = True
        super().gotLength(length if not self._too_large else 0)

    def handleContentChunk(self, data: bytes) -> None:
        if self._too_large:
            return
        self._received += len(data)
        if self._received > self._limit:
            self._too_large = True
            self.content.seek(0)
            self.content.truncate()
            return
        super().handleContentChunk(data)


class MetricsSink(Protocol):
    def observe(self, method: str, route: str, status: int, seconds: float) -> None: ...


class _RootResource(Resource):
    isLeaf = True

    def __init__(self, site: "HttpSite") -> None:
        super().__init__()
        self._site = site

    def render(self, request: server.Request) -> Any:
        self._site.handle(cast(BoundedRequest, request))  # the site's requestFactory
        return server.NOT_DONE_YET


class HttpSite(server.Site):
    """Twisted site serving a :class:`Router`, with CORS, limits, logs and metrics."""

    requestFactory = BoundedRequest

    def __init__(self, router: Router, max_body_size: int, metrics: MetricsSink | None = None,
                 access_log: bool = True) -> None:
        super().__init__(_RootResource(self))
        self.router = router
        self.max_body_size = max_body_size
        #: (path prefix, limit) pairs for routes that take larger bodies, e.g. media uploads.
        self.body_limits: list[tuple[str, int]] = []
        self.metrics = metrics
        self.access_log = access_log
        self.displayTracebacks = False
        self.noisy = False
        self._in_flight: set[object] = set()
        self._idle_waiters: list[defer.Deferred[None]] = []
        #: path -> handler(twisted request) for requests that upgrade the connection
        #: (the WebSocket channel); such requests bypass the router.
        self.upgrade_handlers: dict[str, Callable[[server.Request], None]] = {}

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        # Twisted asks every request for the connection's local address, a
        # getsockname() call and a new address object each time; it never changes.
        channel = getattr(protocol, "_channel", protocol)
        channel.getHost = _LocalAddress(channel).get
        return protocol

    def log(self, request: server.Request) -> None:
        """Twisted's combined log is replaced by our own access log."""

    def body_limit_for(self, request: server.Request) -> int:
        # gotLength runs before requestReceived sets request.uri: read the path the
        # channel parsed from the request line.
        uri = getattr(request.channel, "_path", None) or request.uri
        path = uri.split(b"?", 1)[0].decode("utf-8", "replace")
        for prefix, limit in self.body_limits:
            if path.startswith(prefix):
                return limit
        return self.max_body_size

    def handle(self, twreq: BoundedRequest) -> None:
        if self.upgrade_handlers and twreq.method == b"GET":
            upgrade = self.upgrade_handlers.get(twreq.path.decode("utf-8", "replace"))
            if upgrade is not None:
                upgrade(twreq)
                return
        # Counted before the handler starts: it may run synchronously up to a
        # point where a shutdown begins, and that shutdown must still wait for it.
        token = object()
        self._in_flight.add(token)
        d = defer.Deferred.fromCoroutine(self._handle(twreq))
        d.addBoth(self._done, token, twreq)
        if not d.called:
            twreq.handling = d

    def _done(self, result: Any, token: object, twreq: BoundedRequest | None = None) -> None:
        if twreq is not None:
            twreq.handling = None
        self._in_flight.discard(token)
        if not self._in_flight:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                if not waiter.called:  # a drain that timed out was cancelled already
                    waiter.callback(None)
        if isinstance(result, Failure) and not result.check(defer.CancelledError):
            logger.error("request handling failed", exc_info=result.value)

    @property
    def in_flight(self) -> int:
        """How many requests are being handled right now."""
        return len(self._in_flight)

    async def drain(self) -> None:
        """Wait until no request is being handled (used on shutdown).

        Cancelling the wait (a shutdown timeout) leaves the requests alone.
        """
        if self._in_flight:
            waiter: defer.Deferred[None] = defer.Deferred()
            self._idle_waiters.append(waiter)
            await waiter

    async def answer(self, method: str, build: Callable[[], ApiRequest]) -> tuple[Route | None, Response, Any]:
        """Answer ``OPTIONS`` directly, or run ``build()``'s request through the router.

        Returns the route (None if unmatched), the response and the requester;
        a MatrixError from ``build`` (bad query, body too large) is the response.
        """
        if method == "OPTIONS":
            return None, Response(200, b"{}"), None
        try:
            request = build()
        except MatrixError as e:
            return None, error_response(e), None
        route, response = await self.router.dispatch(request)
        return route, response, request.requester

    async def _handle(self, twreq: server.Request) -> None:
        start = time.perf_counter()
        method = twreq.method.decode("ascii", "replace")
        for name, value in CORS_HEADERS.items():
            twreq.setHeader(name, value)

        def build() -> ApiRequest:
            request = ApiRequest(
                method="GET" if method == "HEAD" else method,
                path=twreq.path.decode("utf-8", "replace"),
                args=decode_args(twreq.args),
                headers={k.decode("latin-1").lower(): v[-1].decode("latin-1")
                         for k, v in twreq.requestHeaders.getAllRawHeaders()},
                client_ip=_client_ip(twreq),
                raw=twreq,
                body_too_large=getattr(twreq, "_too_large", False),
            )
            if request.body_too_large:
                raise too_large()
            # Bodies over the JSON limit (allowed only under body_limits prefixes,
            # i.e. media uploads) stay in Twisted's temp file for the handler to stream.
            size = twreq.content.seek(0, 2)
            twreq.content.seek(0)
            if size <= self.max_body_size:
                request.content = twreq.content.read()
            return request

        route, response, requester = await self.answer(method, build)
        if twreq.finished or twreq._disconnected:  # a streaming handler answered itself
            status = twreq.code
        else:
            status = response.status
            twreq.setResponseCode(status)
            for name, value in response_headers(response):
                twreq.setHeader(name, value)
            if method != "HEAD":
                twreq.write(response.body)
            twreq.finish()
        self.observe(method, route, status, time.perf_counter() - start, _client_ip(twreq), twreq.uri, requester)

    def observe(self, method: str, route: Route | None, status: int, elapsed: float, client_ip: str,
                uri: bytes, requester: Any) -> None:
        """Metrics and the access log for one answered request."""
        route_name = route.name if route else "<unmatched>"
        if self.metrics is not None:
            self.metrics.observe(method, route_name, status, elapsed)
        if self.access_log:
            access_logger.info(
                "%s %s %s %s %d %.1fms user=%s", client_ip, method, _safe_uri(uri),
                route_name, status, elapsed * 1000, getattr(requester, "user_id", "-"))


class _LocalAddress:
    """A connection's local address, asked of the transport once (a slotted object and a
    bound method: a closure over a list cost four times the memory per connection)."""

    __slots__ = ("_channel", "_address")

    def __init__(self, channel: Any) -> None:
        self._channel = channel
        self._address: Any = None

    def get(self) -> Any:
        if self._address is None:
            self._address = self._channel.transport.getHost()
        return self._address


def response_headers(response: Response) -> list[tuple[bytes, bytes]]:
    """The headers a Response is sent with (CORS apart), with line breaks in values made spaces."""
    out = [(b"Content-Type", response.content_type.encode("ascii"))]
    for name, value in response.headers.items():
        if "\r" in value or "\n" in value:
            value = value.replace("\r", " ").replace("\n", " ")
        out.append((name.encode("ascii"), value.encode("latin-1")))
    if response.content_type == "application/json":
        out.append((b"Cache-Control", b"no-cache, no-store, must-revalidate"))
    out.append((b"Content-Length", b"%d" % len(response.body)))
    return out


def write_now(transport: Any, data: bytes) -> None:
    """Write ``data``, straight to the socket when Twisted has nothing queued for it.

    That saves arming the reactor for writing and a second pass through it;
    whatever the socket does not take is queued the ordinary way, and so is
    everything after a socket error (Twisted then finds the connection lost).
    A WebSocket fan-out calls this 500 times per message, hence ``send``
    itself rather than ``writeSomeData`` (Python retries EINTR, PEP 475).
    """
    if (not getattr(transport, "TLS", True) and transport.connected and not transport.disconnecting
            and not transport.dataBuffer and not transport._tempDataBuffer):
        try:
            sent = transport.socket.send(data)
        except OSError:  # EAGAIN included: Twisted's buffer takes it all
            sent = 0
        if sent == len(data):
            return
        if sent:
            data = data[sent:]
    transport.write(data)


_PAIRS: dict[bytes, tuple[str, str]] = {}
#: Plain pairs (``since=s12_3_0``) apart: there are many, and they must not flush the encoded ones.
_PLAIN: dict[bytes, tuple[str, str]] = {}
_PAIRS_MAX = 4096


def parse_query(query: bytes) -> dict[str, list[str]]:
    """A query string's parameters, as Twisted Web parses them (``&`` or ``;``, ``+`` is a space).

    Each ``name=value`` pair is decoded once and remembered: a long-poll's
    every request repeats its URL-encoded filter and its timeout, and the
    members of a group woken together come back with the same ``since``.
    """
    args: dict[str, list[str]] = {}
    for pair in query.replace(b";", b"&").split(b"&"):
        decoded = _PAIRS.get(pair) or _PLAIN.get(pair) or _decode_pair(pair)
        if decoded is None:
            continue
        values = args.get(decoded[0])
        if values is None:
            args[decoded[0]] = [decoded[1]]
        else:
            values.append(decoded[1])
    return args


def _decode_pair(pair: bytes) -> tuple[str, str] | None:
    if b"=" not in pair:
        return None
    name, value = pair.split(b"=", 1)
    plain = b"%" not in pair and b"+" not in pair
    try:
        if plain:
            decoded = name.decode("utf-8"), value.decode("utf-8")
        else:
            decoded = (unquote_to_bytes(name.replace(b"+", b" ")).decode("utf-8"),
                       unquote_to_bytes(value.replace(b"+", b" ")).decode("utf-8"))
    except UnicodeDecodeError:
        raise MatrixError(400, "M_INVALID_PARAM", "Query parameters must be UTF-8") from None
    cache = _PLAIN if plain else _PAIRS
    if len(cache) >= _PAIRS_MAX:
        cache.clear()
    cache[pair] = decoded
    return decoded


def decode_args(args: dict[bytes, list[bytes]]) -> dict[str, list[str]]:
    try:
        return {k.decode("utf-8"): [v.decode("utf-8") for v in vs] for k, vs in args.items()}
    except UnicodeDecodeError:
        raise MatrixError(400, "M_INVALID_PARAM", "Query parameters must be UTF-8") from None


def _client_ip(twreq: server.Request) -> str:
    peer = twreq.getClientAddress()
    return getattr(peer, "host", "-")


_TOKEN_IN_URI = re.compile(r"(access_token=)[^&]*")


def _safe_uri(uri: bytes) -> str:
    return _TOKEN_IN_URI.sub(r"\1<redacted>", uri.decode("utf-8", "replace"))
