"""A lean HTTP/1.1 path for the client listener's common requests.

A /sync long-poll is one request and one response per delivery, so with
500 members and 20 messages a second the server answers 10,000 requests a
second, and Twisted Web's machinery (a ``Request`` object, its header
containers and their sanitising, a temporary content file, a resource tree,
arming the reactor to write) was about half of each cycle's cost.

:class:`ClientSite` serves each connection with a :class:`FastChannel`. It
takes the request shape every client-server call has: an HTTP/1.1 request
line, well-formed headers, a body of known length within the JSON limit. It
parses the head itself, runs the request through the same :class:`Router`,
auth, errors, metrics and access log as :class:`HttpSite`, and writes the
response in one piece, straight to the socket when nothing is queued.

Anything else is handed to Twisted Web, for the rest of the connection,
before a byte of that request has been consumed: chunked or oversized
bodies, ``Expect``, ``Upgrade`` (the WebSocket), HTTP/1.0, odd request
targets, malformed or oversized heads, duplicate framing headers, and paths
that need the Twisted request itself (media streams, under
``twisted_prefixes``). So every unusual case keeps Twisted's tested
behaviour, and the lean parser only ever sees the shape it checks for.
"""
from __future__ import annotations

import logging
import re
import time
from typing import Any, Callable, Iterable

from twisted.internet import defer, protocol
from twisted.internet.interfaces import ITCPTransport
from twisted.web import http

from homeserver.api.http import (CORS_HEADERS, PARKED, ApiRequest, HttpSite, Response, parse_query, response_headers,
                                 write_now)

logger = logging.getLogger(__name__)

#: A request head (request line and headers) longer than this goes to Twisted, which refuses it.
MAX_HEAD = 16 * 1024
#: Bytes of pipelined requests buffered while one is handled, before reading pauses.
MAX_PENDING = 1024 * 1024
#: A connection with no request in progress is closed after this many seconds.
IDLE_TIMEOUT = 600.0

_METHODS = frozenset((b"GET", b"PUT", b"POST", b"DELETE", b"OPTIONS", b"HEAD"))
# RFC 9110 field-name (a token), a colon, optional whitespace, a value without control characters
# other than tab; trailing whitespace is not part of the value.
_HEADER = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*")
# Framing headers that must appear at most once; a repeat is a smuggling attempt or a broken client.
_SINGLE = frozenset(("content-length", "transfer-encoding", "host"))
# Any of these means a request shape the lean path does not take.
_TWISTED_HEADERS = frozenset(("transfer-encoding", "expect", "upgrade"))

_CORS = b"".join(b"%s: %s\r\n" % item for item in CORS_HEADERS.items())
_STATUS = {code: b"HTTP/1.1 %d %s\r\n" % (code, reason) for code, reason in http.RESPONSES.items()}
_OK = _STATUS[200]
#: A JSON response's headers before its Content-Length, as :func:`response_headers` gives them.
_JSON_HEADERS = b"".join(b"%s: %s\r\n" % item for item in response_headers(Response(200, b""))[:-1])


#: Header names and values seen, decoded once and shared by every connection that sends them
#: (every client repeats its Host, User-Agent, Accept...); credentials are never kept here.
_NAMES: dict[bytes, str] = {}
_VALUES: dict[bytes, str] = {}
#: The same for request paths (``/_matrix/client/v3/sync`` on every long-poll).
_PATHS: dict[bytes, bytes] = {}
_SHARED_MAX = 1024
#: Longer names, values and paths are not kept: the tables stay within about 2 x 1024 x 256 bytes each.
_SHARED_LONGEST = 256
_PRIVATE = frozenset(("authorization", "cookie", "proxy-authorization"))


def _remember(cache: dict[bytes, Any], raw: bytes, decoded: Any) -> Any:
    if len(raw) <= _SHARED_LONGEST:
        if len(cache) >= _SHARED_MAX:
            cache.clear()
        cache[raw] = decoded
    return decoded


#: What a header block says: (headers, Content-Length, Connection: close).
_Fields = tuple[dict[str, str], int, bool]


