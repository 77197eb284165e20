"""Password change, deactivation and devices, all behind user-interactive auth."""
from __future__ import annotations

import pytest_twisted

from support import PASSWORD, Client

V3 = "/_matrix/client/v3"


async def with_password(c: Client, method: str, path: str, body: dict, password: str = PASSWORD,
                        user: str | None = None) -> tuple[int, dict]:
    """Run a UIA m.login.password flow: first call gets 401 + session, second carries the password."""
    status, first = await c.request(method, path, body)
    assert status == 401 and first["flows"] == [{"stages": ["m.login.password"]}], (status, first)
    auth = {"type": "m.login.password", "session": first["session"], "password": password,
            "identifier": {"type": "m.id.user", "user": user or c.user_id}}
    return await c.request(method, path, {**body, "auth": auth})


async def login(c: Client, user: str, password: str = PASSWORD, device_id: str | None = None) -> tuple[int, dict]:
    body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password}
    if device_id:
        body["device_id"] = device_id
    return await c.post(V3 + "/login", body, token="")


@pytest_twisted.ensureDeferred
async def test_change_password_logs_out_other_devices(hs):
    c = Client(hs)
    await c.register("alice")
    status, other = await login(c, "alice", device_id="OTHER")
    assert status == 200
    status, body = await with_password(c, "POST", V3 + "/account/password", {"new_password": "new one"})
    assert status == 200 and body == {}
    # old password refused, new one works
    assert (await login(c, "alice"))[0] == 403
    assert (await login(c, "alice", "new one"))[0] == 200
    # the caller's session survives, the other device is gone with its token
    assert (await c.get(V3 + "/account/whoami"))[0] == 200
    status, err = await c.get(V3 + "/account/whoami", token=other["access_token"])
    assert status == 401 and err["errcode"] == "M_UNKNOWN_TOKEN"
    status, devices = await c.get(V3 + "/devices")
    assert "OTHER" not in [d["device_id"] for d in devices["devices"]]


@pytest_twisted.ensureDeferred
async def test_change_password_keeping_devices(hs):
    c = Client(hs)
    await c.register("alice")
    _, other = await login(c, "alice", device_id="OTHER")
    status, _ = await with_password(c, "POST", V3 + "/account/password",
                                    {"new_password": "new one", "logout_devices": False})
    assert status == 200
    assert (await c.get(V3 + "/account/whoami", token=other["access_token"]))[0] == 200


@pytest_twisted.ensureDeferred
async def test_uia_failures(hs):
    c = Client(hs)
    await c.register("alice")
    await Client(hs).register("bob")
    path = V3 + "/account/password"
    # wrong password: 401 again, with an error and the same flows
    status, body = await with_password(c, "POST", path, {"new_password": "x"}, password="wrong")
    assert status == 401 and body["errcode"] == "M_FORBIDDEN" and body["completed"] == []
    assert "session" in body and body["flows"]
    # someone else's (correct) password does not authorise alice's change
    status, body = await with_password(c, "POST", path, {"new_password": "x"}, user="@bob:test.local")
    assert status == 401 and body["errcode"] == "M_FORBIDDEN"
    # unknown session
    status, body = await c.post(path, {"new_password": "x", "auth": {"type": "m.login.password",
                                                                       "session": "nope"}})
    assert status == 400
    # a stage the flow does not offer
    status, body = await c.post(path, {"new_password": "x", "auth": {"type": "m.login.dummy"}})
    assert status == 400 and body["errcode"] == "M_UNRECOGNIZED"
    # malformed auth
    status, body = await c.post(path, {"new_password": "x", "auth": "yes"})
    assert status == 400 and body["errcode"] == "M_BAD_JSON"
    # a session started for another endpoint cannot be reused here
    status, first = await c.request("DELETE", V3 + "/devices/X", {})
    status, body = await c.post(path, {"new_password": "x", "auth": {
        "type": "m.login.password", "session": first["session"], "password": PASSWORD,
        "identifier": {"type": "m.id.user", "user": "alice"}}})
    assert status == 403
    # missing / bad new_password
    assert (await c.post(path, {}))[1]["errcode"] == "M_MISSING_PARAM"
    assert (await c.post(path, {"new_password": 5}))[1]["errcode"] == "M_BAD_JSON"
    # nothing changed
    assert (await login(c, "alice"))[0] == 200
    # without a token
    status, body = await c.post(path, {"new_password": "x"}, token="")
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"


