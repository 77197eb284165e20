"""Config loading: defaults, the generated file, and one-line errors."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from homeserver.cli import render_config
from homeserver.config import Config, ConfigError, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_generated_config_loads(tmp_path):
    path = tmp_path / "hs.yaml"
    path.write_text(render_config("example.org", str(tmp_path / "data")))
    config = load_config(str(path))
    assert config.server_name == "example.org"
    assert config.database.engine == "sqlite"
    assert config.enable_registration is False
    assert config.listeners[0].port == 8008


def test_sample_config_is_what_generate_writes():
    with open(os.path.join(ROOT, "sample_config.yaml"), encoding="utf-8") as f:
        sample = f.read()
    generated = render_config("example.org", "data", shared_secret="CHANGE-ME-to-a-long-random-string")
    assert sample == generated, "regenerate sample_config.yaml from homeserver/default_config.yaml"


@pytest.mark.parametrize("data, key", [
    ({}, "server_name"),
    ({"server_name": "a b"}, "server_name"),
    ({"server_name": "x", "database": {"url": "mysql://x"}}, "database.url"),
    ({"server_name": "x", "listeners": [{"port": "80"}]}, "listeners[0].port"),
    ({"server_name": "x", "bcrypt_rounds": 2}, "bcrypt_rounds"),
    ({"server_name": "x", "max_request_body_size": "lots"}, "max_request_body_size"),
    ({"server_name": "x", "default_room_version": "99"}, "default_room_version"),
    ({"server_name": "x", "rate_limiting": {"login": {"burst": 0}}}, "rate_limiting.login.burst"),
    ({"server_name": "x", "rate_limiting": {"enabled": "yes"}}, "rate_limiting.enabled"),
    ({"server_name": "x", "rate_limiting": {"register": {"per_second": -1}}}, "rate_limiting.register.per_second"),
    ({"server_name": "x", "metrics": {"enabled": 1}}, "metrics.enabled"),
    ({"server_name": "x", "registration_shared_secret": 12345}, "registration_shared_secret"),
    ({"server_name": "x", "enable_registration": "no"}, "enable_registration"),
    ({"server_name": "x", "public_baseurl": "matrix.example.org"}, "public_baseurl"),
    ({"server_name": "x", "access_log": "on"}, "access_log"),
    ({"server_name": "x", "shutdown_grace_period": -1}, "shutdown_grace_period"),
])
def test_errors_name_the_key(data, key):
    with pytest.raises(ConfigError) as e:
        Config.from_dict(data)
    assert e.value.key == key
    assert "\n" not in str(e.value) and key in str(e.value)


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "homeserver", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def test_cli_generate_then_bad_config(tmp_path):
    r = _cli("--generate-config", "--server-name", "localhost", "--config-path", "hs.yaml",
             "--data-dir", "d", "--listen-port", "0", "--enable-registration",
             "--database-url", "sqlite:///d/x.db", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "d" / "signing.key").exists()
    config = load_config(str(tmp_path / "hs.yaml"))
    assert config.enable_registration and config.database.url == "sqlite:///d/x.db"
    # refuses to overwrite
    assert _cli("--generate-config", "--server-name", "x", "--config-path", "hs.yaml", cwd=tmp_path).returncode == 1
    (tmp_path / "bad.yaml").write_text("server_name: x\ndatabase:\n  url: oracle://\n")
    r = _cli("-c", "bad.yaml", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("config error: database.url:")
