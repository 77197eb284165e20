#!/usr/bin/env python3
"""Issue-10 load scenarios, runnable against any homeserver (public client APIs only).

Takes ``--hs A [--vs B]`` like the shared yardstick, so bench/vs_synapse.py
runs both servers in one go::

    python bench/vs_synapse.py --db sqlite --bench bench/scenarios.py fanout500 --members 500 --rate 50
    python bench/vs_synapse.py --only ours --bench bench/scenarios.py ws500
    python bench/vs_synapse.py --db postgres --bench bench/scenarios.py initsync300 history10k idle1000

Scenarios:

- ``fanout500``: a group of ``--members`` (500) users, every member but the
  sender in a /sync long-poll loop, one sender posting ``--rate`` (50) msg/s
  for ``--seconds``; reports delivery p50/p99/max and the lost count.
- ``ws500``: the same over this server's im.qun WebSocket (Synapse has no
  WebSocket sync; the scenario reports ``unsupported`` there).
- ``initsync300``: one user in ``--sync-groups`` (300) groups with 10 messages
  each; initial /sync time (fresh filter each time, so no response cache).
- ``history10k``: ``--history`` (10,000) messages in one group, then
  /messages paging backwards 100 at a time; events/s.
- ``idle1000``: ``--idle-users`` (1,000) users in groups of ten, each holding
  one idle long-poll; the runner prints the server's RSS afterwards.

Latency is arrival at the client minus the moment before the sender's PUT,
so it includes the send path, fan-out and the client's own JSON decoding.
The client is one asyncio process; on a loaded 2-core machine it is itself
a bottleneck (see docs/performance.md).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid

import aiohttp

V3 = "/_matrix/client/v3"
FILTER = json.dumps({"room": {"timeline": {"limit": 50}, "state": {"lazy_load_members": True}},
                     "presence": {"types": []}, "account_data": {"types": []}})


def pct(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))]


class C:
    """A minimal client: access token, JSON requests."""

    def __init__(self, session, base):
        self.s, self.base, self.token, self.user_id = session, base.rstrip("/"), None, None

    async def req(self, method, path, body=None, params=None, timeout=300):
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.s.request(method, self.base + path, json=body, params=params, headers=headers,
                                  timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            data = await r.json(content_type=None)
            if r.status >= 400:
                raise RuntimeError(f"{method} {path} -> {r.status} {data}")
            return data

    async def register(self, name):
        body = {"username": name, "password": "bench-password-1"}
        async with self.s.post(self.base + V3 + "/register", json=body) as r:
            first = await r.json(content_type=None)
        if r.status == 401:
            body["auth"] = {"type": "m.login.dummy", "session": first.get("session")}
            first = await self.req("POST", V3 + "/register", body)
        elif r.status != 200:
            raise RuntimeError(f"register -> {r.status} {first}")
        self.token, self.user_id = first["access_token"], first["user_id"]
        return self

    async def send(self, room, content):
        data = await self.req("PUT", f"{V3}/rooms/{room}/send/m.room.message/{uuid.uuid4().hex}", content)
        return data["event_id"]

    async def sync(self, since=None, timeout_ms=0, flt=FILTER):
        params = {"timeout": str(timeout_ms), "filter": flt}
        if since:
            params["since"] = since
        return await self.req("GET", V3 + "/sync", params=params, timeout=timeout_ms / 1000 + 300)


async def users(session, base, n, concurrency=8):
    sem, run = asyncio.Semaphore(concurrency), uuid.uuid4().hex[:6]

    async def one(i):
        async with sem:
            return await C(session, base).register(f"b{run}{i}")

    return await asyncio.gather(*(one(i) for i in range(n)))


async def group(owner, members, name="bench", concurrency=8):
    room = (await owner.req("POST", V3 + "/createRoom",
                            {"name": name, "preset": "private_chat",
                             "invite": [m.user_id for m in members]}))["room_id"]
    sem = asyncio.Semaphore(concurrency)

    async def join(c):
        async with sem:
            await c.req("POST", f"{V3}/join/{room}", {})

    await asyncio.gather(*(join(c) for c in members))
    return room


def arrivals(body, room, now, seen, got):
    for ev in body.get("rooms", {}).get("join", {}).get(room, {}).get("timeline", {}).get("events", []):
        sent = ev.get("content", {}).get("bench_sent")
        eid = ev.get("event_id")
        if ev.get("type") == "m.room.message" and sent is not None and eid not in got:
            got.add(eid)
            seen.append(now - sent / 1_000_000)


async def drive(owner, room, a, receivers_ready):
    await receivers_ready
    sent = 0
    start = time.monotonic()
    while time.monotonic() - start < a.seconds:
        t = time.monotonic()
        await owner.send(room, {"msgtype": "m.text", "body": f"m{sent}", "bench_sent": int(t * 1_000_000)})
        sent += 1
        await asyncio.sleep(max(0.0, start + sent / a.rate - time.monotonic()))
    return sent, time.monotonic() - start


async def settle(lat, expected, secs=30):
    deadline = time.monotonic() + secs
    while len(lat) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.2)


def summary(a, n_recv, sent, elapsed, lat):
    expected = sent * n_recv
    return {"members": a.members, "receivers": n_recv, "messages": sent,
            "send_rate": round(sent / elapsed, 1), "deliveries": len(lat), "lost": expected - len(lat),
            "deliver_ms_p50": round(pct(lat, 50) * 1000, 1) if lat else None,
            "deliver_ms_p99": round(pct(lat, 99) * 1000, 1) if lat else None,
            "deliver_ms_max": round(max(lat) * 1000, 1) if lat else None}


async def sc_fanout500(session, base, a):
    owner, *rest = await users(session, base, a.members)
    room = await group(owner, rest)
    lat, stop = [], asyncio.Event()
    ready = asyncio.get_running_loop().create_future()
    started = 0

    async def poll(c):
        nonlocal started
        since = (await c.sync())["next_batch"]
        started += 1
        if started == len(rest) and not ready.done():
            ready.set_result(None)
        got = set()
        while not stop.is_set():
            data = await c.sync(since=since, timeout_ms=30000)
            arrivals(data, room, time.monotonic(), lat, got)
            since = data["next_batch"]

    tasks = [asyncio.create_task(poll(c)) for c in rest]
    sent, elapsed = await drive(owner, room, a, ready)
    await settle(lat, sent * len(rest))
    stop.set()
    # wake the pollers so they return
    await owner.send(room, {"msgtype": "m.text", "body": "stop"})
    await asyncio.wait(tasks, timeout=35)
    for t in tasks:
        t.cancel()
    return summary(a, len(rest), sent, elapsed, lat)


async def sc_ws500(session, base, a):
    probe = C(session, base)
    async with session.get(base + "/_matrix/client/unstable/im.qun/ws") as r:
        if r.status == 404:
            return {"unsupported": "no WebSocket sync endpoint"}
    owner, *rest = await users(session, base, a.members)
    room = await group(owner, rest)
    del probe
    lat, stop = [], asyncio.Event()
    ready = asyncio.get_running_loop().create_future()
    started = 0
    url = base.replace("http", "ws", 1) + "/_matrix/client/unstable/im.qun/ws"

    async def listen(c):
        nonlocal started
        got = set()
        async with session.ws_connect(url, params={"filter": FILTER},
                                      headers={"Authorization": f"Bearer {c.token}"},
                                      heartbeat=None, max_msg_size=0) as ws:
            await ws.receive()  # the initial frame
            started += 1
            if started == len(rest) and not ready.done():
                ready.set_result(None)
            while not stop.is_set():
                try:
                    msg = await asyncio.wait_for(ws.receive(), 1)
                except asyncio.TimeoutError:
                    continue
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                frame = json.loads(msg.data)
                if frame.get("type") == "sync":
                    arrivals(frame["body"], room, time.monotonic(), lat, got)

    tasks = [asyncio.create_task(listen(c)) for c in rest]
    sent, elapsed = await drive(owner, room, a, ready)
    await settle(lat, sent * len(rest))
    stop.set()
    await asyncio.wait(tasks, timeout=10)
    return summary(a, len(rest), sent, elapsed, lat)


async def sc_initsync300(session, base, a):
    me, other = await users(session, base, 2)
    sem = asyncio.Semaphore(4)

    async def one(g):
        async with sem:
            room = (await other.req("POST", V3 + "/createRoom",
                                    {"name": f"i{g}", "preset": "private_chat", "invite": [me.user_id]}))["room_id"]
            await me.req("POST", f"{V3}/join/{room}", {})
            for i in range(10):
                await other.send(room, {"msgtype": "m.text", "body": f"x{i}"})

    await asyncio.gather(*(one(g) for g in range(a.sync_groups)))
    times, n = [], 0
    for _ in range(3):
        flt = json.dumps({"account_data": {"not_types": [uuid.uuid4().hex]}})
        t = time.perf_counter()
        data = await me.sync(flt=flt)
        times.append(time.perf_counter() - t)
        n = len(data.get("rooms", {}).get("join", {}))
    return {"groups": n, "initial_sync_ms_p50": round(statistics.median(times) * 1000, 1)}


async def sc_history10k(session, base, a):
    owner, other = await users(session, base, 2)
    room = await group(owner, [other])
    sem = asyncio.Semaphore(8)

    async def put(i):
        async with sem:
            await owner.send(room, {"msgtype": "m.text", "body": f"h{i}"})

    await asyncio.gather(*(put(i) for i in range(a.history)))
    since = (await owner.sync())["next_batch"]
    t = time.perf_counter()
    token, pages, events = since, 0, 0
    while True:
        data = await owner.req("GET", f"{V3}/rooms/{room}/messages",
                               params={"dir": "b", "from": token, "limit": "100"})
        pages += 1
        events += len(data.get("chunk", []))
        if not data.get("chunk") or "end" not in data:
            break
        token = data["end"]
    dt = time.perf_counter() - t
    return {"history_events": events, "pages": pages, "events_per_s": round(events / dt, 1)}


async def sc_idle1000(session, base, a):
    people = await users(session, base, a.idle_users)
    for g in range(0, len(people), 10):
        await group(people[g], people[g + 1:g + 10], name=f"idle{g}")
    stop = asyncio.Event()

    async def idle(c):
        since = (await c.sync())["next_batch"]
        while not stop.is_set():
            try:
                data = await c.sync(since=since, timeout_ms=30000)
                since = data["next_batch"]
            except Exception:
                return

    tasks = [asyncio.create_task(idle(c)) for c in people]
    await asyncio.sleep(a.idle_seconds)
    stop.set()
    held = sum(1 for t in tasks if not t.done())
    for t in tasks:
        t.cancel()
    return {"users": len(people), "groups": len(people) // 10, "idle_longpolls_held": held}


SCENARIOS = {"fanout500": sc_fanout500, "ws500": sc_ws500, "initsync300": sc_initsync300,
             "history10k": sc_history10k, "idle1000": sc_idle1000}


async def run_one(name, base, a):
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        t = time.perf_counter()
        out = await SCENARIOS[name](session, base, a)
        out.update({"scenario": name, "hs": base, "wall_s": round(time.perf_counter() - t, 1)})
        return out


def ratio(a, b):
    return {k: round(b[k] / v, 3) for k, v in a.items()
            if isinstance(v, (int, float)) and isinstance(b.get(k), (int, float)) and v}


async def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hs", required=True)
    p.add_argument("--vs")
    p.add_argument("--members", type=int, default=500)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--sync-groups", type=int, default=300)
    p.add_argument("--history", type=int, default=10000)
    p.add_argument("--idle-users", type=int, default=1000)
    p.add_argument("--idle-seconds", type=float, default=10.0)
    p.add_argument("scenario", nargs="+", choices=list(SCENARIOS))
    a = p.parse_args()
    for name in a.scenario:
        ra = await run_one(name, a.hs, a)
        print(json.dumps(ra), flush=True)
        if a.vs:
            rb = await run_one(name, a.vs, a)
            print(json.dumps(rb), flush=True)
            print(json.dumps({"scenario": name, "ratio_b_over_a": ratio(ra, rb)}), flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
