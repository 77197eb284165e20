"""The client-server API as an application service uses it: masquerading, registration, login, ping."""
from __future__ import annotations

import pytest
import pytest_twisted
import yaml
from twisted.internet import task

import support
from appservice.registration import parse_registration
from homeserver.api.errors import MatrixError
from homeserver.api.ratelimit import RateLimiter
from homeserver.config import RateLimit
from homeserver.users.auth import Requester
from homeserver.util.clock import Clock

from fake_appservice import AS_TOKEN, registration

REG = "/_matrix/client/v3/register"
WHOAMI = "/_matrix/client/v3/account/whoami"
AS_LOGIN = "m.login.application_service"


async def as_register(bridge, username, **extra):
    return await bridge.post(REG, {"type": AS_LOGIN, "username": username, **extra})


@pytest_twisted.ensureDeferred
async def test_register_service_users_and_masquerade(as_hs, bridge):
    status, body = await bridge.get(WHOAMI)
    assert (status, body["user_id"]) == (200, "@wechatbot:test.local")  # the sender exists from start-up

    status, body = await as_register(bridge, "wechat_alice", inhibit_login=True)
    assert status == 200 and body == {"user_id": "@wechat_alice:test.local", "home_server": "test.local"}
    status, body = await as_register(bridge, "wechat_bob")
    assert status == 200 and body["access_token"] and body["device_id"]
    bob_device = body["device_id"]
    status, body = await as_register(bridge, "wechat_alice")
    assert (status, body["errcode"]) == (400, "M_USER_IN_USE")
    status, body = await as_register(bridge, "alice")
    assert (status, body["errcode"]) == (400, "M_EXCLUSIVE")

    status, body = await bridge.get(WHOAMI, params={"user_id": "@wechat_alice:test.local"})
    assert (status, body) == (200, {"user_id": "@wechat_alice:test.local", "is_guest": False})
    status, body = await bridge.get(WHOAMI, params={"user_id": "@wechat_bob:test.local", "device_id": bob_device})
    assert body["device_id"] == bob_device
    status, body = await bridge.get(WHOAMI, params={"user_id": "@wechat_bob:test.local", "device_id": "NOPE"})
    assert (status, body["errcode"]) == (400, "M_UNKNOWN_DEVICE")
    status, body = await bridge.get(WHOAMI, params={"user_id": "@wechat_nobody:test.local"})
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    human = support.Client(as_hs)
    await human.register("carol")
    status, body = await bridge.get(WHOAMI, params={"user_id": "@carol:test.local"})
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    # the as_token also works as the access_token query parameter
    status, body = await bridge.get(WHOAMI, token="", params={"access_token": AS_TOKEN})
    assert body["user_id"] == "@wechatbot:test.local"


@pytest_twisted.ensureDeferred
async def test_register_needs_the_as_token(as_hs, bridge):
    anon = support.Client(as_hs)
    status, body = await anon.post(REG, {"type": AS_LOGIN, "username": "wechat_x"})
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")
    status, body = await anon.post(REG, {"type": AS_LOGIN, "username": "wechat_x"}, token="wrong")
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")


@pytest_twisted.ensureDeferred
async def test_humans_kept_out_of_exclusive_namespace(as_hs):
    human = support.Client(as_hs)
    status, body = await human.post(REG, {"username": "wechat_fake", "password": support.PASSWORD})
    assert (status, body["errcode"]) == (400, "M_EXCLUSIVE")
    status, body = await human.get(REG + "/available", params={"username": "wechat_fake"})
    assert (status, body["errcode"]) == (400, "M_EXCLUSIVE")
    await human.register("wechatfan")  # outside the namespace: fine


@pytest_twisted.ensureDeferred
async def test_login_as_service_user(as_hs, bridge):
    status, body = await bridge.get("/_matrix/client/v3/login")
    assert {"type": AS_LOGIN} in body["flows"]
    await as_register(bridge, "wechat_dan", inhibit_login=True)
    login = {"type": AS_LOGIN, "identifier": {"type": "m.id.user", "user": "wechat_dan"}}
    status, body = await bridge.post("/_matrix/client/v3/login", login)
    assert status == 200 and body["user_id"] == "@wechat_dan:test.local"
    user = support.Client(as_hs)
    status, who = await user.get(WHOAMI, token=body["access_token"])
    assert who["user_id"] == "@wechat_dan:test.local"
    await support.Client(as_hs).register("erin")
    status, body = await bridge.post("/_matrix/client/v3/login",
                                     {"type": AS_LOGIN, "identifier": {"type": "m.id.user", "user": "erin"}})
    assert (status, body["errcode"]) == (403, "M_EXCLUSIVE")
    status, body = await user.post("/_matrix/client/v3/login", login, token="")
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")


PING = "/_matrix/client/v1/appservice/wechat/ping"
C3 = "/_matrix/client/v3"


@pytest_twisted.ensureDeferred
async def test_ping(as_hs, bridge, fake_as):
    status, body = await bridge.post(PING, {"transaction_id": "meow"})
    assert status == 200 and isinstance(body["duration_ms"], int)
    assert fake_as.requests[-1] == ("POST", "/_matrix/app/v1/ping", "Bearer hs-token-wechat")
    status, body = await bridge.post("/_matrix/client/v1/appservice/other/ping", {})
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    human = support.Client(as_hs)
    await human.register("frank")
    status, body = await human.post(PING, {})
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    fake_as.status = 401
    status, body = await bridge.post(PING, {})
    assert (status, body["errcode"], body["status"]) == (502, "M_BAD_STATUS", 401)
    assert "M_UNKNOWN_TOKEN" in body["body"]
    fake_as.status = 200
    fake_as.down = True
    status, body = await bridge.post(PING, {})
    assert (status, body["errcode"]) == (502, "M_CONNECTION_FAILED")


