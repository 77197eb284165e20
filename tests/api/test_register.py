"""Registration: username rules, options, and shared-secret registration by the operator."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest_twisted
from twisted.internet import threads

from homeserver.api.admin.register import compute_mac
from homeserver.api.admin.register_new_user import register_user
from support import PASSWORD, Client, base_url

V3 = "/_matrix/client/v3"
ADMIN = "/_synapse/admin/v1/register"


async def register(c: Client, body: dict, params: dict | None = None) -> tuple[int, dict]:
    """Complete the dummy flow with ``body``; returns the final answer (or the first error)."""
    status, first = await c.post(V3 + "/register", body, params=params)
    if status != 401:
        return status, first
    return await c.post(V3 + "/register", {**body, "auth": {"type": "m.login.dummy", "session": first["session"]}},
                        params=params)


@pytest_twisted.ensureDeferred
async def test_username_rules(hs):
    c = Client(hs)
    await Client(hs).register("alice")
    for name, code in [("Alice", "M_USER_IN_USE"), ("alice", "M_USER_IN_USE"),
                       ("al ice", "M_INVALID_USERNAME"), ("al:ice", "M_INVALID_USERNAME"),
                       ("élise", "M_INVALID_USERNAME"), ("", "M_INVALID_USERNAME"),
                       ("_bridge", "M_INVALID_USERNAME"), ("12345", "M_INVALID_USERNAME"),
                       ("x" * 250, "M_INVALID_USERNAME")]:
        status, body = await c.post(V3 + "/register", {"username": name, "password": PASSWORD})
        assert (status, body["errcode"]) == (400, code), name
        status, body = await c.get(V3 + "/register/available", params={"username": name or "a b"})
        assert (status, body["errcode"]) == (400, code), name
    assert await c.get(V3 + "/register/available", params={"username": "bob.smith-1=/+"}) == (200, {"available": True})
    assert (await c.get(V3 + "/register/available"))[1]["errcode"] == "M_MISSING_PARAM"
    status, body = await register(c, {"username": "Bob.Smith", "password": PASSWORD})
    assert status == 200 and body["user_id"] == "@bob.smith:test.local"


@pytest_twisted.ensureDeferred
async def test_exclusive_namespace(hs):
    def reserved(user_id, appservice):
        return user_id.startswith("@irc_") and appservice is None
    hs.accounts.exclusive_checks.append(reserved)
    c = Client(hs)
    status, body = await c.post(V3 + "/register", {"username": "irc_alice", "password": PASSWORD})
    assert status == 400 and body["errcode"] == "M_EXCLUSIVE"
    status, body = await c.get(V3 + "/register/available", params={"username": "irc_bob"})
    assert status == 400 and body["errcode"] == "M_EXCLUSIVE"
    # the appservice itself may take it (through the service API)
    user_id = await hs.accounts.register("irc_carol", None, appservice=object(), inhibit_login=True)
    assert user_id == "@irc_carol:test.local"


@pytest_twisted.ensureDeferred
async def test_register_options(hs):
    c = Client(hs)
    status, body = await register(c, {"username": "alice", "password": PASSWORD, "device_id": "MYDEV",
                                       "initial_device_display_name": "Alice's laptop"})
    assert status == 200 and body["device_id"] == "MYDEV" and body["home_server"] == "test.local"
    c.token = body["access_token"]
    assert (await c.get(V3 + "/devices/MYDEV"))[1]["display_name"] == "Alice's laptop"
    # inhibit_login: an account, no token
    status, body = await register(c, {"username": "bob", "password": PASSWORD, "inhibit_login": True})
    assert status == 200 and body == {"user_id": "@bob:test.local", "home_server": "test.local"}
    # no username: one is generated
    status, body = await register(c, {"password": PASSWORD})
    assert status == 200 and body["user_id"].endswith(":test.local")
    # long passwords work (bcrypt sees only 72 bytes; they are pre-hashed)
    long_pw = "ü" * 500
    status, body = await register(c, {"username": "carol", "password": long_pw})
    assert status == 200
    # bcrypt at the configured cost (tests use bcrypt_rounds: 4)
    assert (await hs.users.get_user("@carol:test.local")).password_hash.startswith("$2b$04$")
    for pw, expect in ((long_pw, 200), ("ü" * 499 + "u", 403), ("ü" * 36, 403)):
        status, _ = await c.post(V3 + "/login", {"type": "m.login.password", "user": "carol", "password": pw})
        assert status == expect


@pytest_twisted.ensureDeferred
async def test_register_refusals(hs):
    c = Client(hs)
    status, body = await c.post(V3 + "/register", {"username": "a", "password": PASSWORD}, params={"kind": "guest"})
    assert status == 403 and body["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"
    assert (await c.post(V3 + "/register", {"username": "a"}, params={"kind": "x"}))[0] == 400
    assert (await c.post(V3 + "/register", {"username": "a"}))[1]["errcode"] == "M_MISSING_PARAM"
    assert (await c.post(V3 + "/register", {"username": 5, "password": "x"}))[1]["errcode"] == "M_BAD_JSON"
    assert (await c.post(V3 + "/register", {"username": "a", "password": "x", "inhibit_login": "no"}))[1][
        "errcode"] == "M_BAD_JSON"
    status, body = await c.post(V3 + "/register", {"username": "a", "password": "x",
                                                   "auth": {"type": "m.login.password"}})
    assert status == 400 and body["errcode"] == "M_UNRECOGNIZED"
    status, body = await c.post(V3 + "/register", {"username": "a", "password": "x",
                                                   "auth": {"type": "m.login.dummy", "session": "gone"}})
    assert status == 400
    assert await hs.users.count_users() == 0


@pytest_twisted.ensureDeferred
async def test_registration_disabled(config, tmp_path):
    import support
    from dataclasses import replace
    server = await support.start_homeserver(replace(config, enable_registration=False))
    try:
        status, body = await Client(server).post(V3 + "/register", {"username": "a", "password": "x"})
        assert status == 403 and body["errcode"] == "M_FORBIDDEN"
        # the operator still can, with the shared secret
        body = await threads.deferToThread(register_user, base_url(server), "test-shared-secret",
                                           "admin", "pw", True)
        assert body["user_id"] == "@admin:test.local"
        assert (await server.users.get_user("@admin:test.local")).admin
    finally:
        await server.stop()


async def admin_post(c: Client, username: str, password: str, admin: bool = False,
                     secret: str = "test-shared-secret", **extra) -> tuple[int, dict]:
    status, body = await c.get(ADMIN)
    assert status == 200
    nonce = body["nonce"]
    data = {"nonce": nonce, "username": username, "password": password, "admin": admin,
            "mac": compute_mac(secret, nonce, username, password, admin, extra.get("user_type")), **extra}
    return await c.post(ADMIN, data)


@pytest_twisted.ensureDeferred
async def test_shared_secret_registration(hs):
    c = Client(hs)
    status, body = await admin_post(c, "boss", "pw", admin=True, displayname="The Boss")
    assert status == 200 and body["user_id"] == "@boss:test.local" and body["access_token"]
    assert (await hs.users.get_user("@boss:test.local")).admin
    assert (await c.get(V3 + "/profile/@boss:test.local"))[1] == {"displayname": "The Boss"}
    c.token = body["access_token"]
    assert (await c.get(V3 + "/account/whoami"))[1]["user_id"] == "@boss:test.local"
    status, body = await admin_post(c, "bot", "pw", user_type="bot")
    assert status == 200 and not (await hs.users.get_user("@bot:test.local")).admin
    # taken names
    assert (await admin_post(c, "boss", "pw"))[1]["errcode"] == "M_USER_IN_USE"
    # a wrong MAC (wrong secret, or a field changed after signing) is refused
    status, body = await admin_post(c, "eve", "pw", secret="guess")
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    _, n = await c.get(ADMIN)
    mac = compute_mac("test-shared-secret", n["nonce"], "eve", "pw", False)
    status, _ = await c.post(ADMIN, {"nonce": n["nonce"], "username": "eve", "password": "pw",
                                     "admin": True, "mac": mac})
    assert status == 403
    # nonces are single use, even after a failure
    assert (await c.post(ADMIN, {"nonce": n["nonce"], "username": "eve", "password": "pw",
                                 "admin": False, "mac": mac}))[0] == 400
    # unknown nonce, bad input
    assert (await c.post(ADMIN, {"nonce": "x", "username": "eve", "password": "pw", "mac": "00"}))[0] == 400
    assert (await c.post(ADMIN, {"nonce": "x"}))[1]["errcode"] == "M_MISSING_PARAM"
    assert (await admin_post(c, "eve", ""))[1]["errcode"] == "M_MISSING_PARAM"
    assert (await c.post(ADMIN, {"nonce": "x", "username": "e", "password": "p", "mac": "0",
                                 "user_type": "god"}))[0] == 400
    assert await hs.users.get_user("@eve:test.local") is None


@pytest_twisted.ensureDeferred
async def test_nonces_expire(config):
    from twisted.internet import task

    from homeserver import HomeServer
    from homeserver.util.clock import Clock
    from twisted.internet import reactor

    clock = task.Clock()
    clock.advance(1_000_000)
    server = HomeServer(config, reactor, clock=Clock(clock))
    await server.start()
    try:
        c = Client(server)
        _, n = await c.get(ADMIN)
        clock.advance(61)
        mac = compute_mac("test-shared-secret", n["nonce"], "late", "pw", False)
        status, body = await c.post(ADMIN, {"nonce": n["nonce"], "username": "late", "password": "pw",
                                            "admin": False, "mac": mac})
        assert status == 400 and "nonce" in body["error"].lower()
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_no_shared_secret(config):
    import support
    from dataclasses import replace
    server = await support.start_homeserver(replace(config, registration_shared_secret=None))
    try:
        status, body = await Client(server).get(ADMIN)
        assert status == 400 and "not enabled" in body["error"]
    finally:
        await server.stop()


def _tool(*args: str) -> subprocess.CompletedProcess:
    script = os.path.join(os.path.dirname(sys.executable), "register_new_user")
    return subprocess.run([script, *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest_twisted.ensureDeferred
async def test_register_new_user_script(hs, tmp_path):
    # with -k and the server URL
    r = await threads.deferToThread(_tool, "-k", "test-shared-secret", "-u", "carol", "-p", "pw", "--admin",
                                    base_url(hs))
    assert r.returncode == 0, r.stderr
    assert "@carol:test.local" in r.stdout
    assert (await hs.users.get_user("@carol:test.local")).admin
    # with -c: the URL and secret come from the config file
    cfg = tmp_path / "hs.yaml"
    cfg.write_text(f"server_name: test.local\nregistration_shared_secret: test-shared-secret\n"
                   f"listeners:\n  - bind: 127.0.0.1\n    port: {hs.ports[0]}\n")
    r = await threads.deferToThread(_tool, "-c", str(cfg), "-u", "dave", "-p", "pw", "--no-admin")
    assert r.returncode == 0, r.stderr
    assert not (await hs.users.get_user("@dave:test.local")).admin
    c = Client(hs)
    status, _ = await c.post(V3 + "/login", {"type": "m.login.password", "user": "dave", "password": "pw"})
    assert status == 200
    # failures are one line and a non-zero exit
    r = await threads.deferToThread(_tool, "-k", "wrong", "-u", "erin", "-p", "pw", base_url(hs))
    assert r.returncode == 1 and "HMAC" in r.stderr
    r = await threads.deferToThread(_tool, "-u", "erin", "-p", "pw", base_url(hs))
    assert r.returncode == 2 and "secret" in r.stderr
    r = await threads.deferToThread(_tool, "-k", "x", "-p", "pw", base_url(hs))
    assert r.returncode == 2 and "-u" in r.stderr


def test_password_hasher_cost_and_edge_cases():
    from homeserver.users.passwords import PasswordHasher
    hasher = PasswordHasher(rounds=5)
    stored = hasher.hash_sync("nul\x00inside")
    assert stored.startswith("$2b$05$")
    assert hasher.check_sync("nul\x00inside", stored) and not hasher.check_sync("nul", stored)
    long_a, long_b = "a" * 80, "a" * 79 + "b"  # same first 72 bytes
    assert not hasher.check_sync(long_b, hasher.hash_sync(long_a))
    assert not hasher.check_sync("x", None) and not hasher.check_sync("x", "not a hash")
