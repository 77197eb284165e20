"""Realtime delivery benchmark: a 500-member group, messages at a fixed rate, every delivery timed.

    .venv/bin/python bench/realtime_bench.py longpoll  [members] [rate] [seconds]
    .venv/bin/python bench/realtime_bench.py websocket [members] [rate] [seconds]
    .venv/bin/python bench/realtime_bench.py idle      [connections]

Starts ``python -m homeserver`` (SQLite, throwaway data dir) on a free loopback
port, registers ``members`` users, creates one group they all join, then:

- longpoll: each member runs a /sync long-poll loop (timeout 30 s, the
  next request sent as soon as the previous answer arrives);
- websocket: each member holds one im.qun WebSocket;

while one sender posts ``rate`` messages per second for ``seconds``. Each
message carries its send time (CLOCK_MONOTONIC, shared by both processes);
each receiver records when it arrived. Prints deliveries received/expected
and the latency percentiles. ``idle`` opens that many idle WebSockets and
reports the server's RSS. The receivers run in ``BENCH_CLIENT_PROCS`` (1)
asyncio processes (aiohttp), the sender in the parent; with one process the
client's own decoding of 500 frames per message is most of the spread.
``BENCH_RAW_HTTP=1`` / ``BENCH_RAW_WS=1`` swap aiohttp for minimal readers
(keep-alive HTTP/1.1, unmasked WebSocket frames, parsed in the protocol
callback) that cost the client less; with ``pip install -e '.[bench]'`` they
parse with orjson, and the sender and receivers run on uvloop. The client
shares the machine with the server, so what it costs shows up as latency;
``BENCH_PIN=1`` keeps them apart (the server alone on CPU 0).
"""
from __future__ import annotations

import asyncio
import base64
import json
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

import aiohttp
import yaml

try:  # the lean clients parse with orjson when it is there (pip install -e '.[bench]'): a frame costs
    from orjson import loads as fast_loads  # ~20 µs with json on this VM, 500 frames a message
except ImportError:  # pragma: no cover
    fast_loads = json.loads

V3 = "/_matrix/client/v3"


async def body_counts(base: str) -> dict[str, float]:
    """The server's shared/built incremental body counters (docs/sync.md, "Shared bodies")."""
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/metrics") as r:
            text = await r.text()
    return {how: float(line.rsplit(" ", 1)[1]) for how in ("shared", "built") for line in text.splitlines()
            if line.startswith(f'homeserver_sync_bodies_total{{how="{how}"}}')}


