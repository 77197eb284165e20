#!/usr/bin/env python3
"""Federation figures: joining a remote 500-member group, ours against stock Synapse; inbound PDUs per second.

A hosts the group (one of our homeservers); a user of B (ours) joins it
over federation, and with ``--synapse VENV`` so does a user of a stock
Synapse (its own process, from its own venv, set up as in the interop tests
by ``tests/synapse_support.py``). Each join is timed as its client sees
it: ``POST /join`` to the joining server until its answer. Both joining
servers have A's keys and a connection to it already (a warm-up join of a
small room first). Our two servers run in this process (embedding API);
federation is real TLS on loopback in insecure mode (self-signed
certificates); SQLite everywhere (``--postgres-a``/``--postgres-b`` for ours).
Each join also reports when the joiner first lists the whole membership:
later than its answer for a partial-state ("faster") join, which Synapse
asks for and gets from another Synapse. ``--reverse`` adds the other way
round: a group on Synapse joined by ours and by a second Synapse.

    .venv/bin/python bench/federation_bench.py [--members 500] [--rounds 3] [--synapse /tmp/synapse-venv]
        [--reverse] [--pdus 2000]
"""
from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from twisted.internet import asyncioreactor  # noqa: E402

asyncioreactor.install()
from twisted.internet import defer, reactor, threads  # noqa: E402
from twisted.internet.task import deferLater  # noqa: E402

from fedsupport import free_port, start_federating  # noqa: E402
from homeserver import HomeServer  # noqa: E402
from homeserver.rooms.create import CreateRoomRequest  # noqa: E402
from support import Client  # noqa: E402


async def start(tmp: str, name: str, db: str | None) -> HomeServer:
    """One of our homeservers, federating on a free loopback port (as in the tests).

    The group member cap is raised: both joiners come on top of the group's members.
    """
    return await start_federating(pathlib.Path(tmp), db or f"sqlite:///{tmp}/{name}.db", name,
                                  sections={"groups": {"max_members": 10_000}})


async def build_group(a: HomeServer, members: int) -> str:
    owner = f"@owner:{a.server_name}"
    room_id, _alias = await a.room_creator.create(owner, CreateRoomRequest(preset="public_chat"))
    for i in range(members - 1):
        await a.membership.join(f"@m{i}:{a.server_name}", room_id)
    return room_id


async def timed_join(client: Client, room_id: str, via: str, members: int = 0) -> tuple[float, float]:
    """Seconds until ``POST /join`` answers, and until the joiner lists all ``members`` (+ itself).

    The two differ for partial-state ("faster") joins, which answer before the member list arrives.
    """
    t0 = time.perf_counter()
    code, resp = await client.post(f"/_matrix/client/v3/join/{room_id}", {}, params={"server_name": via})
    joined = time.perf_counter() - t0
    assert code == 200, (code, resp)
    for _ in range(600):
        code, resp = await client.get(f"/_matrix/client/v3/rooms/{room_id}/joined_members")
        if code == 200 and len(resp["joined"]) >= members + 1:
            return joined, time.perf_counter() - t0
        await deferLater(reactor, 0.05, lambda: None)
    raise AssertionError(f"the joiner never listed {members} members: {code} {resp}")


async def build_group_on_synapse(syn: Any, members: int, tag: str) -> str:
    """A public group on Synapse with ``members`` registered, joined users (10 at a time)."""
    owner = Client(syn.base)
    await owner.register(f"owner{tag}")
    code, resp = await owner.post("/_matrix/client/v3/createRoom", {"preset": "public_chat"})
    assert code == 200, resp
    room_id = resp["room_id"]

    async def member(i: int) -> None:
        c = Client(syn.base)
        await c.register(f"m{tag}x{i}")
        code, resp = await c.post(f"/_matrix/client/v3/join/{room_id}", {})
        assert code == 200, resp

    for n in range(0, members - 1, 10):
        await defer.gatherResults([defer.ensureDeferred(member(i)) for i in range(n, min(n + 10, members - 1))])
    return room_id


async def reverse(args: argparse.Namespace, tmp: str, host: Any, ours: Client) -> None:
    """The other way round: the group on Synapse, joined by ours (B) and by a second Synapse."""
    from synapse_support import Synapse

    second = Synapse(os.path.join(tmp, "synapse2"), free_port(), free_port())
    await threads.deferToThread(second.configure, True)
    await threads.deferToThread(second.start)
    try:
        theirs = Client(second.base)
        await theirs.register("joiner")
        joiners = {"ours": ours, "synapse": theirs}
        warm = await build_group_on_synapse(host, 2, "warm")
        for client in joiners.values():
            await timed_join(client, warm, host.server_name, 2)
        t0 = time.perf_counter()
        room_id = await build_group_on_synapse(host, args.members, "g")
        print(f"reverse: built a {args.members}-member group on Synapse in {time.perf_counter() - t0:.1f}s")
        times = {}
        for name, client in joiners.items():
            times[name] = await timed_join(client, room_id, host.server_name, args.members)
            print(f"  {name}: joined the group on Synapse in {times[name][0]:.2f}s, "
                  f"all members listed at {times[name][1]:.2f}s")
        print(f"reverse, Synapse/ours: join answered {times['synapse'][0] / times['ours'][0]:.2f}x, "
              f"members listed {times['synapse'][1] / times['ours'][1]:.2f}x")
    finally:
        await threads.deferToThread(second.stop)


