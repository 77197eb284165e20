"""Stock Synapse as a federation peer in tests (from its own venv, never the project's).

``SYNAPSE_VENV`` names the venv (``.ci/run`` creates it with
``pip install matrix-synapse``); without it the Synapse tests skip.
"""
from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from typing import Any

import yaml

from federation.tls import ensure_self_signed

SYNAPSE_VENV = os.environ.get("SYNAPSE_VENV", "")


def synapse_python() -> str | None:
    path = os.path.join(SYNAPSE_VENV, "bin", "python") if SYNAPSE_VENV else ""
    return path if path and os.path.exists(path) else None


class Synapse:
    """A Synapse process: server name ``localhost:<fed_port>``, client API on ``client_port``."""

    def __init__(self, workdir: str, fed_port: int, client_port: int) -> None:
        self.workdir = workdir
        self.server_name = f"localhost:{fed_port}"
        self.fed_port = fed_port
        self.client_port = client_port
        self.base = f"http://127.0.0.1:{client_port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def configure(self, quiet: bool = False) -> None:
        """Generate the config: TLS federation (self-signed, unverified), loopback allowed, no rate limits.

        Args:
            quiet: Log warnings only (benchmarks: logging then costs Synapse what it costs ours).
        """
        py = synapse_python()
        assert py
        os.makedirs(self.workdir, exist_ok=True)
        cfg = os.path.join(self.workdir, "hs.yaml")
        subprocess.run([py, "-m", "synapse.app.homeserver", "--server-name", self.server_name,
                        "--config-path", cfg, "--generate-config", "--report-stats=no"],
                       cwd=self.workdir, check=True, capture_output=True, timeout=120)
        with open(cfg, encoding="utf-8") as f:
            data: dict[str, Any] = yaml.safe_load(f)
        cert, key = os.path.join(self.workdir, "tls.crt"), os.path.join(self.workdir, "tls.key")
        ensure_self_signed(cert, key, "localhost")
        data.update({
            "listeners": [
                {"port": self.fed_port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": True,
                 "resources": [{"names": ["federation"], "compress": False}]},
                {"port": self.client_port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                 "resources": [{"names": ["client"], "compress": False}]},
            ],
            "tls_certificate_path": cert,
            "tls_private_key_path": key,
            "federation_verify_certificates": False,
            "ip_range_blacklist": [],
            "ip_range_whitelist": ["127.0.0.1", "::1"],
            "federation_ip_range_blacklist": [],
            "enable_registration": True,
            "enable_registration_without_verification": True,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "report_stats": False,
            "rc_message": {"per_second": 1000, "burst_count": 1000},
            "rc_registration": {"per_second": 1000, "burst_count": 1000},
            "rc_login": {"address": {"per_second": 1000, "burst_count": 1000},
                         "account": {"per_second": 1000, "burst_count": 1000},
                         "failed_attempts": {"per_second": 1000, "burst_count": 1000}},
            "rc_joins": {"local": {"per_second": 1000, "burst_count": 1000},
                         "remote": {"per_second": 1000, "burst_count": 1000}},
            "rc_joins_per_room": {"per_second": 1000, "burst_count": 1000},
            "rc_federation": {"window_size": 1000, "sleep_limit": 1000, "reject_limit": 1000},
            "bcrypt_rounds": 4,
            "presence": {"enabled": False},
            "use_presence": False,
        })
        with open(cfg, "w", encoding="utf-8") as f:
            yaml.safe_dump(data, f)
        log_cfg = data.get("log_config")
        if quiet and isinstance(log_cfg, str) and os.path.exists(log_cfg):
            with open(log_cfg, encoding="utf-8") as f:
                text = f.read().replace("level: INFO", "level: WARNING")
            with open(log_cfg, "w", encoding="utf-8") as f:
                f.write(text)

    def start(self, timeout_s: float = 90.0) -> None:
        py = synapse_python()
        assert py
        log = open(os.path.join(self.workdir, "stdout.log"), "wb")
        self.proc = subprocess.Popen([py, "-m", "synapse.app.homeserver", "-c", "hs.yaml"], cwd=self.workdir,
                                     stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Synapse exited: see {self.workdir}/stdout.log")
            try:
                urllib.request.urlopen(self.base + "/_matrix/client/versions", timeout=2).read()
                return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("Synapse did not start in time")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
