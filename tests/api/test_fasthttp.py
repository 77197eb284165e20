"""The client listener's lean HTTP/1.1 path (homeserver/api/fasthttp.py), over raw loopback sockets.

What a client library would hide is checked byte by byte here: pipelining,
partial writes, HEAD, Connection: close, and the hand-over to Twisted Web for
every request shape the lean path does not take (chunked bodies, oversized
bodies, malformed heads, HTTP/1.0, request smuggling attempts).
"""
from __future__ import annotations

import json
import socket

import pytest
import pytest_twisted
from twisted.internet import defer, task, threads

import support
from homeserver.api.fasthttp import FastChannel, parse_head
from homeserver.api.http import Response, parse_query, response_headers

VERSIONS = b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest_twisted.async_yield_fixture
async def server(tmp_path):
    """HTTP framing does not depend on the database engine: SQLite only."""
    hs = await support.start_homeserver(support.make_config(tmp_path, f"sqlite:///{tmp_path}/hs.db"))
    yield hs
    await hs.stop()


def read_response(sock: socket.socket, buf: bytearray, head_only: bool = False) -> tuple[int, dict, bytes]:
    """One response from ``sock`` (``buf`` holds what was read past the previous one)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(bytes(buf))
        buf += chunk
    end = buf.index(b"\r\n\r\n")
    lines = bytes(buf[:end]).split(b"\r\n")
    del buf[:end + 4]
    status = int(lines[0].split(b" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.decode().lower()] = value.strip().decode()
    length = 0 if head_only else int(headers.get("content-length", 0))
    while len(buf) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(bytes(buf))
        buf += chunk
    body = bytes(buf[:length])
    del buf[:length]
    return status, headers, body


def exchange(port: int, writes: list[bytes], responses: int, head_only: tuple[int, ...] = ()) -> tuple[list, bool]:
    """Send ``writes`` (one sendall each), read ``responses``; also report whether the server closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for data in writes:
            sock.sendall(data)
        buf = bytearray()
        out = [read_response(sock, buf, i in head_only) for i in range(responses)]
        sock.settimeout(0.5)
        try:
            closed = sock.recv(1) == b""
        except socket.timeout:
            closed = False
        return out, closed


def run(hs, writes, responses, head_only=()):
    return threads.deferToThread(exchange, hs.ports[0], writes, responses, head_only)


@pytest_twisted.ensureDeferred
async def test_pipelined_requests_answered_in_order_on_one_connection(server):
    login = b"GET /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\n\r\n"
    (first, second, third), closed = await run(server, [VERSIONS + login + VERSIONS], 3)
    assert [r[0] for r in (first, second, third)] == [200, 200, 200]
    assert "versions" in json.loads(first[2]) and "flows" in json.loads(second[2])
    assert first[2] == third[2]
    headers = first[1]
    assert headers["content-type"] == "application/json"
    assert headers["access-control-allow-origin"] == "*"
    assert headers["cache-control"].startswith("no-cache")
    assert "date" in headers
    assert not closed  # keep-alive


@pytest_twisted.ensureDeferred
async def test_request_split_across_writes(server):
    body = json.dumps({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "nobody"},
                       "password": "wrong"}).encode()
    request = (b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body)) + body
    pieces = [request[i:i + 7] for i in range(0, len(request), 7)]  # head and body in small pieces
    (resp,), _ = await run(server, pieces, 1)
    assert resp[0] == 403 and json.loads(resp[2])["errcode"] == "M_FORBIDDEN"


@pytest_twisted.ensureDeferred
async def test_head_and_connection_close(server):
    head = b"HEAD /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n"
    close = b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    (h, g), closed = await run(server, [head + close], 2, head_only=(0,))
    assert h[0] == 200 and int(h[1]["content-length"]) == len(g[2]) > 0
    assert g[1]["connection"] == "close"
    assert closed


@pytest_twisted.ensureDeferred
async def test_headers_that_change_between_requests_are_read_afresh(server):
    """A connection's header block is parsed once while it repeats; any change is parsed again."""
    put = "PUT /_matrix/client/v3/profile/@a:x/displayname HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{}"
    writes = [put.format(2, "{}").encode(), put.format(2, "{}").encode(), put.format(13, '{"a": "0123"}').encode(),
              VERSIONS, b"GET /_matrix/client/versions HTTP/1.1\r\n\r\n"]
    responses, _ = await run(server, [b"".join(writes)], 5)
    # Unauthenticated PUTs: each body was framed by its own Content-Length, or the later requests would fail.
    assert [r[0] for r in responses] == [401, 401, 401, 200, 200]
    assert all(json.loads(r[2])["errcode"] == "M_MISSING_TOKEN" for r in responses[:3])


