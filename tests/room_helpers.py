"""Helpers for room tests: users, rooms and messages over real HTTP."""
from __future__ import annotations

import itertools
from typing import Any

from support import Client

V3 = "/_matrix/client/v3"
V1 = "/_matrix/client/v1"
_txn = itertools.count()


async def users(hs: Any, *names: str) -> list[Client]:
    out = []
    for n in names:
        c = Client(hs)
        await c.register(n)
        out.append(c)
    return out


async def create(c: Client, **body: Any) -> str:
    status, resp = await c.post(f"{V3}/createRoom", body)
    assert status == 200, resp
    return resp["room_id"]


async def send(c: Client, room_id: str, body: str = "hi", txn: str | None = None, etype: str = "m.room.message",
               content: dict[str, Any] | None = None) -> tuple[int, Any]:
    return await c.put(f"{V3}/rooms/{room_id}/send/{etype}/{txn or 't' + str(next(_txn))}",
                       content if content is not None else {"msgtype": "m.text", "body": body})
