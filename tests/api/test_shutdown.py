"""HomeServer.stop drains requests in flight before closing the database (in process)."""
from __future__ import annotations

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
