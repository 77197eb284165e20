#!/usr/bin/env python3
"""Repeat one measured step of the yardstick many times, for profiling and for A/B runs.

The shared yardstick (mxbench.py) measures an initial sync three times and a
history walk once: too few samples for a profiler or for comparing two
builds. This script sets up the same data through the same client code, then
repeats only the measured part. It takes ``--hs`` like the yardstick, so
``bench/vs_synapse.py --bench bench/repeat.py`` runs it:

    PYTHONPATH=$PWD BENCH_PYSPY=/tmp/ours.txt python bench/vs_synapse.py --db postgres --only ours \\
        --bench bench/repeat.py initsync --repeat 100
    python bench/vs_synapse.py --db sqlite --only ours --bench bench/repeat.py history --repeat 30
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.environ.get("MXBENCH", "/work/shared/bench/mxbench.py")))
import aiohttp  # noqa: E402
from mxbench import group_of, make_users  # noqa: E402


async def initsync(s: aiohttp.ClientSession, a: argparse.Namespace) -> None:
    me, other = await make_users(s, a.hs, 2, "i")
    for g in range(a.groups):
        room = await other.create_group(f"i{g}", [me.user_id])
        await me.join(room)
        for i in range(10):
            await other.send_text(room, f"x {i}")
    times = []
    for _ in range(a.repeat):
        flt = json.dumps({"account_data": {"not_types": [uuid.uuid4().hex]}})  # no response cache
        t = time.perf_counter()
        data = await me.sync(filter_=flt)
        times.append(time.perf_counter() - t)
    print(json.dumps({"scenario": "initsync", "groups": len(data["rooms"]["join"]), "repeat": a.repeat,
                      "ms_p50": round(statistics.median(times) * 1000, 1), "ms_min": round(min(times) * 1000, 1)}))


async def history(s: aiohttp.ClientSession, a: argparse.Namespace) -> None:
    owner, _rest, room = await group_of(s, a.hs, 2)
    for i in range(a.history):
        await owner.send_text(room, f"h {i}")
    since = (await owner.sync())["next_batch"]
    rates = []
    for _ in range(a.repeat):
        token, events, t = since, 0, time.perf_counter()
        while True:
            data = await owner.req("GET", f"/_matrix/client/v3/rooms/{room}/messages",
                                   params={"dir": "b", "from": token, "limit": "100"})
            events += len(data.get("chunk", []))
            if not data.get("chunk") or "end" not in data:
                break
            token = data["end"]
        rates.append(events / (time.perf_counter() - t))
    print(json.dumps({"scenario": "history", "events": events, "repeat": a.repeat,
                      "events_per_s_p50": round(statistics.median(rates)), "events_per_s_max": round(max(rates))}))


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hs", required=True)
    p.add_argument("scenario", choices=["initsync", "history"])
    p.add_argument("--repeat", type=int, default=100)
    p.add_argument("--groups", type=int, default=30)
    p.add_argument("--history", type=int, default=1000)
    a = p.parse_args()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        await (initsync if a.scenario == "initsync" else history)(s, a)


if __name__ == "__main__":
    asyncio.run(main())
