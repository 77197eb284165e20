"""A big upload and download through a real server process: its peak RSS stays flat.

The server runs as ``python -m homeserver`` so its memory is its own; Linux's
``VmHWM`` (peak resident set) before and after moving 64 MiB each way must
grow by much less than the file. If the body were buffered in memory even
once, the peak would grow by at least the file size.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import types

import pytest
import pytest_twisted
import treq
import yaml
from twisted.internet import defer, task
from twisted.web.client import FileBodyProducer

import support

SIZE = 64 << 20

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")


def _peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest_twisted.ensureDeferred
async def test_big_transfer_does_not_grow_server_memory(tmp_path):
    from twisted.internet import reactor

    port = _free_port()
    config = {
        "server_name": "mem.test", "data_dir": str(tmp_path / "data"),
        "listeners": [{"bind": "127.0.0.1", "port": port}],
        "enable_registration": True, "bcrypt_rounds": 4, "access_log": False,
        "rate_limiting": {"enabled": False}, "media": {"max_upload_size": "100M"},
    }
    (tmp_path / "hs.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([sys.executable, "-m", "homeserver", "-c", "hs.yaml"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                resp = await treq.get(base + "/_matrix/client/versions")
                await resp.content()
                break
            except Exception:
                await task.deferLater(reactor, 0.05, lambda: None)
        else:
            pytest.fail("server did not start: " + proc.stderr.read().decode()[-500:])
        client = support.Client(types.SimpleNamespace(ports=[port]))  # type: ignore[arg-type]
        await client.register("big")
        # warm up every code path once with a small file, then measure the big one
        await _round_trip(client, base, 2 << 20)
        before = _peak_rss(proc.pid)
        received = await _round_trip(client, base, SIZE)
        grown = _peak_rss(proc.pid) - before
        assert received == SIZE
        assert grown < SIZE // 4, f"server peak RSS grew by {grown >> 20} MiB moving {SIZE >> 20} MiB"
    finally:
        proc.terminate()
        await defer.maybeDeferred(lambda: None)
        proc.wait(timeout=30)


async def _round_trip(client: support.Client, base: str, size: int) -> int:
    with tempfile.TemporaryFile() as f:
        chunk = os.urandom(1 << 20)
        for _ in range(size // len(chunk)):
            f.write(chunk)
        f.seek(0)
        resp = await treq.post(base + "/_matrix/media/v3/upload", data=FileBodyProducer(f),
                               headers={"Authorization": [f"Bearer {client.token}"],
                                        "Content-Type": ["video/mp4"]})
        body = await resp.json()
    assert resp.code == 200, body
    resp = await treq.get(base + "/_matrix/client/v1/media/download/" + body["content_uri"][6:],
                          headers={"Authorization": [f"Bearer {client.token}"]}, unbuffered=True)
    assert resp.code == 200
    received = [0]
    await treq.collect(resp, lambda data: received.__setitem__(0, received[0] + len(data)))
    return received[0]
