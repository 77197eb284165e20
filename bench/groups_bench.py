"""Costs the groups add: the policy checks on the send path, QR rendering, distance.

Run: ``python bench/groups_bench.py``. Plain ``time.perf_counter`` loops;
figures go to docs/performance.md ("Groups").
"""
from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, Callable

from homeserver.core.room_versions import get_room_version
from homeserver.groups.config import GroupsConfig
from homeserver.groups.face_to_face import distance_m
from homeserver.groups.policy import GroupPolicy, mentions_room
from homeserver.groups.qr import render_qr_png
from homeserver.rooms.state_cache import RoomState


def ev(etype: str, sender: str, content: dict[str, Any], state_key: str | None = None) -> Any:
    return SimpleNamespace(type=etype, sender=sender, content=content, state_key=state_key,
                           membership=content.get("membership"), is_state=lambda: state_key is not None)


def timeit(name: str, fn: Callable[[], Any], n: int) -> None:
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    print(f"{name}: {(time.perf_counter() - t) / n * 1e6:.2f} µs")


def main() -> None:
    room = RoomState("!r:x", get_room_version("10"))
    members = {f"@u{i}:x": ev("m.room.member", f"@u{i}:x", {"membership": "join"}, f"@u{i}:x") for i in range(500)}
    pl = ev("m.room.power_levels", "@u0:x", {"users": {"@u0:x": 100}, "notifications": {"room": 50}}, "")
    room.set_state({**{("m.room.member", k): v for k, v in members.items()}, ("m.room.power_levels", ""): pl})
    for i in range(20):  # queued, not yet committed joins
        room.pending_state[("m.room.member", f"@p{i}:x")] = ev("m.room.member", f"@p{i}:x", {"membership": "join"})
    room.pending_count = 20
    policy = GroupPolicy(GroupsConfig(max_members=10_000), clock=None)  # type: ignore[arg-type]
    message = ev("m.room.message", "@u5:x", {"msgtype": "m.text", "body": "lunch at noon? " * 60})
    join = ev("m.room.member", "@new:x", {"membership": "join"}, "@new:x")
    timeit("check_event, 900-byte message, 500 members", lambda: policy.check_event(room, message), 20_000)
    timeit("check_event, join, 500 members + 20 queued", lambda: policy.check_event(room, join), 20_000)
    timeit("mentions_room, 900-byte body", lambda: mentions_room(message.content), 50_000)
    uri = "https://matrix.example.org/_matrix/client/unstable/im.qun/invite_code/7K3M9QXH2RTD"
    timeit("render_qr_png", lambda: render_qr_png(uri), 200)
    timeit("distance_m", lambda: distance_m(39.9, 116.4, 39.91, 116.41), 100_000)


if __name__ == "__main__":
    main()