@pytest_twisted.ensureDeferred
async def test_options_and_errors(server):
    options = b"OPTIONS /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\n\r\n"
    unknown = b"GET /_matrix/client/v3/nope HTTP/1.1\r\nHost: x\r\n\r\n"
    bad_query = b"GET /_matrix/client/v3/sync?since=%ff HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer x\r\n\r\n"
    (o, u, q), _ = await run(server, [options + unknown + bad_query], 3)
    assert o[0] == 200 and "Authorization" in o[1]["access-control-allow-headers"]
    assert u[0] == 404 and json.loads(u[2])["errcode"] == "M_UNRECOGNIZED"
    assert q[0] == 400 and json.loads(q[2])["errcode"] == "M_INVALID_PARAM"


@pytest_twisted.ensureDeferred
async def test_chunked_body_is_handed_to_twisted_and_the_connection_goes_on(server):
    body = json.dumps({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "nobody"},
                       "password": "wrong"}).encode()
    chunked = (b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"%x\r\n%s\r\n" % (10, body[:10]) + b"%x\r\n%s\r\n" % (len(body) - 10, body[10:]) + b"0\r\n\r\n")
    # a lean request first, so the hand-over happens mid-connection
    (v, login, v2), closed = await run(server, [VERSIONS, chunked + VERSIONS], 3)
    assert v[0] == 200 and v2[0] == 200
    assert login[0] == 403 and json.loads(login[2])["errcode"] == "M_FORBIDDEN"
    assert not closed


@pytest_twisted.ensureDeferred
async def test_oversized_body_refused(server):
    size = server.config.max_request_body_size + 1
    request = (b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size
               + b"x" * size)
    (resp,), _ = await run(server, [request], 1)
    assert resp[0] == 413 and json.loads(resp[2])["errcode"] == "M_TOO_LARGE"


@pytest.mark.parametrize("request_bytes", [
    # smuggling: both framings, or two lengths
    b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\n",
    b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}x",
    # a header line without a colon; a non-numeric length
    b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\nbroken header\r\n\r\n",
    b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
])
@pytest_twisted.ensureDeferred
async def test_malformed_requests_get_twisteds_answer(server, request_bytes):
    (resp,), closed = await run(server, [request_bytes], 1)
    assert resp[0] == 400
    assert closed


@pytest_twisted.ensureDeferred
async def test_http10_is_served_and_closed(server):
    (resp,), closed = await run(server, [b"GET /_matrix/client/versions HTTP/1.0\r\n\r\n"], 1)
    assert resp[0] == 200 and "versions" in json.loads(resp[2])
    assert closed


@pytest_twisted.ensureDeferred
async def test_disconnect_cancels_a_waiting_long_poll(server):
    c = support.Client(server)
    await c.register("alice")
    status, body = await c.get("/_matrix/client/v3/sync")
    since = body["next_batch"]
    sock = socket.create_connection(("127.0.0.1", server.ports[0]))
    sock.sendall(f"GET /_matrix/client/v3/sync?timeout=60000&since={since} HTTP/1.1\r\nHost: x\r\n"
                 f"Authorization: Bearer {c.token}\r\n\r\n".encode())
    for _ in range(200):  # until the request is parked
        if server.notifier.listener_count():
            break
        await task.deferLater(server.reactor, 0.01, lambda: None)
    assert server.notifier.listener_count() == 1
    in_flight = server.site.in_flight
    sock.close()
    for _ in range(200):
        if not server.notifier.listener_count():
            break
        await task.deferLater(server.reactor, 0.01, lambda: None)
    assert server.notifier.listener_count() == 0
    assert server.site.in_flight == in_flight - 1


@pytest_twisted.ensureDeferred
async def test_idle_connections_are_closed(server):
    clock = task.Clock()
    site = server.site
    site.reactor = clock
    sock = socket.create_connection(("127.0.0.1", server.ports[0]))
    try:
        for _ in range(200):  # until the server has the connection
            if site._channels:
                break
            await task.deferLater(server.reactor, 0.01, lambda: None)
        (channel,) = site._channels
        assert isinstance(channel, FastChannel)
        clock.advance(site.idle_timeout + site.idle_timeout / 4 + 1)
        assert channel.transport.disconnecting
    finally:
        sock.close()
    await defer.succeed(None)