@pytest_twisted.ensureDeferred
async def test_deactivate(hs):
    c = Client(hs)
    await c.register("alice")
    _, other = await login(c, "alice", device_id="OTHER")
    await c.put(V3 + "/profile/@alice:test.local/displayname", {"displayname": "Alice"})
    deactivated = []

    async def hook(user_id, erase):
        deactivated.append((user_id, erase))
    hs.accounts.on_deactivate.append(hook)
    status, body = await with_password(c, "POST", V3 + "/account/deactivate", {"erase": True})
    assert status == 200 and body == {"id_server_unbind_result": "no-support"}
    assert deactivated == [("@alice:test.local", True)]
    for token in (c.token, other["access_token"]):
        assert (await c.get(V3 + "/account/whoami", token=token))[0] == 401
    assert (await login(c, "alice"))[0] == 403
    assert (await Client(hs).get(V3 + "/profile/@alice:test.local"))[0] == 404
    # the user ID stays taken
    status, body = await Client(hs).get(V3 + "/register/available", params={"username": "alice"})
    assert status == 400 and body["errcode"] == "M_USER_IN_USE"


@pytest_twisted.ensureDeferred
async def test_deactivate_bad_input_changes_nothing(hs):
    c = Client(hs)
    await c.register("alice")
    status, body = await c.post(V3 + "/account/deactivate", {"erase": "yes"})
    assert status == 400 and body["errcode"] == "M_BAD_JSON"
    status, body = await with_password(c, "POST", V3 + "/account/deactivate", {}, password="wrong")
    assert status == 401
    assert (await c.get(V3 + "/account/whoami"))[0] == 200


@pytest_twisted.ensureDeferred
async def test_devices(hs):
    c = Client(hs)
    await c.register("alice")
    _, phone = await login(c, "alice", device_id="PHONE")
    deleted = []

    async def hook(user_id, device_ids):
        deleted.append((user_id, device_ids))
    hs.accounts.on_devices_deleted.append(hook)

    status, body = await c.get(V3 + "/devices")
    assert status == 200
    ids = sorted(d["device_id"] for d in body["devices"])
    assert ids == sorted([c.device_id, "PHONE"])
    assert all(d["last_seen_ip"] == "127.0.0.1" and d["last_seen_ts"] > 0 for d in body["devices"])

    assert (await c.put(V3 + "/devices/PHONE", {"display_name": "My phone"})) == (200, {})
    status, body = await c.get(V3 + "/devices/PHONE")
    assert status == 200 and body["display_name"] == "My phone" and body["device_id"] == "PHONE"
    # unknown devices, bad names
    assert (await c.get(V3 + "/devices/NOPE"))[1]["errcode"] == "M_NOT_FOUND"
    assert (await c.put(V3 + "/devices/NOPE", {"display_name": "x"}))[0] == 404
    assert (await c.put(V3 + "/devices/PHONE", {"display_name": "x" * 300}))[1]["errcode"] == "M_BAD_JSON"
    assert (await c.put(V3 + "/devices/PHONE", {"display_name": 5}))[1]["errcode"] == "M_BAD_JSON"
    # another user's device is not visible
    bob = Client(hs)
    await bob.register("bob")
    assert (await bob.get(V3 + "/devices/PHONE"))[0] == 404

    # delete one device behind UIA: its token dies
    status, body = await with_password(c, "DELETE", V3 + "/devices/PHONE", {})
    assert status == 200
    assert (await c.get(V3 + "/account/whoami", token=phone["access_token"]))[0] == 401
    assert deleted == [("@alice:test.local", ["PHONE"])]
    assert (await c.get(V3 + "/devices/PHONE"))[0] == 404


@pytest_twisted.ensureDeferred
async def test_delete_devices(hs):
    c = Client(hs)
    await c.register("alice")
    tokens = [(await login(c, "alice", device_id=f"D{i}"))[1]["access_token"] for i in range(3)]
    assert (await c.post(V3 + "/delete_devices", {"devices": "D0"}))[1]["errcode"] == "M_BAD_JSON"
    assert (await c.post(V3 + "/delete_devices", {}))[1]["errcode"] == "M_MISSING_PARAM"
    status, body = await with_password(c, "POST", V3 + "/delete_devices", {"devices": ["D0", "D1", "NOPE"]})
    assert status == 200
    assert (await c.get(V3 + "/account/whoami", token=tokens[0]))[0] == 401
    assert (await c.get(V3 + "/account/whoami", token=tokens[1]))[0] == 401
    assert (await c.get(V3 + "/account/whoami", token=tokens[2]))[0] == 200
    status, body = await c.get(V3 + "/devices")
    assert sorted(d["device_id"] for d in body["devices"]) == sorted([c.device_id, "D2"])


@pytest_twisted.ensureDeferred
async def test_logout_all(hs):
    c = Client(hs)
    await c.register("alice")
    _, other = await login(c, "alice")
    assert (await c.post(V3 + "/logout/all"))[0] == 200
    for token in (c.token, other["access_token"]):
        assert (await c.get(V3 + "/account/whoami", token=token))[0] == 401
