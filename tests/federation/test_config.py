"""The federation config section and the --federation-* CLI flags."""
from __future__ import annotations

import subprocess
import sys

import pytest

from federation.config import FederationConfig
from homeserver.cli import federation_server_name, render_config
from homeserver.config import Config, ConfigError, Section, load_config


def test_defaults_and_generated_config(tmp_path):
    path = tmp_path / "hs.yaml"
    path.write_text(render_config("example.org", str(tmp_path / "data")))
    fed = FederationConfig.parse(load_config(str(path)).section("federation"))
    assert fed.port is None and not fed.enabled and not fed.insecure
    path2 = tmp_path / "hs2.yaml"
    path2.write_text(render_config("example.org", str(tmp_path / "data"), federation_port=8448))
    assert FederationConfig.parse(load_config(str(path2)).section("federation")).port == 8448


@pytest.mark.parametrize("data, key", [
    ({"port": "x"}, "federation.port"),
    ({"port": 70000}, "federation.port"),
    ({"insecure": "yes"}, "federation.insecure"),
    ({"tls_certificate_path": "/c.pem"}, "federation.tls_certificate_path"),
    ({"trusted_key_servers": [1]}, "federation.trusted_key_servers"),
    ({"old_verify_keys": {"rsa:1": {"key": "x", "expired_ts": 1}}}, "federation.old_verify_keys.rsa:1"),
])
def test_errors_name_the_key(data, key):
    with pytest.raises(ConfigError) as e:
        FederationConfig.parse(Section(data, "federation"))
    assert e.value.key == key


def test_server_name_gets_the_port():
    assert federation_server_name("localhost", 8449) == "localhost:8449"
    assert federation_server_name("127.0.0.1", 8449) == "127.0.0.1:8449"
    assert federation_server_name("::1", 8449) == "[::1]:8449"
    assert federation_server_name("localhost", 8448) == "localhost"
    assert federation_server_name("example.org", 8449) == "example.org"
    assert federation_server_name("localhost:9", 8449) == "localhost:9"


def test_cli_federation_flags(tmp_path):
    r = subprocess.run([sys.executable, "-m", "homeserver", "--generate-config", "--server-name", "localhost",
                        "--config-path", "hs.yaml", "--data-dir", "d", "--federation-port", "8449",
                        "--federation-insecure"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    config = load_config(str(tmp_path / "hs.yaml"))
    assert config.server_name == "localhost:8449"
    fed = FederationConfig.parse(config.section("federation"))
    assert (fed.port, fed.insecure, fed.bind) == (8449, True, "127.0.0.1")
    assert isinstance(Config.from_dict({"server_name": "x", "federation": {"port": 1}}), Config)
