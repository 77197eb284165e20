"""WeChat-style join approval across servers: a remote knock, approved, becomes an invite and a join."""
from __future__ import annotations

from urllib.parse import quote

import pytest_twisted

from fedsupport import eventually
from support import Client

V3 = "/_matrix/client/v3"
P = "/_matrix/client/unstable/im.qun"


@pytest_twisted.ensureDeferred
async def test_remote_join_request_approved_and_denied(servers):
    a, b = servers
    owner, bob, carol = Client(a), Client(b), Client(b)
    await owner.register("owner")
    await bob.register("bob")
    await carol.register("carol")
    code, resp = await owner.post(f"{V3}/createRoom", {"preset": "private_chat", "name": "Approval"})
    room = resp["room_id"]
    code, resp = await owner.put(f"{P}/rooms/{quote(room)}/settings", {"join_approval": True})
    assert code == 200, resp
    for user in (bob, carol):
        code, resp = await user.post(f"{V3}/knock/{quote(room)}", {"reason": "let me in"},
                                     params={"server_name": a.server_name})
        assert code == 200, resp

    async def both_pending():
        code, resp = await owner.get(f"{P}/rooms/{quote(room)}/join_requests")
        return code == 200 and {r["user_id"] for r in resp["requests"]} == {bob.user_id, carol.user_id}
    await eventually(both_pending)

    # Approving a remote requester invites them (their server learns of it); they then join.
    code, resp = await owner.post(f"{P}/rooms/{quote(room)}/approve", {"user_id": bob.user_id})
    assert code == 200, resp

    async def bob_invited():
        code, resp = await bob.get(f"{V3}/sync", params={"timeout": "0"})
        return room in resp.get("rooms", {}).get("invite", {})
    await eventually(bob_invited)
    code, resp = await bob.post(f"{V3}/join/{quote(room)}", {}, params={"server_name": a.server_name})
    assert code == 200, resp

    async def bob_joined_on_a():
        return bob.user_id in (await a.room_states.get(room)).joined
    await eventually(bob_joined_on_a)

    # Denying turns the other request down.
    code, resp = await owner.post(f"{P}/rooms/{quote(room)}/deny", {"user_id": carol.user_id, "reason": "no"})
    assert code == 200, resp
    room_a = await a.room_states.get(room)
    assert room_a.membership(carol.user_id) == "leave"
