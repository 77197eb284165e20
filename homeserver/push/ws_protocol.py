"""The autobahn side of the WebSocket channel: one :class:`SyncSocket` per connection.

Imported by :class:`~homeserver.push.websocket.WebSocketChannel` on the first
upgrade request, so a server nobody opens a WebSocket to never loads autobahn
(about 6 MB of resident memory; see docs/performance.md, "On memory").
"""
from __future__ import annotations

import logging
import struct
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import defer

from homeserver.api.http import ApiRequest, write_now
from homeserver.push.websocket import CLOSE_SLOW_READER, CLOSE_TOKEN_INVALID, METHODS, _Session
from homeserver.sync.builder import SyncRequest
from homeserver.sync.tokens import StreamToken
from homeserver.util import json as jsonutil

if TYPE_CHECKING:
    from homeserver.push.websocket import WebSocketChannel

logger = logging.getLogger("homeserver.push.websocket")

__all__ = ["SyncSocket", "WebSocketResource", "make_factory"]


_SYNC_OPEN = b'{"type":"sync","body":'


def _header(n: int) -> bytes:
    """A final text frame's header for an ``n``-byte payload (server frames are not masked)."""
    if n < 126:
        return bytes((0x81, n))
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n)
    return struct.pack("!BBQ", 0x81, 127, n)


