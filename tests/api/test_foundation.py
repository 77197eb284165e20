"""The HTTP basics every endpoint relies on, over a real loopback port."""
from __future__ import annotations

import pytest_twisted

from support import Client


@pytest_twisted.ensureDeferred
async def test_versions_and_well_known(hs):
    c = Client(hs)
    status, body = await c.get("/_matrix/client/versions")
    assert status == 200 and "v1.11" in body["versions"]
    status, body = await c.get("/.well-known/matrix/client")
    assert status == 200 and body["m.homeserver"]["base_url"].startswith("http")


@pytest_twisted.ensureDeferred
async def test_unknown_path_and_wrong_method(hs):
    c = Client(hs)
    assert await c.get("/_matrix/client/v3/nope") == (404, {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"})
    status, body = await c.request("DELETE", "/_matrix/client/versions")
    assert status == 405 and body["errcode"] == "M_UNRECOGNIZED"


@pytest_twisted.ensureDeferred
async def test_options_has_cors(hs):
    import treq
    resp = await treq.request("OPTIONS", Client(hs).base + "/_matrix/client/v3/login")
    assert resp.code == 200
    assert resp.headers.getRawHeaders("Access-Control-Allow-Origin") == ["*"]
    assert "Authorization" in resp.headers.getRawHeaders("Access-Control-Allow-Headers")[0]


@pytest_twisted.ensureDeferred
async def test_register_login_whoami_logout(hs):
    c = Client(hs)
    reg = await c.register("alice")
    assert reg["user_id"] == "@alice:test.local"
    status, me = await c.get("/_matrix/client/v3/account/whoami")
    assert status == 200 and me["user_id"] == "@alice:test.local" and me["device_id"] == reg["device_id"]
    status, login = await c.post("/_matrix/client/v3/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "correct horse battery", "device_id": "PHONE"})
    assert status == 200 and login["device_id"] == "PHONE"
    assert (await c.post("/_matrix/client/v3/logout", token=login["access_token"]))[0] == 200
    status, err = await c.get("/_matrix/client/v3/account/whoami", token=login["access_token"])
    assert status == 401 and err["errcode"] == "M_UNKNOWN_TOKEN"
    # the first session is untouched
    assert (await c.get("/_matrix/client/v3/account/whoami"))[0] == 200


@pytest_twisted.ensureDeferred
async def test_token_errors(hs):
    c = Client(hs)
    status, err = await c.get("/_matrix/client/v3/account/whoami")
    assert status == 401 and err["errcode"] == "M_MISSING_TOKEN"
    status, err = await c.get("/_matrix/client/v3/account/whoami", token="nonsense")
    assert status == 401 and err["errcode"] == "M_UNKNOWN_TOKEN"


@pytest_twisted.ensureDeferred
async def test_bad_json(hs):
    c = Client(hs)
    status, err = await c.request("POST", "/_matrix/client/v3/login", raw=b"{not json")
    assert status == 400 and err["errcode"] == "M_NOT_JSON"
    status, err = await c.post("/_matrix/client/v3/login", {"type": 5})
    assert status == 400 and err["errcode"] == "M_BAD_JSON"


@pytest_twisted.ensureDeferred
async def test_body_too_large(hs):
    c = Client(hs)
    status, err = await c.request("POST", "/_matrix/client/v3/login", raw=b"x" * (hs.config.max_request_body_size + 1))
    assert status == 413 and err["errcode"] == "M_TOO_LARGE"
