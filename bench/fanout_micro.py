"""Per-receiver cost of a sync frame: build + encode for every member of a 500-member group.

Runs a homeserver in-process (SQLite, no sockets) and, after each message,
builds and encodes the incremental /sync body of every member, the way the
WebSocket channel does when a message wakes them. Prints microseconds per
receiver; ``--profile`` prints a cProfile of that loop.

Run: ``python bench/fanout_micro.py [--profile] [--no-shared] [members] [messages]``
(``--no-shared`` builds every body, without :class:`SharedBodies`).
"""
from __future__ import annotations

import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import defer, reactor, task  # noqa: E402

from homeserver import Config, HomeServer  # noqa: E402
from homeserver.rooms.create import CreateRoomRequest  # noqa: E402
from homeserver.sync.builder import SyncRequest  # noqa: E402
from homeserver.sync.filters import parse_filter  # noqa: E402
from homeserver.util import json as jsonutil  # noqa: E402


async def main(profile: bool, use_shared: bool, members: int, messages: int) -> None:
    tmp = tempfile.mkdtemp()
    config = Config.from_dict({
        "server_name": "bench.local", "data_dir": tmp, "database": {"url": f"sqlite:///{tmp}/hs.db"},
        "listeners": [], "rate_limiting": {"enabled": False}, "access_log": False,
    }, base_dir=tmp)
    hs = HomeServer(config, reactor)
    await hs.start(listen=False)
    users = [f"@u{i}:bench.local" for i in range(members)]
    room, _ = await hs.room_creator.create(users[0], CreateRoomRequest(preset="public_chat"))
    for user in users[1:]:
        await hs.membership.join(user, room)
    flt = parse_filter({"room": {"timeline": {"limit": 50}}, "presence": {"types": []}})
    builder = hs.sync_builder
    tokens = {u: hs.notifier.current_token() for u in users}
    prof = cProfile.Profile() if profile else None
    spent = 0.0
    for i in range(messages):
        await hs.event_sender.send(users[i % members], room, "m.room.message",
                                   {"msgtype": "m.text", "body": f"message {i}"})
        upto = hs.notifier.current_token()
        start = time.perf_counter()
        if prof:
            prof.enable()
        for user in users:  # what the WebSocket channel does for each woken member
            shared = builder.shared.lookup(user, "DEV", tokens[user], upto, flt) if use_shared else None
            if shared is None:
                body, _empty = await builder.build(SyncRequest(user, "DEV", tokens[user], flt), upto)
                if use_shared:
                    builder.shared.remember(user, tokens[user], upto, flt, body)
                jsonutil.dumps_bytes({"type": "sync", "body": body})
            else:
                b'{"type":"sync","body":' + shared + b"}"
            tokens[user] = upto
        if prof:
            prof.disable()
        spent += time.perf_counter() - start
    print(f"{members} receivers x {messages} messages: {spent / (members * messages) * 1e6:.1f} µs per receiver"
          f" (build + encode; shared bodies {'on' if use_shared else 'off'})")
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(35)
    await hs.stop()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    task.react(lambda _r: defer.ensureDeferred(main(
        "--profile" in sys.argv, "--no-shared" not in sys.argv, int(args[0]) if args else 500, int(args[1]) if len(args) > 1 else 20)))