@pytest_twisted.ensureDeferred
async def test_ping_url_not_set_and_connection_refused(tmp_path, database_url):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(registration(None)))
    path2 = tmp_path / "r2.yaml"
    path2.write_text(yaml.safe_dump({**registration("http://127.0.0.1:1"), "id": "dead", "as_token": "a2",
                                     "hs_token": "h2", "sender_localpart": "deadbot",
                                     "namespaces": {}}))
    hs = await support.start_homeserver(support.make_config(
        tmp_path, database_url, app_service_config_files=[str(path), str(path2)]))
    try:
        c = support.Client(hs)
        status, body = await c.post(PING, {}, token=AS_TOKEN)
        assert (status, body["errcode"]) == (400, "M_URL_NOT_SET")
        status, body = await c.post("/_matrix/client/v1/appservice/dead/ping", {}, token="a2")
        assert (status, body["errcode"]) == (502, "M_CONNECTION_FAILED")
    finally:
        await hs.stop()


def test_bad_registration_stops_start_up(tmp_path):
    from homeserver.config import ConfigError
    from homeserver.server import HomeServer
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**registration("http://x"), "namespaces": {"users": [{"regex": "@a"}]}}))
    config = support.make_config(tmp_path, f"sqlite:///{tmp_path}/db", app_service_config_files=[str(path)])
    with pytest.raises(ConfigError) as e:
        HomeServer(config)
    assert str(e.value) == f"config error: {path}: namespaces.users[0].exclusive: is required"


def test_rate_limit_exemption():
    service = parse_registration({**registration("http://x"), "rate_limited": True}, "test.local")
    free = parse_registration(registration("http://x"), "test.local")
    limiter = RateLimiter(Clock(task.Clock()), RateLimit(0.0, 1))
    sender = Requester("@wechatbot:test.local", None, "t", appservice=service)
    puppet = Requester("@wechat_a:test.local", None, "t", appservice=service)
    free_puppet = Requester("@wechat_a:test.local", None, "t", appservice=free)
    for _ in range(3):
        limiter.check(sender.user_id, requester=sender)            # the sender is never limited
        limiter.check(free_puppet.user_id, requester=free_puppet)  # rate_limited: false
    limiter.check(puppet.user_id, requester=puppet)
    with pytest.raises(MatrixError):
        limiter.check(puppet.user_id, requester=puppet)


@pytest_twisted.ensureDeferred
async def test_thirdparty_lookups(tmp_path, database_url, fake_as):
    path = tmp_path / "tp.yaml"
    path.write_text(yaml.safe_dump(registration(fake_as.url, protocols=["wechat"])))
    hs = await support.start_homeserver(support.make_config(tmp_path, database_url,
                                                            app_service_config_files=[str(path)]))
    try:
        fake_as.thirdparty = {
            "protocol/wechat": {"user_fields": ["wxid"], "location_fields": ["group"], "icon": "mxc://x/y",
                                "field_types": {}, "instances": [{"desc": "WeChat", "fields": {},
                                                                  "network_id": "wx"}]},
            "location/wechat": [{"alias": "#wechat_g1:test.local", "protocol": "wechat", "fields": {"group": "g1"}}],
            "user": [{"userid": "@wechat_a:test.local", "protocol": "wechat", "fields": {"wxid": "a"}}],
        }
        c = support.Client(hs)
        await c.register("tp")
        status, body = await c.get(C3 + "/thirdparty/protocols")
        assert status == 200 and body["wechat"]["instances"][0]["instance_id"] == "wechat|wx"
        status, body = await c.get(C3 + "/thirdparty/protocol/wechat")
        assert body["user_fields"] == ["wxid"]
        status, body = await c.get(C3 + "/thirdparty/protocol/irc")
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
        status, body = await c.get(C3 + "/thirdparty/location/wechat", params={"group": "g1"})
        assert status == 200 and body[0]["alias"] == "#wechat_g1:test.local"
        assert ("location/wechat", {"group": "g1"}) in fake_as.thirdparty_queries
        status, body = await c.get(C3 + "/thirdparty/user/wechat", params={"wxid": "zz"})
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
        status, body = await c.get(C3 + "/thirdparty/user", params={"userid": "@wechat_a:test.local"})
        assert status == 200 and body[0]["fields"] == {"wxid": "a"}
        status, body = await c.get(C3 + "/thirdparty/user")
        assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
        for _, p, auth in fake_as.requests:
            assert auth == "Bearer hs-token-wechat"
    finally:
        await hs.stop()


@pytest_twisted.ensureDeferred
async def test_service_manages_devices(as_hs, bridge):
    await as_register(bridge, "wechat_dev", inhibit_login=True)
    me = {"user_id": "@wechat_dev:test.local"}
    status, body = await bridge.put(C3 + "/devices/BRIDGEDEV", {"display_name": "WeChat"}, params=me)
    assert (status, body) == (201, {})
    status, body = await bridge.put(C3 + "/devices/BRIDGEDEV", {"display_name": "WeChat 2"}, params=me)
    assert (status, body) == (200, {})
    status, body = await bridge.get(WHOAMI, params={**me, "device_id": "BRIDGEDEV"})
    assert body["device_id"] == "BRIDGEDEV"
    status, body = await bridge.request("DELETE", C3 + "/devices/BRIDGEDEV", body={}, params=me)  # no UIA
    assert status == 200, body
    status, body = await bridge.get(WHOAMI, params={**me, "device_id": "BRIDGEDEV"})
    assert (status, body["errcode"]) == (400, "M_UNKNOWN_DEVICE")