class _Head:
    __slots__ = ("method", "target", "path", "headers", "length", "close", "block", "fields")

    def __init__(self, method: bytes, target: bytes, block: bytes, fields: _Fields) -> None:
        self.method, self.target, self.block, self.fields = method, target, block, fields
        # Read on every request: one shared object per distinct path (a parked long-poll
        # keeps its head, one per connection).
        path = target.partition(b"?")[0]
        self.path = _PATHS.get(path) or _remember(_PATHS, path, path)
        # Shared with the next request when it repeats the block: read it, never change it.
        self.headers, self.length, self.close = fields

    @property
    def query(self) -> bytes:
        """Derived on use, not stored (read once per request)."""
        return self.target.partition(b"?")[2]


def parse_head(head: bytes, max_body: int, previous: _Head | None = None) -> _Head | None:
    """The request line and headers (without the blank line), or None where Twisted must take it.

    A header block equal to ``previous``'s, byte for byte, is not parsed again:
    a client repeats its headers request after request (a long-poll's differ
    only in the request line's ``since``).
    """
    line, _, block = head.partition(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1" or parts[0] not in _METHODS or parts[1][:1] != b"/":
        return None
    if previous is not None and previous.block == block:
        return _Head(parts[0], parts[1], block, previous.fields)
    fields = _parse_fields(block, max_body)
    return None if fields is None else _Head(parts[0], parts[1], block, fields)


def _parse_fields(block: bytes, max_body: int) -> _Fields | None:
    """(headers, Content-Length, Connection: close) of a header block, or None where Twisted must take it."""
    headers: dict[str, str] = {}
    for line in block.split(b"\r\n") if block else ():
        m = _HEADER.fullmatch(line)
        if m is None:
            return None
        raw_name, raw_value = m.group(1, 2)
        name = _NAMES.get(raw_name)
        if name is None:
            name = _remember(_NAMES, raw_name, raw_name.decode("ascii").lower())
        if name in _SINGLE and name in headers:
            return None
        if name in _PRIVATE:
            headers[name] = raw_value.decode("latin-1")
        else:
            value = _VALUES.get(raw_value)
            headers[name] = value if value is not None else _remember(_VALUES, raw_value, raw_value.decode("latin-1"))
    if not _TWISTED_HEADERS.isdisjoint(headers):
        return None
    length = 0
    if "content-length" in headers:
        value = headers["content-length"]
        if not value.isdigit() or len(value) > 15:
            return None
        length = int(value)
        if length > max_body:
            return None
    close = "close" in headers.get("connection", "").lower()
    return headers, length, close


_date: list[Any] = [0, b""]


def date_header() -> bytes:
    """``Date: ...\\r\\n``, formatted once a second."""
    now = int(time.time())
    if _date[0] != now:
        _date[0], _date[1] = now, b"Date: " + http.datetimeToString(now) + b"\r\n"
    return _date[1]


class FastChannel(protocol.Protocol):
    """One client connection on the lean path, until something hands it to Twisted."""

    def __init__(self, site: "ClientSite", addr: Any) -> None:
        self.site = site
        self.addr = addr
        self.client_ip = getattr(addr, "host", "-")
        self._parts: list[bytes] = []
        self._have = 0
        self._need = 1  # bytes needed before parsing again is worth it
        self._busy = False  # a request is being handled
        self._advancing = False
        self._paused = False
        self._gone = False
        self._close_after = False
        #: What answers the request in progress (a Deferred, or a parked long-poll); cancelled if the client goes.
        self.handling: Any = None
        self.delegate: Any = None
        self.idle_since = 0.0
        #: The last request's head: its header block is reused when the next one repeats it.
        self._last: _Head | None = None

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        # As Twisted Web does: a response written in several sends must not have its
        # last segment held back (Nagle) until the client's delayed ACK, 40 ms later.
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)
        self.idle_since = self.site.reactor.seconds()
        self.site.channel_opened(self)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        if self.delegate is not None:
            self.delegate.dataReceived(data)
            return
        self._parts.append(data)
        self._have += len(data)
        if self._busy:
            if self._have > MAX_PENDING and not self._paused:
                self._paused = True
                self.transport.pauseProducing()
            return
        if self._have >= self._need:
            self._advance()

    def connectionLost(self, reason: Any = protocol.connectionDone) -> None:  # noqa: N802
        self._gone = True
        self.site.channel_closed(self)
        if self.delegate is not None:
            self.delegate.connectionLost(reason)
        elif self.handling is not None:
            self.handling.cancel()

    def _advance(self) -> None:
        """Start every complete request in the buffer, one at a time."""
        if self._advancing:  # a request answered synchronously: the loop below goes on
            return
        self._advancing = True
        try:
            while not self._busy and not self._gone and self.delegate is None and self._have >= self._need:
                buf = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
                end = buf.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        self._hand_over(buf)
                    else:
                        self._parts, self._need = [buf], len(buf) + 1
                    return
                head = parse_head(buf[:end], self.site.max_body_size, self._last)
                lean = self.site.lean_gets.get(head.path) if head is not None and head.method == b"GET" else None
                if lean is None and (head is None or not self.site.takes(head)):
                    self._hand_over(buf)
                    return
                self._last = head
                total = end + 4 + head.length
                if len(buf) < total:
                    self._parts, self._need = [buf], total
                    return
                body = buf[end + 4:total]
                rest = buf[total:]
                self._parts, self._have, self._need = ([rest] if rest else []), len(rest), 1
                self._busy = True
                self._close_after = head.close or self.site.closing
                if lean is None or not lean(self, head):
                    self.start(head, body)
        finally:
            self._advancing = False

    def start(self, head: _Head, body: bytes, args: dict[str, list[str]] | None = None,
              started: float | None = None) -> None:
        """Run a request through the router (``args``: instead of the query's; ``started``: its start time)."""
        site = self.site
        token = object()
        site._in_flight.add(token)
        d = defer.Deferred.fromCoroutine(site.serve(self, head, body, args, started))
        if not d.called:
            self.handling = d
        d.addErrback(self._failed)
        d.addBoth(site._done, token)

    def _failed(self, failure: Any) -> Any:
        """``serve`` broke before answering (a bug): close rather than leave the client waiting."""
        if not self._gone and not failure.check(defer.CancelledError):
            self.transport.abortConnection()
        return failure

    def respond(self, status: int, response: Response, head_only: bool = False) -> None:
        """Write one whole response, then go on with the next request or close."""
        out = [_STATUS.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status, _CORS, date_header()]
        for name, value in response_headers(response):
            out.append(b"%s: %s\r\n" % (name, value))
        if self._close_after:
            out.append(b"Connection: close\r\n")
        out.append(b"\r\n")
        if not head_only:
            out.append(response.body)
        self._write_response(b"".join(out))

    def respond_json(self, body: bytes) -> None:
        """``respond(200, Response(200, body))`` with the head in one piece (what a long-poll answers)."""
        if self._close_after:
            self.respond(200, Response(200, body))
        else:
            self._write_response(b"".join((_OK, _CORS, date_header(), _JSON_HEADERS,
                                           b"Content-Length: %d\r\n\r\n" % len(body), body)))

    def _write_response(self, data: bytes) -> None:
        self.handling = None
        if self._gone:
            return
        write_now(self.transport, data)
        if self._close_after:
            self.transport.loseConnection()
            return
        self._busy = False
        self.idle_since = self.site.reactor.seconds()
        if self._paused:
            self._paused = False
            self.transport.resumeProducing()
        if self._have:
            self._advance()

    def _hand_over(self, buf: bytes) -> None:
        """Give the connection to Twisted Web from this request on."""
        self._parts, self._have = [], 0
        self.site.channel_closed(self)  # Twisted's channel keeps its own timeout from here
        channel = self.site.twisted_channel(self.addr)
        self.delegate = channel
        channel.makeConnection(self.transport)
        channel.dataReceived(buf)


