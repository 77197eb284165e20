"""Profiles: display name and avatar URL, and the change hook for rooms."""
from __future__ import annotations

from urllib.parse import quote

import pytest_twisted

from support import Client

V3 = "/_matrix/client/v3"
ALICE = "@alice:test.local"


def p(user_id: str, field: str = "") -> str:
    return f"{V3}/profile/{quote(user_id)}" + (f"/{field}" if field else "")


@pytest_twisted.ensureDeferred
async def test_get_and_set(hs):
    c = Client(hs)
    await c.register("alice")
    changes = []

    async def hook(user_id, field, value):
        changes.append((user_id, field, value))
    hs.profiles.on_profile_change.append(hook)

    # the display name starts as the localpart; no avatar
    assert await c.get(p(ALICE)) == (200, {"displayname": "alice"})
    assert (await c.get(p(ALICE, "avatar_url")))[0] == 404
    assert await c.put(p(ALICE, "displayname"), {"displayname": "Alice ✨"}) == (200, {})
    assert await c.put(p(ALICE, "avatar_url"), {"avatar_url": "mxc://test.local/abc"}) == (200, {})
    # readable without a token
    anon = Client(hs)
    assert await anon.get(p(ALICE)) == (200, {"displayname": "Alice ✨", "avatar_url": "mxc://test.local/abc"})
    assert await anon.get(p(ALICE, "displayname")) == (200, {"displayname": "Alice ✨"})
    assert changes == [(ALICE, "displayname", "Alice ✨"), (ALICE, "avatar_url", "mxc://test.local/abc")]
    # null and DELETE clear a field
    assert (await c.put(p(ALICE, "displayname"), {"displayname": None}))[0] == 200
    assert (await c.request("DELETE", p(ALICE, "avatar_url")))[0] == 200
    assert await anon.get(p(ALICE)) == (200, {})
    assert changes[-2:] == [(ALICE, "displayname", None), (ALICE, "avatar_url", None)]


@pytest_twisted.ensureDeferred
async def test_a_failing_hook_does_not_undo_the_change(hs):
    c = Client(hs)
    await c.register("alice")

    async def broken(user_id, field, value):
        raise RuntimeError("boom")
    hs.profiles.on_profile_change.append(broken)
    assert (await c.put(p(ALICE, "displayname"), {"displayname": "A"}))[0] == 200
    assert (await c.get(p(ALICE, "displayname")))[1] == {"displayname": "A"}


@pytest_twisted.ensureDeferred
async def test_errors(hs):
    c = Client(hs)
    await c.register("alice")
    bob = Client(hs)
    await bob.register("bob")
    # 403 for someone else's profile, nothing changes
    status, body = await bob.put(p(ALICE, "displayname"), {"displayname": "pwned"})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    assert (await bob.request("DELETE", p(ALICE, "displayname")))[0] == 403
    assert (await c.get(p(ALICE, "displayname")))[1] == {"displayname": "alice"}
    # unknown users and fields, bad IDs
    assert (await c.get(p("@nobody:test.local")))[1]["errcode"] == "M_NOT_FOUND"
    assert (await c.get(p("@nobody:test.local", "displayname")))[0] == 404
    assert (await c.get(p("@x:elsewhere.org")))[0] == 404
    assert (await c.get(p(ALICE, "m.tz")))[0] == 404
    assert (await c.get(p("not-a-user")))[1]["errcode"] == "M_INVALID_PARAM"
    assert (await c.put(p(ALICE, "m.tz"), {"m.tz": "x"}))[0] == 400
    # bounded lengths and types
    status, body = await c.put(p(ALICE, "displayname"), {"displayname": "x" * 257})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    assert (await c.put(p(ALICE, "avatar_url"), {"avatar_url": "mxc://" + "x" * 1000}))[0] == 400
    assert (await c.put(p(ALICE, "displayname"), {"displayname": 5}))[1]["errcode"] == "M_BAD_JSON"
    assert (await c.put(p(ALICE, "displayname"), {}))[1]["errcode"] == "M_MISSING_PARAM"
    assert (await c.request("PUT", p(ALICE, "displayname"), raw=b"nope"))[1]["errcode"] == "M_NOT_JSON"
    # a PUT needs a token
    assert (await Client(hs).put(p(ALICE, "displayname"), {"displayname": "x"}))[1]["errcode"] == "M_MISSING_TOKEN"
    assert (await c.get(p(ALICE, "displayname")))[1] == {"displayname": "alice"}