async def main(args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp(prefix="fedbench-")
    a = await start(tmp, "a", args.postgres_a)
    b = await start(tmp, "b", args.postgres_b)
    syn = None
    try:
        ours = Client(b)
        await ours.register("joiner")
        joiners = {"ours": ours}
        if args.synapse:
            os.environ["SYNAPSE_VENV"] = args.synapse
            from synapse_support import Synapse

            syn = Synapse(os.path.join(tmp, "synapse"), free_port(), free_port())
            await threads.deferToThread(syn.configure, True)
            await threads.deferToThread(syn.start)
            theirs = Client(syn.base)
            await theirs.register("joiner")
            joiners["synapse"] = theirs
        # Warm-up: keys fetched, connections open, on both joining servers.
        warm = await build_group(a, 2)
        for client in joiners.values():
            await timed_join(client, warm, a.server_name, 2)
        times: dict[str, list[float]] = {name: [] for name in joiners}
        for r in range(args.rounds):
            t0 = time.perf_counter()
            room_id = await build_group(a, args.members)
            print(f"round {r + 1}: built a {args.members}-member group on A in {time.perf_counter() - t0:.1f}s")
            order = list(joiners) if r % 2 == 0 else list(reversed(joiners))
            for name in order:
                seconds, full = await timed_join(joiners[name], room_id, a.server_name, args.members)
                times[name].append(seconds)
                print(f"  {name}: joined over federation in {seconds:.2f}s, all members listed at {full:.2f}s",
                      flush=True)
        for name, values in times.items():
            print(f"remote join of a {args.members}-member group, {name}: median {statistics.median(values):.2f}s "
                  f"(min {min(values):.2f}s, max {max(values):.2f}s, {len(values)} rounds)")
        if "synapse" in times:
            ratio = statistics.median(times["synapse"]) / statistics.median(times["ours"])
            print(f"Synapse/ours: {ratio:.2f}x")
        if syn is not None and args.reverse:
            await reverse(args, tmp, syn, ours)
        if not args.pdus:
            return
        room_b = await b.room_states.get(room_id)
        sender = ours.user_id
        events = []
        for i in range(args.pdus):
            ev = b.event_builder.build(room_b, "m.room.message", sender, {"msgtype": "m.text", "body": f"m{i}"})
            room_b.reserve(ev)
            events.append(ev)
        room_b.reset_pending()
        pdus = [{k: v for k, v in e.get_pdu_json().items() if k != "unsigned"} for e in events]
        t0 = time.perf_counter()
        for n in range(0, len(pdus), 50):
            resp = await b.federation_client.put_json(
                a.server_name, f"/_matrix/federation/v1/send/bench{n}",
                {"origin": b.server_name, "pdus": pdus[n:n + 50], "edus": []})
            errors = [r for r in resp["pdus"].values() if r.get("error")]
            assert not errors, errors[:1]
        elapsed = time.perf_counter() - t0
        print(f"inbound: {len(pdus)} PDUs in {len(pdus) // 50} transactions of 50: "
              f"{len(pdus) / elapsed:.0f} PDUs/s ({len(pdus) / 50 / elapsed:.1f} txn/s)")
    finally:
        await a.stop()
        await b.stop()
        if syn is not None:
            await threads.deferToThread(syn.stop)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--members", type=int, default=500)
    p.add_argument("--pdus", type=int, default=2000, help="inbound PDUs to time afterwards (0: skip)")
    p.add_argument("--rounds", type=int, default=3, help="groups built and joined (medians are reported)")
    p.add_argument("--synapse", metavar="VENV", help="also time a stock Synapse from this venv joining each group")
    p.add_argument("--reverse", action="store_true",
                   help="with --synapse: also time ours and a second Synapse joining a group hosted on Synapse")
    p.add_argument("--postgres-a")
    p.add_argument("--postgres-b")
    args = p.parse_args()

    def run() -> None:
        d = defer.ensureDeferred(main(args))
        d.addErrback(lambda f: print(f.getTraceback(), file=sys.stderr))
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(run)
    reactor.run()