class SyncSocket(WebSocketServerProtocol):
    """One client connection."""

    channel: "WebSocketChannel"
    session: _Session

    def onOpen(self) -> None:
        self._paused = False
        self._dirty = False
        self._building = False
        self._closed = False
        self._paused_bytes = 0
        self._slow_timer: Any = None
        self._in_flight: set[defer.Deferred[Any]] = set()
        req = self.session.sync_request
        self.user_id = req.user_id
        self.since = req.since
        # Looked up on every wake: 500 of them per message in a 500-member group.
        self._notifier = self.channel.notifier
        self._shared = self.channel.builder.shared
        self._device_id = req.device_id
        self._filter = req.filter
        self.channel._opened(self)
        # Twisted Web's channel was the transport's producer until autobahn took over.
        if getattr(self.transport, "producer", None) is not None:
            self.transport.unregisterProducer()
        self.registerProducer(self, True)
        self._listener = self.channel.notifier.listen(self.user_id, self._wake, persistent=True)
        self.channel.presence.sync_started(self.user_id, req.set_presence)
        self._wake()  # the initial frame, or what happened since the resumed token

    # IPushProducer: Twisted pauses us when the peer stops reading.

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._paused_bytes = 0
        if self._slow_timer is not None and self._slow_timer.active():
            self._slow_timer.cancel()
        self._slow_timer = None
        if self._dirty:
            self._wake()

    def stopProducing(self) -> None:
        self._closed = True

    # pushing sync frames

    def _wake(self) -> None:
        if self._closed:
            return
        self._dirty = True
        if self._paused:
            if self._slow_timer is None:
                self._slow_timer = self.channel.clock.call_later(
                    self.channel.config.slow_reader_timeout_s, self._too_slow)
            return
        if not self._building and not self._push_shared():
            defer.ensureDeferred(self._push())

    def _expired(self) -> bool:
        expires = self.session.expires_ms
        if expires is not None and self.channel.clock.time_msec() >= expires:
            self._close(CLOSE_TOKEN_INVALID, "access token has expired")
            return True
        return False

    def _push_shared(self) -> bool:
        """Send a shared body without building (sync/shared.py).

        False when there is none (build one); True when sent, or when the
        connection closed because its token expired.
        """
        if self.session.expires_ms is not None and self._expired():
            return True
        since = self.since
        upto = self._notifier.current_token()
        parts = self._shared.parts(self.user_id, self._device_id, since, upto, self._filter,
                                   since is None and self.session.sync_request.full_state)
        if parts is None:
            return False
        self._dirty = False
        self.since = upto
        prefix, counts, suffix = parts
        if self._paused or self.state != self.STATE_OPEN:
            self._send_encoded(b"".join((_SYNC_OPEN, prefix, counts, suffix, b"}")))
            return True
        # The common case, in one piece: the frame header, then the body around this member's counts.
        size = len(_SYNC_OPEN) + len(prefix) + len(counts) + len(suffix) + 1
        write_now(self.transport, b"".join((_header(size), _SYNC_OPEN, prefix, counts, suffix, b"}")))
        return True

    async def _push(self) -> None:
        self._building = True
        try:
            while self._dirty and not self._paused and not self._closed:
                if self._push_shared() or self._closed:
                    continue
                self._dirty = False
                req = self.session.sync_request
                full_state = req.full_state and self.since is None
                upto = self.channel.notifier.current_token()
                sync_req = SyncRequest(req.user_id, req.device_id, self.since, req.filter, full_state,
                                       req.set_presence)
                body, empty = await self.channel.builder.build(sync_req, upto)
                if self._closed:
                    return
                if empty and self.since is not None:
                    continue
                self.channel.builder.shared.remember(self.user_id, self.since, upto, req.filter, body, full_state)
                self._send({"type": "sync", "body": body})
                self.since = StreamToken.parse(body["next_batch"])  # parsed once per token, see tokens.py
        except Exception:
            logger.exception("building a sync frame for %s", self.user_id)
            self._close(1011, "internal error")
        finally:
            self._building = False

    def _send(self, frame: dict[str, Any]) -> None:
        self._send_encoded(jsonutil.dumps_bytes(frame))

    def _send_encoded(self, payload: bytes) -> None:
        if self._paused:
            self._paused_bytes += len(payload)
            if self._paused_bytes > self.channel.config.max_buffer_bytes:
                self._too_slow()
                return
        if self.state != self.STATE_OPEN:
            self.sendMessage(payload, isBinary=False)
            return
        write_now(self.transport, _header(len(payload)) + payload)

    def _too_slow(self) -> None:
        self._slow_timer = None
        self._close(CLOSE_SLOW_READER, "too slow: reconnect with since=<last next_batch>")

    def _close(self, code: int, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        # autobahn's sendClose() takes only 1000 and 3000-4999 from applications; 1001 (shutdown)
        # and 1011 (internal error) are the RFC 6455 codes for ours, so the frame is sent as is.
        self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:123], isReply=False)
        # A peer that does not read will not answer the close handshake either.
        self.channel.clock.call_later(5, self._drop)

    def _drop(self) -> None:
        if self.transport is not None and self.transport.connected:
            self.dropConnection(abort=True)

    # client frames

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self._closed:
            return
        try:
            frame = jsonutil.loads(payload)
        except (ValueError, UnicodeDecodeError):
            self._error(None, "M_NOT_JSON", "Frame is not JSON")
            return
        if not isinstance(frame, dict):
            self._error(None, "M_BAD_JSON", "Frame must be a JSON object")
            return
        frame_id = frame.get("id")
        kind = frame.get("type")
        if kind != "request":
            self._error(frame_id, "M_UNRECOGNIZED", f"Unknown frame type {str(kind)[:32]!r}")
            return
        if not isinstance(frame_id, (str, int)) or isinstance(frame_id, bool):
            self._error(None, "M_BAD_JSON", "A request needs an 'id' (string or integer)")
            return
        method, path = frame.get("method"), frame.get("path")
        if method not in METHODS or not isinstance(path, str) or not path.startswith("/"):
            self._error(frame_id, "M_BAD_JSON", "A request needs 'method' (GET, PUT, POST, DELETE) and 'path'")
            return
        if len(self._in_flight) >= self.channel.config.max_requests_in_flight:
            self._error(frame_id, "M_LIMIT_EXCEEDED", "Too many requests in flight on this socket")
            return
        body = frame.get("body")
        d = defer.ensureDeferred(self._request(frame_id, method, path, body))
        self._in_flight.add(d)
        d.addBoth(lambda r: (self._in_flight.discard(d), None)[1])

    async def _request(self, frame_id: Any, method: str, path: str, body: Any) -> None:
        parts = urlsplit(path)
        base = self.session.request
        content = b"" if body is None else jsonutil.dumps_bytes(body)
        request = ApiRequest(
            method=method,
            path=parts.path,
            args={k: v for k, v in parse_qs(parts.query, keep_blank_values=True).items()},
            content=content,
            headers={"authorization": base.headers.get("authorization") or f"Bearer {base.access_token()}",
                     "content-type": "application/json"},
            client_ip=base.client_ip,
            body_too_large=len(content) > self.channel.max_body_size,
        )
        try:
            _route, response = await self.channel.router.dispatch(request)
        except defer.CancelledError:
            return
        if self._closed:
            return
        if response.content_type == "application/json":
            try:
                out: Any = jsonutil.loads(response.body) if response.body else {}
            except ValueError:
                out = {}
        else:
            out = {"content_type": response.content_type, "length": len(response.body)}
        self._send({"type": "response", "id": frame_id, "status": response.status, "body": out})

    def _error(self, frame_id: Any, errcode: str, error: str) -> None:
        frame: dict[str, Any] = {"type": "error", "body": {"errcode": errcode, "error": error}}
        if frame_id is not None and isinstance(frame_id, (str, int)):
            frame["id"] = frame_id
        self._send(frame)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        if getattr(self, "_listener", None) is None:
            return
        self._closed = True
        self.channel.notifier.remove(self._listener)
        self._listener = None
        if self._slow_timer is not None and self._slow_timer.active():
            self._slow_timer.cancel()
        for d in list(self._in_flight):
            d.cancel()
        self.channel.presence.sync_ended(self.user_id)
        self.channel._closed(self)


class _Factory(WebSocketServerFactory):
    protocol = SyncSocket

    def __init__(self, channel: "WebSocketChannel") -> None:
        super().__init__()
        self.channel = channel
        self.next_session: _Session | None = None

    def buildProtocol(self, addr: Any) -> Any:
        proto = super().buildProtocol(addr)
        proto.channel = self.channel
        proto.session = self.next_session
        return proto


def make_factory(channel: "WebSocketChannel") -> _Factory:
    return _Factory(channel)