def cpu_seconds(pid: int, system: bool | None = None) -> float:
    """User + system CPU time of a process so far (only one of them with ``system`` False / True)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    user, sys_ = int(fields[11]), int(fields[12])
    return (sys_ if system else user if system is False else user + sys_) / os.sysconf("SC_CLK_TCK")


def rss(pid: int, field: str = "VmRSS:") -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))


async def register(session: aiohttp.ClientSession, base: str, name: str) -> str:
    body: dict = {"username": name, "password": "bench password"}
    async with session.post(base + V3 + "/register", json=body) as r:
        body["auth"] = {"type": "m.login.dummy", "session": (await r.json())["session"]}
    async with session.post(base + V3 + "/register", json=body) as r:
        return (await r.json())["access_token"]


async def setup(base: str, members: int) -> tuple[str, list[str]]:
    conn = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=conn) as session:
        tokens = await asyncio.gather(*(register(session, base, f"u{i}") for i in range(members)))
        owner = {"Authorization": f"Bearer {tokens[0]}"}
        async with session.post(base + V3 + "/createRoom", json={"preset": "public_chat", "name": "bench"},
                                headers=owner) as r:
            room = (await r.json())["room_id"]

        async def join(tok: str) -> None:
            async with session.post(f"{base}{V3}/rooms/{room}/join", json={},
                                    headers={"Authorization": f"Bearer {tok}"}) as r:
                assert r.status == 200, await r.text()

        sem = asyncio.Semaphore(16)

        async def bounded(tok: str) -> None:
            async with sem:
                await join(tok)

        await asyncio.gather(*(bounded(t) for t in tokens[1:]))
        return room, tokens


def arrivals(body: dict, room: str, now: float, lat: list[tuple[float, str]], seen: set) -> None:
    for e in body.get("rooms", {}).get("join", {}).get(room, {}).get("timeline", {}).get("events", []):
        sent = e.get("content", {}).get("bench_sent")
        if sent is not None:
            lat.append((now - sent / 1e6, e["event_id"]))
            seen.add(e["event_id"])


async def sender(base: str, token: str, room: str, rate: float, seconds: float) -> int:
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {token}"}
        n = int(rate * seconds)
        start = time.monotonic()
        for i in range(n):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            body = {"msgtype": "m.text", "body": f"message {i}", "bench_sent": time.monotonic_ns() // 1000}
            async with session.put(f"{base}{V3}/rooms/{room}/send/m.room.message/b{i}", json=body,
                                   headers=headers) as r:
                assert r.status == 200, await r.text()
        return n


async def longpoll_member(session, base, token, room, lat, stop: asyncio.Event, ready) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    filt = json.dumps({"room": {"timeline": {"limit": 50}}, "presence": {"types": []}})
    async with session.get(f"{base}{V3}/sync", params={"filter": filt, "timeout": "0"}, headers=headers) as r:
        since = (await r.json())["next_batch"]
    ready()
    seen: set = set()
    while not stop.is_set():
        try:
            async with session.get(f"{base}{V3}/sync", headers=headers,
                                   params={"since": since, "timeout": "30000", "filter": filt}) as r:
                body = await r.json()
                if r.status != 200:
                    raise RuntimeError(f"/sync answered {r.status}: {body}")
        except asyncio.CancelledError:
            break
        arrivals(body, room, time.monotonic(), lat, seen)
        since = body["next_batch"]
    return len(seen)


class _RawReader(asyncio.Protocol):
    """Shared part of the lean clients: a connection whose bytes are parsed in ``data_received``.

    No stream reader and no task per connection: the frames or answers are
    cut out of the buffer in the callback itself, which is most of what a
    client costs per delivery (``BENCH_RAW_HTTP=1`` / ``BENCH_RAW_WS=1``).
    """

    def __init__(self, room: str, lat: list, ready) -> None:
        self.room, self.lat, self.ready = room, lat, ready
        self.seen: set = set()
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def got(self, body: dict, now: float) -> None:
        arrivals(body, self.room, now, self.lat, self.seen)


class _RawPoller(_RawReader):
    def __init__(self, host: str, port: int, token: str, room: str, lat: list, ready) -> None:
        super().__init__(room, lat, ready)
        filt = urllib.parse.quote(json.dumps({"room": {"timeline": {"limit": 50}}, "presence": {"types": []}}))
        self.head = f"GET {V3}/sync?filter={filt}&".encode()
        self.tail = f" HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        self.since: str | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        transport.write(self.head + b"timeout=0" + self.tail)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            self.buf = buf
            return
        length = 0
        for line in buf[:end].split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if len(buf) < end + 4 + length:
            self.buf = buf
            return
        status, body = int(buf[9:12]), fast_loads(buf[end + 4:end + 4 + length])
        self.buf = buf[end + 4 + length:]
        if status != 200:
            raise RuntimeError(f"/sync answered {status}: {body}")
        now = time.monotonic()
        if self.since is None:
            self.ready()
        else:
            self.got(body, now)
        self.since = body["next_batch"]
        self.transport.write(self.head + f"timeout=30000&since={urllib.parse.quote(self.since)}".encode()
                             + self.tail)


def cut_frames(buf: bytes, pos: int = 0) -> tuple[list[tuple[int, bytes]], int]:
    """The whole frames in ``buf`` from ``pos`` as (opcode, payload), and where the rest begins.

    Server frames are unmasked and unfragmented (docs/websocket.md), so only
    the 2-10 byte header is read.
    """
    frames = []
    size = len(buf)
    while size - pos >= 2:
        n, start = buf[pos + 1] & 0x7F, pos + 2
        if n == 126:
            n, start = int.from_bytes(buf[pos + 2:pos + 4], "big"), pos + 4
        elif n == 127:
            n, start = int.from_bytes(buf[pos + 2:pos + 10], "big"), pos + 10
        if start > size or start + n > size:  # the header or the payload is still incomplete
            break
        frames.append((buf[pos] & 0x0F, buf[start:start + n]))
        pos = start + n
    return frames, pos


def upgraded_frames(buf: bytes, upgraded: bool) -> tuple[bool, list[tuple[int, bytes]], bytes]:
    """A lean WebSocket reader's buffer: (upgraded yet, whole frames, the bytes left for later).

    Until the upgrade, the buffer starts with the server's ``101`` answer, whose head is skipped.
    """
    pos = 0
    if not upgraded:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return False, [], buf
        assert buf.startswith(b"HTTP/1.1 101"), buf[:100]
        pos = end + 4
    frames, pos = cut_frames(buf, pos)
    return True, frames, buf[pos:] if pos < len(buf) else b""


class _RawSocket(_RawReader):
    """An im.qun WebSocket reader (frames cut by :func:`cut_frames`)."""

    def __init__(self, host: str, port: int, token: str, room: str, lat: list, ready) -> None:
        super().__init__(room, lat, ready)
        filt = urllib.parse.quote(json.dumps({"room": {"timeline": {"limit": 50}}, "presence": {"types": []}}))
        key = base64.b64encode(os.urandom(16)).decode()
        self.request = (f"GET /_matrix/client/unstable/im.qun/ws?filter={filt} HTTP/1.1\r\n"
                        f"Host: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                        f"Authorization: Bearer {token}\r\n\r\n").encode()
        self.upgraded = False
        self.initial = True

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.upgraded, frames, self.buf = upgraded_frames(self.buf + data if self.buf else data, self.upgraded)
        now = time.monotonic()
        for opcode, payload in frames:
            if opcode == 9:  # ping: answer with a masked pong
                mask = os.urandom(4)
                self.transport.write(bytes((0x8A, 0x80 | len(payload))) + mask
                                     + bytes(c ^ mask[i % 4] for i, c in enumerate(payload)))
            elif opcode == 8:
                self.transport.close()
            elif self.initial:
                self.initial = False
                self.ready()
            else:
                frame = fast_loads(payload)
                if frame["type"] == "sync":
                    self.got(frame["body"], now)


async def raw_member(cls, base, token, room, lat, stop: asyncio.Event, ready) -> int:
    host, port = base.split("//", 1)[1].split(":")
    loop = asyncio.get_running_loop()
    _transport, proto = await loop.create_connection(lambda: cls(host, int(port), token, room, lat, ready),
                                                     host, int(port))
    try:
        await asyncio.wait([asyncio.ensure_future(stop.wait()), proto.closed], return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        pass
    finally:
        proto.transport.close()
    return len(proto.seen)


async def raw_longpoll_member(session, base, token, room, lat, stop, ready) -> int:
    """``longpoll_member`` over a bare keep-alive HTTP/1.1 connection (``BENCH_RAW_HTTP=1``)."""
    return await raw_member(_RawPoller, base, token, room, lat, stop, ready)


async def ws_member(session, base, token, room, lat, stop: asyncio.Event, ready) -> int:
    url = base.replace("http", "ws", 1) + "/_matrix/client/unstable/im.qun/ws"
    filt = json.dumps({"room": {"timeline": {"limit": 50}}, "presence": {"types": []}})
    seen: set = set()
    async with session.ws_connect(url, params={"filter": filt}, headers={"Authorization": f"Bearer {token}"},
                                  max_msg_size=0) as ws:
        await ws.receive()  # the initial frame
        ready()
        while not stop.is_set():
            try:
                msg = await ws.receive()
            except asyncio.CancelledError:
                break
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            frame = json.loads(msg.data)
            if frame["type"] == "sync":
                arrivals(frame["body"], room, time.monotonic(), lat, seen)
    return len(seen)


async def raw_ws_member(session, base, token, room, lat, stop, ready) -> int:
    """``ws_member`` with a minimal WebSocket reader instead of aiohttp's (``BENCH_RAW_WS=1``)."""
    return await raw_member(_RawSocket, base, token, room, lat, stop, ready)


