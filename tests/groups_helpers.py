"""Helpers for the groups tests: a homeserver on a hand-driven clock, and API shortcuts."""
from __future__ import annotations

from typing import Any

from twisted.internet import defer, task

import support
from homeserver import HomeServer
from homeserver.util.clock import Clock
from room_helpers import V3

P = "/_matrix/client/unstable/im.qun"
#: A fixed start time for hand-driven clocks (2027-01-15).
T0 = 1_800_000_000.0


async def start_clocked(config: Any, at: float = T0) -> tuple[HomeServer, task.Clock]:
    """A homeserver whose Clock is a ``task.Clock`` (network and database still real)."""
    from twisted.internet import reactor

    fake = task.Clock()
    fake.advance(at)
    hs = HomeServer(config, reactor, Clock(fake))
    await hs.start()
    return hs, fake


async def settle(rounds: int = 3) -> None:
    """Let database threads and reactor callbacks run (no timing is asserted)."""
    from twisted.internet import reactor

    for _ in range(rounds):
        await task.deferLater(reactor, 0.02, lambda: None)


async def wait_for(predicate: Any, attempts: int = 200) -> None:
    """Poll an async predicate until it holds (bounded number of attempts)."""
    for _ in range(attempts):
        if await predicate():
            return
        await settle(1)
    raise AssertionError("condition never held")


async def power_levels(c: support.Client, room: str) -> dict[str, Any]:
    status, pl = await c.get(f"{V3}/rooms/{room}/state/m.room.power_levels")
    assert status == 200, pl
    return pl


async def membership(c: support.Client, room: str, user: str) -> str | None:
    status, ev = await c.get(f"{V3}/rooms/{room}/state/m.room.member/{user}")
    return ev.get("membership") if status == 200 else None


async def gather(*coros: Any) -> list[Any]:
    return list(await defer.gatherResults([defer.ensureDeferred(c) for c in coros], consumeErrors=True))
