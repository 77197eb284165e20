"""HomeServer.stop drains requests in flight before closing the database (in process)."""
from __future__ import annotations

import json

import pytest
import pytest_twisted
import treq
from twisted.internet import defer

from support import base_url, make_config, start_homeserver


@pytest_twisted.ensureDeferred
async def test_stop_waits_for_requests_in_flight(tmp_path):
    hs = await start_homeserver(make_config(tmp_path, f"sqlite:///{tmp_path}/hs.db"))
    gate: defer.Deferred[None] = defer.Deferred()
    entered: defer.Deferred[None] = defer.Deferred()

    async def slow(request):
        entered.callback(None)
        await gate                                   # held open by the test
        return {"count": await hs.users.count_users()}  # still needs the database
    hs.router.add("GET", "/test/slow", slow, auth="none")

    response = treq.get(base_url(hs) + "/test/slow")
    try:
        await entered
        assert hs.site.in_flight == 1
        stopping = defer.ensureDeferred(hs.stop())
        assert not stopping.called                  # waiting for the request
    finally:
        gate.callback(None)                         # never leave the request hanging
    resp = await response
    assert resp.code == 200 and (await resp.json()) == {"count": 0}
    await stopping
    with pytest.raises(RuntimeError):               # and then the database is closed
        await hs.users.count_users()


@pytest_twisted.ensureDeferred
async def test_stop_gives_up_after_the_grace_period(tmp_path):
    from twisted.internet import reactor, task
    hs = await start_homeserver(make_config(tmp_path, f"sqlite:///{tmp_path}/hs.db", shutdown_grace_period=0.05))
    gate: defer.Deferred[None] = defer.Deferred()
    entered: defer.Deferred[None] = defer.Deferred()

    async def stuck(request):
        entered.callback(None)
        await gate
        return {}
    hs.router.add("GET", "/test/stuck", stuck, auth="none")
    response = treq.get(base_url(hs) + "/test/stuck")
    response.addErrback(lambda f: None)
    try:
        await entered
        await hs.stop()                              # returns after the grace period
        assert hs.site.in_flight == 1
    finally:
        gate.callback(None)
    await task.deferLater(reactor, 0, lambda: None)
    assert hs.site.in_flight == 0                    # the late request finished without a loop


@pytest_twisted.ensureDeferred
async def test_a_failing_step_does_not_keep_the_database_open(tmp_path):
    """A step of stop() that raises is logged and the rest still run: the database's pool thread,
    left running, would keep the process from ever exiting."""
    hs = await start_homeserver(make_config(tmp_path, f"sqlite:///{tmp_path}/hs.db"))

    def broken():
        raise RuntimeError("boom")
    hs.websocket.close_all = broken
    await hs.stop()
    assert not hs._ports
    with pytest.raises(RuntimeError):
        await hs.users.count_users()


def _long_poll(port: int, request: bytes) -> tuple[bytes, bool]:
    """Send one raw request, read until the server closes: (what came back, whether it closed)."""
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data, True
            data += chunk


@pytest_twisted.ensureDeferred
async def test_stop_answers_waiting_long_polls_at_once_and_closes_their_connections(tmp_path):
    """Long-polls waiting at shutdown are answered as if their timeout had passed (nothing new,
    ``next_batch`` where they were) with ``Connection: close``, instead of holding the shutdown
    for its whole grace period; both the lean path's parked polls and the router's waits."""
    from twisted.internet import reactor, task, threads

    from support import Client
    hs = await start_homeserver(make_config(tmp_path, f"sqlite:///{tmp_path}/hs.db", shutdown_grace_period=300))
    alice = Client(hs)
    await alice.register("alice")
    _, body = await alice.get("/_matrix/client/v3/sync")
    since = body["next_batch"]
    target = f"/_matrix/client/v3/sync?timeout=250000&since={since}"
    lean = threads.deferToThread(_long_poll, hs.ports[0], (
        f"GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice.token}\r\n\r\n").encode())
    # HTTP/1.0 goes to Twisted Web, whose long-polls wait in the router (Notifier.wait).
    routed = threads.deferToThread(_long_poll, hs.ports[0], (
        f"GET {target} HTTP/1.0\r\nAuthorization: Bearer {alice.token}\r\n\r\n").encode())
    for _ in range(500):
        if hs.notifier.listener_count() == 2:
            break
        await task.deferLater(reactor, 0.01, lambda: None)
    assert hs.notifier.listener_count() == 2
    stopping = defer.ensureDeferred(hs.stop())
    for _ in range(500):  # ended by stop() itself, long before their own timeout or the grace period
        if not hs.notifier.listener_count():
            break
        await task.deferLater(reactor, 0.01, lambda: None)
    assert hs.notifier.listener_count() == 0
    for response in (await lean, await routed):
        data, closed = response
        head, _, payload = data.partition(b"\r\n\r\n")
        assert head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")) and closed, data
        assert b"connection: close" in head.lower() or head.startswith(b"HTTP/1.0")
        assert json.loads(payload)["next_batch"]
    await stopping
    assert hs.site.in_flight == 0 and hs.notifier.listener_count() == 0
