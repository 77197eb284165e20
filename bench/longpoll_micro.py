"""Server time per /sync long-poll cycle: a 500-member group, everyone long-polling over loopback.

Runs a homeserver in-process (SQLite) on a loopback port and, in the same
reactor, one bare keep-alive HTTP/1.1 client per member that re-polls as
soon as an answer arrives. Messages are sent in-process one after another,
each once every client has had the previous one. Prints the process's CPU
microseconds per delivery (response written, answer read, next request
parsed and parked: the whole cycle); the clients' share is small and counted
in. ``--profile`` prints a cProfile of the sending phase. ``--websocket``
holds one im.qun WebSocket per member instead (a bare frame reader), so the
cycle is: wake, frame written, frame read.

Run: ``python bench/longpoll_micro.py [--profile] [--websocket] [members] [messages]``
"""
from __future__ import annotations

import cProfile
import json
import os
import pstats
import re
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from homeserver.cli import import_reactor  # noqa: E402

reactor = import_reactor(False)  # the daemon's reactor

from twisted.internet import defer, protocol  # noqa: E402

from homeserver import Config, HomeServer  # noqa: E402
from homeserver.rooms.create import CreateRoomRequest  # noqa: E402
from realtime_bench import upgraded_frames  # noqa: E402

FILTER = quote(json.dumps({"room": {"timeline": {"limit": 50}}, "presence": {"types": []}}))
_NEXT = re.compile(rb'"next_batch":"([^"]+)"')


class Poller(protocol.Protocol):
    """Re-polls /sync at once; counts answers. Reads the token with a regex, not a JSON parser."""

    def __init__(self, token: str, since: str, on_answer) -> None:
        self.token, self.since, self.on_answer = token, since, on_answer
        self.buf = b""

    def connectionMade(self) -> None:  # noqa: N802
        self.poll()

    def poll(self) -> None:
        self.transport.write(f"GET /_matrix/client/v3/sync?filter={FILTER}&timeout=30000&since={self.since} "
                             f"HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {self.token}\r\n\r\n".encode())

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        length = int(re.search(rb"Content-Length: (\d+)", self.buf[:end], re.I).group(1))
        if len(self.buf) < end + 4 + length:
            return
        body, self.buf = self.buf[end + 4:end + 4 + length], self.buf[end + 4 + length:]
        self.since = _NEXT.search(body).group(1).decode()
        self.poll()
        self.on_answer()


class Socket(protocol.Protocol):
    """An im.qun WebSocket reader: upgrades, then counts sync frames (the initial one too)."""

    def __init__(self, token: str, on_answer) -> None:
        self.token, self.on_answer = token, on_answer
        self.buf = b""
        self.upgraded = False

    def connectionMade(self) -> None:  # noqa: N802
        self.transport.write(f"GET /_matrix/client/unstable/im.qun/ws?filter={FILTER} HTTP/1.1\r\nHost: x\r\n"
                             f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                             f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                             f"Authorization: Bearer {self.token}\r\n\r\n".encode())

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.upgraded, frames, self.buf = upgraded_frames(self.buf + data, self.upgraded)
        for opcode, _payload in frames:
            if opcode == 1:
                self.on_answer()


async def main(profile: bool, members: int, messages: int, websocket: bool = False) -> None:
    tmp = tempfile.mkdtemp()
    config = Config.from_dict({
        "server_name": "bench.local", "data_dir": tmp, "database": {"url": f"sqlite:///{tmp}/hs.db"},
        "listeners": [{"bind": "127.0.0.1", "port": 0}], "rate_limiting": {"enabled": False},
        "access_log": False, "enable_registration": True,
    }, base_dir=tmp)
    hs = HomeServer(config, reactor)
    await hs.start()
    port = hs.ports[0]
    users = [f"@u{i}:bench.local" for i in range(members)]
    tokens = [(await hs.accounts.register(f"u{i}", None, device_id="DEV")).access_token for i in range(members)]
    room, _ = await hs.room_creator.create(users[0], CreateRoomRequest(preset="public_chat"))
    for user in users[1:]:
        await hs.membership.join(user, room)
    since = str(hs.notifier.current_token())
    answered = [0]
    waiter: list[defer.Deferred] = []

    def on_answer() -> None:
        answered[0] += 1
        if waiter and answered[0] >= members:
            waiter.pop().callback(None)

    if websocket:
        factory_for = lambda tok: protocol.ClientFactory.forProtocol(lambda: Socket(tok, on_answer))  # noqa: E731
    else:
        factory_for = lambda tok: protocol.ClientFactory.forProtocol(lambda: Poller(tok, since, on_answer))  # noqa: E731
    for tok in tokens:
        reactor.connectTCP("127.0.0.1", port, factory_for(tok))
    # Wait until every client is parked: no answers for a second (coming online changes presence).
    last = -1
    while answered[0] < members or answered[0] != last:
        last = answered[0]
        d: defer.Deferred = defer.Deferred()
        reactor.callLater(1, d.callback, None)
        await d
    print(f"{answered[0]} answers before sending (presence of {members} members coming online)")
    prof = cProfile.Profile() if profile else None
    cpu = time.process_time()
    if prof:
        prof.enable()
    for i in range(messages):
        answered[0] = 0
        done: defer.Deferred = defer.Deferred()
        waiter.append(done)
        await hs.event_sender.send(users[0], room, "m.room.message", {"msgtype": "m.text", "body": f"m{i}"})
        await done
    if prof:
        prof.disable()
    cpu = time.process_time() - cpu
    kind = "WebSockets" if websocket else "long-polls"
    print(f"{members} {kind}, {messages} messages: {cpu / messages / members * 1e6:.1f} µs of CPU per "
          f"delivery (whole process: send, wake, respond, client{'' if websocket else ', next request'})")
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(35)
    os._exit(0)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    defer.ensureDeferred(main("--profile" in sys.argv, int(args[0]) if args else 500,
                              int(args[1]) if len(args) > 1 else 40, "--websocket" in sys.argv)).addErrback(
        lambda f: (f.printTraceback(file=sys.stdout), sys.stdout.flush(), os._exit(1)))
    reactor.run()
