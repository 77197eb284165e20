"""Rate limiting: the token bucket on a task.Clock, and 429s over HTTP."""
from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import task

from homeserver.api.errors import MatrixError
from homeserver.api.ratelimit import RateLimiter
from homeserver.config import RateLimit
from homeserver.util.clock import Clock
from support import PASSWORD, Client, make_config, start_homeserver

V3 = "/_matrix/client/v3"


def test_bucket_refills_with_time():
    reactor = task.Clock()
    limiter = RateLimiter(Clock(reactor), RateLimit(per_second=0.5, burst=2))
    limiter.check("a")
    limiter.check("a")
    with pytest.raises(MatrixError) as e:
        limiter.check("a")
    assert e.value.status == 429 and e.value.errcode == "M_LIMIT_EXCEEDED"
    assert e.value.extra["retry_after_ms"] == 2001
    assert e.value.headers["Retry-After"] == "3"
    limiter.check("b")  # other keys have their own bucket
    reactor.advance(1.0)
    with pytest.raises(MatrixError) as e:
        limiter.check("a")
    assert 999 <= e.value.extra["retry_after_ms"] <= 1001
    reactor.advance(1.0)
    limiter.check("a")
    reactor.advance(100)  # never more than the burst
    limiter.check("a")
    limiter.check("a")
    with pytest.raises(MatrixError):
        limiter.check("a")


def test_peek_record_and_disabled():
    reactor = task.Clock()
    limiter = RateLimiter(Clock(reactor), RateLimit(per_second=1, burst=1))
    limiter.check("a", update=False)
    limiter.check("a", update=False)  # peeking takes nothing
    limiter.record("a")
    limiter.record("a")  # never raises
    with pytest.raises(MatrixError):
        limiter.check("a", update=False)
    off = RateLimiter(Clock(reactor), RateLimit(per_second=0, burst=1), enabled=False)
    for _ in range(10):
        off.check("a")
    zero = RateLimiter(Clock(reactor), RateLimit(per_second=0, burst=1))
    zero.check("a")
    with pytest.raises(MatrixError) as e:
        zero.check("a")
    assert e.value.extra["retry_after_ms"] > 0


@pytest.fixture
def limited_config(tmp_path):
    return make_config(tmp_path, f"sqlite:///{tmp_path}/hs.db", rate_limiting={
        "enabled": True, "login": {"per_second": 0.001, "burst": 2},
        "register": {"per_second": 0.001, "burst": 1}, "message": {"per_second": 1, "burst": 1}})


@pytest_twisted.ensureDeferred
async def test_login_and_register_answer_429(limited_config):
    import treq
    hs = await start_homeserver(limited_config)
    try:
        c = Client(hs)
        await c.register("alice")  # the first registration passes
        # the second is refused before it creates anything
        status, body = await c.post(V3 + "/register", {"username": "bob", "password": PASSWORD})
        assert status == 429 and body["errcode"] == "M_LIMIT_EXCEEDED" and body["retry_after_ms"] > 0
        login = {"type": "m.login.password", "user": "alice", "password": PASSWORD}
        assert (await c.post(V3 + "/login", login))[0] == 200
        assert (await c.post(V3 + "/login", {**login, "password": "wrong"}))[0] == 403
        resp = await treq.post(c.base + V3 + "/login", json=login)
        assert resp.code == 429
        assert int(resp.headers.getRawHeaders("Retry-After")[0]) >= 1
        assert (await resp.json())["errcode"] == "M_LIMIT_EXCEEDED"
        # failed attempts are counted per account, whatever the address
        hs.login_limiter._buckets.clear()
        for _ in range(2):
            assert (await c.post(V3 + "/login", {**login, "password": "wrong"}))[0] == 403
        hs.login_limiter._buckets.pop("ip:127.0.0.1")  # as if from another address
        status, body = await c.post(V3 + "/login", login)
        assert status == 429 and body["errcode"] == "M_LIMIT_EXCEEDED"
        # the message limiter is exposed for the rooms component, per user
        hs.message_limiter.check("@alice:test.local")
        with pytest.raises(MatrixError):
            hs.message_limiter.check("@alice:test.local")
        hs.message_limiter.check("@bob:test.local")
    finally:
        await hs.stop()
