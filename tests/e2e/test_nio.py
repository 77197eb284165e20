"""A stock client, matrix-nio, against a real loopback port."""
from __future__ import annotations

import pytest_twisted
from nio import (AsyncClient, LoginResponse, LogoutResponse, ProfileGetDisplayNameResponse,
                 ProfileSetDisplayNameResponse, RegisterResponse, WhoamiResponse)

from support import aio, base_url


@pytest_twisted.ensureDeferred
async def test_nio_register_login_whoami_displayname_logout(hs):
    client = AsyncClient(base_url(hs), "alice")
    try:
        reg = await aio(client.register("alice", "a good password", device_name="nio test"))
        assert isinstance(reg, RegisterResponse), reg
        assert reg.user_id == "@alice:test.local"

        client.user = "@alice:test.local"
        login = await aio(client.login("a good password", device_name="nio phone"))
        assert isinstance(login, LoginResponse), login
        assert login.device_id and client.access_token

        me = await aio(client.whoami())
        assert isinstance(me, WhoamiResponse), me
        assert me.user_id == "@alice:test.local" and me.device_id == login.device_id

        resp = await aio(client.set_displayname("Alice from nio"))
        assert isinstance(resp, ProfileSetDisplayNameResponse), resp
        got = await aio(client.get_displayname())
        assert isinstance(got, ProfileGetDisplayNameResponse) and got.displayname == "Alice from nio"

        out = await aio(client.logout())
        assert isinstance(out, LogoutResponse), out
        assert await hs.users.get_device("@alice:test.local", login.device_id) is None
    finally:
        await aio(client.close())