def receivers(base: str, mode: str, room: str, tokens: list[str], results: "mp.Queue", stop: "mp.Event") -> None:
    """A client process: one long-poll loop or WebSocket per token; reports its arrivals."""
    async def main() -> None:
        lat: list[tuple[float, str]] = []
        stop_here = asyncio.Event()
        ready_count = 0

        def ready() -> None:
            nonlocal ready_count
            ready_count += 1
            if ready_count == len(tokens):
                results.put(("ready", None))

        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=None)) as session:
            if mode == "longpoll":
                fn = raw_longpoll_member if os.environ.get("BENCH_RAW_HTTP") else longpoll_member
            else:
                fn = raw_ws_member if os.environ.get("BENCH_RAW_WS") else ws_member
            tasks = [asyncio.ensure_future(fn(session, base, t, room, lat, stop_here, ready)) for t in tokens]
            cpu = sum(os.times()[:2])
            await asyncio.get_running_loop().run_in_executor(None, stop.wait)
            cpu = sum(os.times()[:2]) - cpu
            stop_here.set()
            for t in tasks:
                t.cancel()
            counts = [r for r in await asyncio.gather(*tasks, return_exceptions=True) if isinstance(r, int)]
        results.put(("done", (lat, sum(counts), cpu)))

    run(main())


