"""Upload and download one big file through a real server process; report speed and peak RSS.

    .venv/bin/python bench/media_stream.py [size_mib]   (default 200)

Starts ``python -m homeserver`` on a free loopback port with a throwaway
SQLite data dir, registers a user, POSTs the file from disk (streamed by
http.client), GETs it back (read in 1 MiB chunks and discarded), and prints
MiB/s each way and how much the server's peak resident set (VmHWM) grew.
"""
from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import yaml


def peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def request(port: int, method: str, path: str, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request(method, path, body=body, headers=headers or {})
    return conn, conn.getresponse()


def main() -> None:
    size = int(sys.argv[1] if len(sys.argv) > 1 else 200) << 20
    with tempfile.TemporaryDirectory() as tmp:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        config = {"server_name": "bench.test", "data_dir": os.path.join(tmp, "data"),
                  "listeners": [{"bind": "127.0.0.1", "port": port}], "enable_registration": True,
                  "bcrypt_rounds": 4, "access_log": False, "rate_limiting": {"enabled": False},
                  "media": {"max_upload_size": size + (1 << 20)}}
        with open(os.path.join(tmp, "hs.yaml"), "w") as f:
            yaml.safe_dump(config, f)
        proc = subprocess.Popen([sys.executable, "-m", "homeserver", "-c", "hs.yaml"], cwd=tmp,
                                stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):
                try:
                    request(port, "GET", "/_matrix/client/versions")[1].read()
                    break
                except OSError:
                    time.sleep(0.05)
            body = {"username": "bench", "password": "bench password"}
            _c, r = request(port, "POST", "/_matrix/client/v3/register", json.dumps(body))
            body["auth"] = {"type": "m.login.dummy", "session": json.loads(r.read())["session"]}
            _c, r = request(port, "POST", "/_matrix/client/v3/register", json.dumps(body))
            token = json.loads(r.read())["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            path = os.path.join(tmp, "blob")
            with open(path, "wb") as f:
                chunk = os.urandom(1 << 20)
                for _ in range(size >> 20):
                    f.write(chunk)
            before = peak_rss(proc.pid)
            start = time.perf_counter()
            with open(path, "rb") as f:
                _c, r = request(port, "POST", "/_matrix/media/v3/upload", f,
                                {**auth, "Content-Type": "video/mp4", "Content-Length": str(size)})
                uri = json.loads(r.read())["content_uri"]
            up = time.perf_counter() - start
            start = time.perf_counter()
            _c, r = request(port, "GET", "/_matrix/client/v1/media/download/" + uri[6:], headers=auth)
            got = 0
            while data := r.read(1 << 20):
                got += len(data)
            down = time.perf_counter() - start
            assert got == size, got
            mib = size / (1 << 20)
            print(f"{mib:.0f} MiB: upload {mib / up:.0f} MiB/s, download {mib / down:.0f} MiB/s, "
                  f"server peak RSS {before >> 20} MiB -> +{(peak_rss(proc.pid) - before) >> 10} KiB")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