def test_parse_head_takes_only_the_plain_shape():
    head = parse_head(b"PUT /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nX-Thing:  v a l \t", 100)
    assert head is not None and head.length == 2 and head.headers["x-thing"] == "v a l"
    assert parse_head(b"PUT /a HTTP/1.1\r\nContent-Length: 200", 100) is None  # over the limit
    assert parse_head(b"GET http://x/a HTTP/1.1\r\nHost: x", 100) is None  # absolute form
    assert parse_head(b"GET /a HTTP/1.1\r\nUpgrade: websocket", 100) is None
    assert parse_head(b"GET /a HTTP/1.1\r\nExpect: 100-continue", 100) is None
    assert parse_head(b"GET /a HTTP/1.1\r\nX: a\x00b", 100) is None
    assert parse_head(b"BREW /a HTTP/1.1", 100) is None
    assert parse_head(b"GET /a HTTP/1.1\r\nConnection: close", 100).close


def test_header_strings_are_shared_between_connections_but_credentials_are_not_kept():
    """Every connection repeats its Host, User-Agent...: each distinct value is decoded once and shared;
    Authorization and Cookie values are decoded per request and never kept in the shared table."""
    from homeserver.api import fasthttp

    def head(token: str):
        return parse_head(f"GET /p?since=s1&x=%20 HTTP/1.1\r\nHost: hs.example\r\nUser-Agent: nio/1\r\n"
                          f"Authorization: Bearer {token}\r\nCookie: c={token}".encode(), 100)

    a, b = head("tok-a"), head("tok-b")
    assert a.headers == {"host": "hs.example", "user-agent": "nio/1", "authorization": "Bearer tok-a",
                         "cookie": "c=tok-a"}
    assert a.headers["host"] is b.headers["host"] and a.headers["user-agent"] is b.headers["user-agent"]
    assert not any(b"tok-" in raw for raw in fasthttp._VALUES)
    assert not any("tok-" in value for value in fasthttp._VALUES.values())
    assert (a.path, a.query, a.target) == (b"/p", b"since=s1&x=%20", b"/p?since=s1&x=%20") and a.path is b.path
    assert parse_head(b"GET /p HTTP/1.1\r\nHost: x", 100).query == b""
    long_value = b"v" * (fasthttp._SHARED_LONGEST + 1)
    assert parse_head(b"GET /p HTTP/1.1\r\nX-Long: " + long_value, 100).headers["x-long"] == long_value.decode()
    assert long_value not in fasthttp._VALUES  # the tables keep short strings only


def test_parse_query_matches_twisted():
    from twisted.web.http import parse_qs

    from homeserver.api.http import decode_args
    for query in [b"a=1&b=%20x+y&a=2", b"filter=%7B%22a%22%3A1%7D;x=", b"noeq&c=d", b"=v&k=", b"x=%E2%82%AC",
                  b"since=s1_2_3&timeout=30000&x=\xe2\x82\xac"]:
        assert parse_query(query) == decode_args(parse_qs(query, 1))
        assert parse_query(query) == decode_args(parse_qs(query, 1))  # from the pair cache


def test_header_values_cannot_break_lines():
    headers = dict(response_headers(Response(302, b"", headers={"Location": "/x\r\nSet-Cookie: a=b"})))
    assert headers[b"Location"] == b"/x  Set-Cookie: a=b"


@pytest_twisted.ensureDeferred
async def test_responses_are_not_held_back_by_nagle(server):
    """A large answer goes out in several sends; TCP_NODELAY keeps its last segment from waiting
    for the client's delayed ACK (40 ms per initial sync before it was set)."""
    sock = socket.create_connection(("127.0.0.1", server.ports[0]))
    try:
        for _ in range(200):
            if server.site._channels:
                break
            await task.deferLater(server.reactor, 0.01, lambda: None)
        (channel,) = server.site._channels
        assert channel.transport.getTcpNoDelay()
    finally:
        sock.close()


@pytest_twisted.ensureDeferred
async def test_a_handler_that_breaks_closes_the_connection(server, monkeypatch):
    """A bug past the router's own error handling must not leave the client waiting forever."""
    async def broken(method, build):
        raise RuntimeError("a bug")
    monkeypatch.setattr(server.site, "answer", broken)
    with pytest.raises((EOFError, ConnectionResetError)):  # closed, not left hanging
        await run(server, [VERSIONS], 1)
