"""The daemon as operators run it: a real process, real signals, real HTTP.

These are plain (synchronous) tests: the server is another process, so the
test talks to it with the standard library and waits with timeouts, never
asserting on durations.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
V3 = "/_matrix/client/v3"
START_TIMEOUT_S = 60


class Daemon:
    """``python -m homeserver -c FILE`` in ``cwd``, with its log captured."""

    def __init__(self, cwd: Path, config: str) -> None:
        self.log_path = cwd / "daemon.log"
        self._log = open(self.log_path, "wb")
        env = {**os.environ, "HOMESERVER_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "homeserver", "-c", config], cwd=cwd,
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self.port = self._wait_for_port()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            m = re.search(r"listening on http://[\d.]+:(\d+)", self.log())
            if m:
                return int(m.group(1))
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        self.stop()
        raise AssertionError("daemon did not start listening:\n" + self.log())

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request(method, path, json.dumps(body) if body is not None else None,
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")

    def signal_and_wait(self, sig: int) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=300)
        finally:
            self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def generate(cwd: Path, *extra: str) -> None:
    """What ``make run`` does first: generate a config and signing key under a data dir."""
    r = subprocess.run([sys.executable, "-m", "homeserver", "--generate-config", "--server-name", "localhost",
                        "--config-path", "data/homeserver.yaml", "--data-dir", "data", "--listen-port", "0",
                        *extra], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_make_run_serves_versions_and_sigint_stops(tmp_path):
    generate(tmp_path)
    daemon = Daemon(tmp_path, "data/homeserver.yaml")
    try:
        status, body = daemon.request("GET", "/_matrix/client/versions")
        assert status == 200 and "v1.11" in body["versions"]
        # open registration is off in a generated config
        assert daemon.request("POST", V3 + "/register", {"username": "a", "password": "b"})[0] == 403
    finally:
        code = daemon.signal_and_wait(signal.SIGINT)
    assert code == 0, daemon.log()
    assert "database closed" in daemon.log()


def test_sigterm_lets_the_request_in_flight_finish(tmp_path):
    generate(tmp_path, "--enable-registration")
    config = tmp_path / "data" / "homeserver.yaml"
    # A high bcrypt cost makes registration's password hashing take a while:
    # a genuinely slow request, with nothing artificial in the server.
    # The grace period is long so that a heavily loaded machine still drains it.
    config.write_text(config.read_text().replace("bcrypt_rounds: 12", "bcrypt_rounds: 15")
                      + "\nshutdown_grace_period: 300\n")
    daemon = Daemon(tmp_path, str(config))
    try:
        body = {"username": "alice", "password": "a password"}
        status, first = daemon.request("POST", V3 + "/register", body)
        assert status == 401
        body["auth"] = {"type": "m.login.dummy", "session": first["session"]}
        conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=300)
        conn.request("POST", V3 + "/register", json.dumps(body), {"Content-Type": "application/json"})
        time.sleep(1.0)  # let the server read the request and start hashing (~2 s at cost 15)
        daemon.proc.send_signal(signal.SIGTERM)
        resp = conn.getresponse()
        answer = json.loads(resp.read())
        assert resp.status == 200, answer
        assert answer["user_id"] == "@alice:localhost" and answer["access_token"]
    finally:
        code = daemon.signal_and_wait(signal.SIGTERM) if daemon.proc.poll() is None else daemon.proc.wait()
    assert code == 0, daemon.log()
    assert "1 request(s) in flight" in daemon.log()  # the signal did arrive mid-request
    assert "database closed" in daemon.log()
    # the account was committed before the database closed
    import sqlite3
    db = sqlite3.connect(tmp_path / "data" / "homeserver.db")
    assert db.execute("SELECT user_id FROM users").fetchall() == [("@alice:localhost",)]


def test_register_new_user_against_the_daemon(tmp_path):
    generate(tmp_path)
    config = tmp_path / "data" / "homeserver.yaml"
    daemon = Daemon(tmp_path, str(config))
    try:
        # the generated config says port 0; give the real URL as the argument
        tool = Path(sys.executable).parent / "register_new_user"
        r = subprocess.run([str(tool), "-c", str(config), "-u", "root", "-p", "pw", "--admin",
                            f"http://127.0.0.1:{daemon.port}"], capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr
        status, body = daemon.request("POST", V3 + "/login",
                                      {"type": "m.login.password", "user": "root", "password": "pw"})
        assert status == 200 and body["user_id"] == "@root:localhost"
    finally:
        daemon.signal_and_wait(signal.SIGTERM)


@pytest.mark.parametrize("yaml_text, key", [
    ("server_name: x\nrate_limiting:\n  enabled: maybe\n", "rate_limiting.enabled"),
    ("server_name: x\nbcrypt_rounds: 99\n", "bcrypt_rounds"),
])
def test_bad_config_is_one_line(tmp_path, yaml_text, key):
    (tmp_path / "bad.yaml").write_text(yaml_text)
    r = subprocess.run([sys.executable, "-m", "homeserver", "-c", "bad.yaml"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip() == r.stderr.strip().splitlines()[0]
    assert r.stderr.startswith(f"config error: {key}:")


def test_embedding_example_runs(tmp_path):
    """docs/examples/embed.py is run as is, so the embedding docs cannot rot."""
    r = subprocess.run([sys.executable, str(ROOT / "docs" / "examples" / "embed.py")], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "registered @bot:localhost" in r.stdout
    assert "versions: " in r.stdout


def test_twisted_log_events_reach_the_log():
    """The daemon sends Twisted's log events to ``logging``: an unhandled error in a Deferred is
    logged with its exception (without an observer Twisted buffers it unseen); Twisted's
    informational chatter is not, below DEBUG."""
    script = (
        "import gc, logging\n"
        "logging.basicConfig(level='INFO', format='%(levelname)s %(name)s: %(message)s')\n"
        "from homeserver.cli import bridge_twisted_logs\n"
        "bridge_twisted_logs()\n"
        "from twisted.internet import defer\n"
        "from twisted.logger import Logger\n"
        "d = defer.Deferred()\n"
        "d.errback(ValueError('lost in a Deferred'))\n"
        "del d\n"
        "gc.collect()\n"
        "Logger().info('factory chatter')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert "CRITICAL twisted: Unhandled error in Deferred" in out.stderr
    assert "ValueError: lost in a Deferred" in out.stderr
    assert "factory chatter" not in out.stderr