def run(coro) -> object:
    """Run on uvloop where installed (pip install -e '.[bench]'): libuv's loop costs less per wake-up."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    return uvloop.run(coro)


async def delivery(base: str, pid: int, mode: str, members: int, rate: float, seconds: float,
                   procs: int) -> None:
    t0 = time.monotonic()
    room, tokens = await setup(base, members)
    print(f"setup: {members} users joined in {time.monotonic() - t0:.1f}s")
    ctx = mp.get_context("fork")
    results, stop = ctx.Queue(), ctx.Event()
    workers = [ctx.Process(target=receivers, args=(base, mode, room, tokens[i::procs], results, stop))
               for i in range(procs)]
    for w in workers:
        w.start()
    loop = asyncio.get_running_loop()
    for _ in workers:
        kind, _payload = await loop.run_in_executor(None, results.get, True, 300)
        assert kind == "ready"
    await asyncio.sleep(1)
    spy = None
    if os.environ.get("BENCH_PYSPY"):  # e.g. BENCH_PYSPY=/tmp/profile.txt: sample the sending phase
        spy = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "py-spy"), "record",
                                "-f", "raw", "-o", os.environ["BENCH_PYSPY"], "--pid", str(pid)] + os.environ.get("BENCH_PYSPY_ARGS", "").split(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await asyncio.sleep(1)
    bodies = await body_counts(base)
    server_cpu, client_cpu, wall = cpu_seconds(pid), sum(os.times()[:2]), time.monotonic()
    server_sys = cpu_seconds(pid, system=True)
    sent = await sender(base, tokens[0], room, rate, seconds)
    await asyncio.sleep(2)  # let the last deliveries land
    bodies = {k: v - bodies.get(k, 0) for k, v in (await body_counts(base)).items()}
    if spy is not None:
        spy.send_signal(2)  # py-spy writes its profile on SIGINT
        spy.wait()
    wall = time.monotonic() - wall
    server_cpu = cpu_seconds(pid) - server_cpu
    server_sys = cpu_seconds(pid, system=True) - server_sys
    client_cpu = sum(os.times()[:2]) - client_cpu
    stop.set()
    lat: list[tuple[float, str]] = []
    distinct = 0
    for _ in workers:
        kind, (got_lat, got_distinct, cpu) = await loop.run_in_executor(None, results.get, True, 120)
        lat += got_lat
        distinct += got_distinct
        client_cpu += cpu
    for w in workers:
        w.join(30)
    expected = sent * members
    got = len(lat)
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for x, event_id in lat:
        first[event_id] = min(first.get(event_id, x), x)
        last[event_id] = max(last.get(event_id, x), x)
    ms = sorted(x * 1000 for x, _ in lat)

    def pct(p: float, values: list[float] | None = None) -> float:
        values = ms if values is None else values
        return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")

    firsts = sorted(x * 1000 for x in first.values())
    spreads = sorted((last[k] - first[k]) * 1000 for k in first)

    print(f"{mode}: {members} members, {rate:g} msg/s for {seconds:g}s: {got}/{expected} deliveries "
          f"({distinct} distinct), latency ms p50 {pct(0.5):.1f} p90 {pct(0.9):.1f} "
          f"p99 {pct(0.99):.1f} max {ms[-1] if ms else float('nan'):.1f} mean {statistics.mean(ms):.1f}")
    # The first receiver of a message bounds the send path (PUT, persist, wake);
    # first to last is the fan-out's spread over the receivers.
    print(f"per message: first delivery p50 {pct(0.5, firsts):.1f} p99 {pct(0.99, firsts):.1f} ms; "
          f"first-to-last spread p50 {pct(0.5, spreads):.1f} p99 {pct(0.99, spreads):.1f} ms")
    print(f"CPU while sending: server {100 * server_cpu / wall:.0f}% of a core "
          f"({100 * server_sys / wall:.0f}% in the kernel), "
          f"client {100 * client_cpu / wall:.0f}% of a core ({procs} receiving process(es)); "
          f"bodies shared {bodies.get('shared', 0):.0f}, built {bodies.get('built', 0):.0f}")


async def idle(base: str, pid: int, connections: int) -> None:
    tokens = (await setup(base, 50))[1]
    before = rss(pid)
    url = base.replace("http", "ws", 1) + "/_matrix/client/unstable/im.qun/ws"
    conn = aiohttp.TCPConnector(limit=0)
    sockets = []
    async with aiohttp.ClientSession(connector=conn) as session:
        sem = asyncio.Semaphore(100)

        async def one(i: int) -> None:
            async with sem:
                ws = await session.ws_connect(url, headers={"Authorization": f"Bearer {tokens[i % len(tokens)]}"},
                                              heartbeat=None, autoping=True)
                await ws.receive()
                sockets.append(ws)

        await asyncio.gather(*(one(i) for i in range(connections)))
        await asyncio.sleep(2)
        after = rss(pid)
        print(f"idle: {len(sockets)} WebSockets open; server RSS {before >> 20} MiB -> {after >> 20} MiB "
              f"({(after - before) / len(sockets) / 1024:.1f} KiB per connection)")
        for ws in sockets:
            await ws.close()


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "longpoll"
    with tempfile.TemporaryDirectory() as tmp:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        config = {"server_name": "bench.test", "data_dir": os.path.join(tmp, "data"),
                  "listeners": [{"bind": "127.0.0.1", "port": port}], "enable_registration": True,
                  "bcrypt_rounds": 4, "access_log": False, "rate_limiting": {"enabled": False},
                  "metrics": {"enabled": True},
                  "database": {"url": os.environ.get("BENCH_DATABASE_URL", f"sqlite:///{tmp}/hs.db")}}
        with open(os.path.join(tmp, "hs.yaml"), "w") as f:
            yaml.safe_dump(config, f)
        cmd = [sys.executable, "-m", "homeserver", "-c", "hs.yaml"]
        log = open(os.environ.get("BENCH_SERVER_LOG", os.devnull), "wb")
        proc = subprocess.Popen(cmd, cwd=tmp, stderr=log, stdout=log)
        if os.environ.get("BENCH_PIN"):  # the server alone on CPU 0, the sender and receivers on the others
            cpus = sorted(os.sched_getaffinity(0))
            if len(cpus) > 1:
                os.sched_setaffinity(proc.pid, cpus[:1])
                os.sched_setaffinity(0, cpus[1:])  # the receiving processes, started later, inherit it
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(400):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            if mode == "idle":
                run(idle(base, proc.pid, int(sys.argv[2]) if len(sys.argv) > 2 else 10_000))
            else:
                members = int(sys.argv[2]) if len(sys.argv) > 2 else 500
                rate = float(sys.argv[3]) if len(sys.argv) > 3 else 20
                seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 15
                procs = int(os.environ.get("BENCH_CLIENT_PROCS", "1"))
                run(delivery(base, proc.pid, mode, members, rate, seconds, procs))
            print(f"server peak RSS {rss(proc.pid, 'VmHWM:') >> 20} MiB")
        finally:
            proc.terminate()
            proc.wait(timeout=60)


if __name__ == "__main__":
    main()