class ClientSite(HttpSite):
    """The client listener's site: connections start on :class:`FastChannel`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Path prefixes whose handlers need the Twisted request (see :meth:`serve_with_twisted`).
        self.twisted_prefixes: tuple[bytes, ...] = ()
        #: Seconds a connection may sit with no request in progress before it is closed.
        self.idle_timeout = IDLE_TIMEOUT
        self._channels: set[FastChannel] = set()
        self._sweep: Any = None
        #: Shutting down: every connection closes after the answer in progress (:meth:`close_after_answers`).
        self.closing = False
        #: ``GET`` handlers tried before the router, by path: ``handler(channel, head)`` answers
        #: (or parks, setting ``channel.handling``) and returns True, or returns False to leave
        #: the request to the router. The /sync long-poll's (api/client/sync.py) is the one.
        self.lean_gets: dict[bytes, Callable[[FastChannel, _Head], bool]] = {}

    def buildProtocol(self, addr: Any) -> Any:  # noqa: N802 - Twisted's name
        return FastChannel(self, addr)

    def twisted_channel(self, addr: Any) -> Any:
        """A Twisted Web channel, for a connection the lean path hands over."""
        return HttpSite.buildProtocol(self, addr)

    def serve_with_twisted(self, prefixes: Iterable[str]) -> None:
        """Requests under these path prefixes go to Twisted Web: their handlers use ``ApiRequest.raw``."""
        self.twisted_prefixes += tuple(prefix.encode("utf-8") for prefix in prefixes)

    def takes(self, head: _Head) -> bool:
        """Whether the lean path serves this request (no upgrade, no raw-request handler)."""
        path = head.path
        if head.method == b"GET" and self.upgrade_handlers and path.decode("utf-8", "replace") in self.upgrade_handlers:
            return False
        return not path.startswith(self.twisted_prefixes)

    def begin(self, request: object) -> None:
        """Count a request answered outside :meth:`serve` as in flight, until :meth:`end`."""
        self._in_flight.add(request)

    def end(self, request: object) -> None:
        if request in self._in_flight:
            self._done(None, request)

    async def serve(self, channel: FastChannel, head: _Head, body: bytes,
                    args: dict[str, list[str]] | None = None, started: float | None = None) -> None:
        start = time.perf_counter() if started is None else started
        method = head.method.decode("ascii")
        query = head.query
        route, response, requester = await self.answer(method, lambda: ApiRequest(
            method="GET" if method == "HEAD" else method,
            path=head.path.decode("utf-8", "replace"),
            args=args if args is not None else parse_query(query) if query else {},
            content=body,
            headers=dict(head.headers),  # the request's own copy (see _Head)
            client_ip=channel.client_ip,
            lean=(channel, head, start) if method == "GET" else None,
        ))
        if response is PARKED:  # a /sync long-poll now parked on the channel: it answers and observes
            return
        channel.respond(response.status, response, method == "HEAD")
        try:  # answered: from here on, nothing may fail the request (see FastChannel._failed)
            self.observe(method, route, response.status, time.perf_counter() - start, channel.client_ip,
                         head.target, requester)
        except Exception:
            logger.exception("metrics or access log for %s failed", method)

    def close_after_answers(self) -> None:
        """Shutdown: close idle connections now, the others once their request is answered
        (with ``Connection: close``), so a client's next long-poll does not land here."""
        self.closing = True
        for channel in list(self._channels):
            if channel._busy:
                channel._close_after = True
            else:
                channel.transport.loseConnection()

    def channel_opened(self, channel: FastChannel) -> None:
        self._channels.add(channel)
        if self._sweep is None:
            self._sweep = self.reactor.callLater(self.idle_timeout / 4, self._close_idle)

    def channel_closed(self, channel: FastChannel) -> None:
        self._channels.discard(channel)
        if not self._channels and self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
            self._sweep = None

    def _close_idle(self) -> None:
        """Close connections that have had no request in progress for ``idle_timeout``."""
        self._sweep = None
        cutoff = self.reactor.seconds() - self.idle_timeout
        for channel in list(self._channels):
            if not channel._busy and channel.idle_since < cutoff:
                channel.transport.loseConnection()
        if self._channels:
            self._sweep = self.reactor.callLater(self.idle_timeout / 4, self._close_idle)
