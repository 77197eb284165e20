"""An acknowledged event survives kill -9 (a real process, SQLite and PostgreSQL).

Start ``python -m homeserver -c FILE`` as a subprocess, send messages (many
at once, so group commit batches them), SIGKILL the process right after the
last 200, restart it, and check every acknowledged event is there.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import types

import pytest_twisted
import treq
import yaml
from twisted.internet import defer, task

from room_helpers import V3
from support import Client

N = 60
CONCURRENCY = 12


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_up(base: str, proc: subprocess.Popen) -> None:
    from twisted.internet import reactor
    for _ in range(300):
        assert proc.poll() is None, "homeserver exited during start-up"
        try:
            resp = await treq.get(base + "/_matrix/client/versions")
            await resp.content()
            if resp.code == 200:
                return
        except Exception:
            pass
        await task.deferLater(reactor, 0.1, lambda: None)
    raise AssertionError("homeserver did not start")


def start(config_path: str, tmp_path) -> subprocess.Popen:
    log = open(tmp_path / "hs.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "homeserver", "-c", str(config_path)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp_path))


@pytest_twisted.ensureDeferred
async def test_acknowledged_events_survive_kill_9(database_url, tmp_path):
    port = free_port()
    config_path = tmp_path / "homeserver.yaml"
    config_path.write_text(yaml.safe_dump({
        "server_name": "durable.local",
        "data_dir": str(tmp_path / "data"),
        "database": {"url": database_url, "pool_size": 4},
        "listeners": [{"bind": "127.0.0.1", "port": port}],
        "enable_registration": True,
        "bcrypt_rounds": 4,
        "rate_limiting": {"enabled": False},
    }))
    proc = start(config_path, tmp_path)
    try:
        c = Client(types.SimpleNamespace(ports=[port]))
        await wait_up(c.base, proc)
        await c.register("alice")
        status, body = await c.post(f"{V3}/createRoom", {"name": "durable"})
        assert status == 200
        room = body["room_id"]
        acked: list[str] = []
        for start_i in range(0, N, CONCURRENCY):
            results = await defer.gatherResults([
                defer.ensureDeferred(c.put(f"{V3}/rooms/{room}/send/m.room.message/t{i}",
                                           {"msgtype": "m.text", "body": f"msg {i}"}))
                for i in range(start_i, min(N, start_i + CONCURRENCY))])
            for status, resp in results:
                assert status == 200, resp
                acked.append(resp["event_id"])
        os.kill(proc.pid, signal.SIGKILL)  # right after the last 200
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    proc = start(config_path, tmp_path)
    try:
        await wait_up(c.base, proc)
        status, page = await c.get(f"{V3}/rooms/{room}/messages", params={"dir": "b", "limit": "1000"})
        assert status == 200
        found = [e["event_id"] for e in page["chunk"] if e["type"] == "m.room.message"]
        assert set(acked) <= set(found)
        assert len(found) == len(set(found)) == N
        # the room still works: same txn ID is still idempotent, new sends go through
        status, again = await c.put(f"{V3}/rooms/{room}/send/m.room.message/t0", {"msgtype": "m.text", "body": "x"})
        assert status == 200 and again["event_id"] in acked
        status, _ = await c.put(f"{V3}/rooms/{room}/send/m.room.message/after", {"msgtype": "m.text", "body": "y"})
        assert status == 200
    finally:
        proc.terminate()
        proc.wait()
