"""Error paths of the HTTP layer that every endpoint shares."""
from __future__ import annotations

import pytest_twisted
import treq

from support import Client

V3 = "/_matrix/client/v3"


@pytest_twisted.ensureDeferred
async def test_bodies_that_are_not_json_objects(hs):
    c = Client(hs)
    for raw, code in [(b"[1, 2]", "M_BAD_JSON"), (b'"text"', "M_BAD_JSON"), (b"{\"a\": NaN}", "M_NOT_JSON"),
                      (b"\xff\xfe", "M_NOT_JSON"), (b"[" * 50_000, "M_NOT_JSON")]:
        status, body = await c.request("POST", V3 + "/login", raw=raw)
        assert (status, body["errcode"]) == (400, code), raw[:10]
    assert (await c.post(V3 + "/login", {}))[1]["errcode"] == "M_MISSING_PARAM"
    status, body = await c.post(V3 + "/login", {"type": "m.login.token"})
    assert status == 400 and body["errcode"] == "M_UNKNOWN"


@pytest_twisted.ensureDeferred
async def test_tokens_from_query_and_odd_headers(hs):
    c = Client(hs)
    await c.register("alice")
    token = c.token
    status, body = await c.get(V3 + "/account/whoami", token="", params={"access_token": token})
    assert status == 200 and body["user_id"] == "@alice:test.local"
    status, body = await c.get(V3 + "/account/whoami", token="", headers={"Authorization": f"Basic {token}"})
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"
    # the legacy r0 prefix routes to the same handlers
    assert (await c.get("/_matrix/client/r0/account/whoami"))[0] == 200
    # logged out tokens are unknown
    await c.post(V3 + "/logout")
    status, body = await c.get(V3 + "/account/whoami")
    assert status == 401 and body["errcode"] == "M_UNKNOWN_TOKEN" and body["soft_logout"] is False


@pytest_twisted.ensureDeferred
async def test_routing_errors(hs):
    c = Client(hs)
    status, body = await c.request("PATCH", V3 + "/devices/X")
    assert status == 405 and body["errcode"] == "M_UNRECOGNIZED"
    status, body = await c.get(V3 + "/devices/X/extra")
    assert status == 404 and body["errcode"] == "M_UNRECOGNIZED"
    resp = await treq.head(c.base + "/_matrix/client/versions")
    assert resp.code == 200 and await resp.content() == b""
    status, body = await c.get(V3 + "/register/available?username=%FF")
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"


@pytest_twisted.ensureDeferred
async def test_chunked_body_over_the_limit(hs):
    """No Content-Length: the limit is enforced while the body streams in."""
    from twisted.web.client import FileBodyProducer
    import io

    class Unsized(FileBodyProducer):
        def __init__(self, data: bytes) -> None:
            super().__init__(io.BytesIO(data))
            self.length = __import__("twisted.web.iweb", fromlist=["UNKNOWN_LENGTH"]).UNKNOWN_LENGTH

    c = Client(hs)
    resp = await treq.post(c.base + V3 + "/login", data=Unsized(b"x" * (hs.config.max_request_body_size + 10)))
    assert resp.code == 413 and (await resp.json())["errcode"] == "M_TOO_LARGE"
