#!/usr/bin/env python3
"""Federation figures: joining a remote 500-member group, and inbound transactions per second.

Two homeservers in one process (embedding API), real TLS on loopback,
insecure mode, SQLite (or PostgreSQL with --postgres URL).

    .venv/bin/python bench/federation_bench.py [--members 500] [--pdus 2000]
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from twisted.internet import asyncioreactor  # noqa: E402

asyncioreactor.install()
from twisted.internet import defer, reactor  # noqa: E402

from homeserver import Config, HomeServer  # noqa: E402
from homeserver.rooms.create import CreateRoomRequest  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start(tmp: str, name: str, db: str | None) -> HomeServer:
    port = free_port()
    config = Config.from_dict({
        "server_name": f"localhost:{port}", "data_dir": os.path.join(tmp, name),
        "database": {"url": db or f"sqlite:///{tmp}/{name}.db"},
        "listeners": [{"bind": "127.0.0.1", "port": 0}], "enable_registration": True,
        "bcrypt_rounds": 4, "rate_limiting": {"enabled": False}, "access_log": False,
        "federation": {"port": port, "bind": "127.0.0.1", "insecure": True},
    })
    hs = HomeServer(config, reactor)
    await hs.start()
    return hs


async def main(args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp(prefix="fedbench-")
    a = await start(tmp, "a", args.postgres_a)
    b = await start(tmp, "b", args.postgres_b)
    try:
        owner = f"@owner:{a.server_name}"
        room_id, _alias = await a.room_creator.create(owner, CreateRoomRequest(preset="public_chat"))
        t0 = time.perf_counter()
        for i in range(args.members - 1):
            await a.membership.join(f"@m{i}:{a.server_name}", room_id)
        print(f"built a {args.members}-member group on A in {time.perf_counter() - t0:.1f}s")
        await b.keyring.get_verify_key(a.server_name, a.own_keys.key_id)  # as on a warm server
        t0 = time.perf_counter()
        await b.membership.join(f"@joiner:{b.server_name}", room_id, [a.server_name])
        join_s = time.perf_counter() - t0
        print(f"remote join of a {args.members}-member group: {join_s:.2f}s")

        room_b = await b.room_states.get(room_id)
        sender = f"@joiner:{b.server_name}"
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


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--members", type=int, default=500)
    p.add_argument("--pdus", type=int, default=2000)
    p.add_argument("--postgres-a")
    p.add_argument("--postgres-b")
    args = p.parse_args()

    def run() -> None:
        d = defer.ensureDeferred(main(args))
        d.addErrback(lambda f: f.printTraceback())
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(run)
    reactor.run()
