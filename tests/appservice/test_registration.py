"""Registration files: validation errors name the file and key; namespace matching."""
from __future__ import annotations

import pytest
import yaml

from appservice.config import AppserviceConfig
from appservice.registration import load_registrations, parse_registration
from homeserver.config import Config, ConfigError

GOOD = {
    "id": "wechat", "url": "http://127.0.0.1:29318", "as_token": "as-secret", "hs_token": "hs-secret",
    "sender_localpart": "wechatbot",
    "namespaces": {"users": [{"exclusive": True, "regex": "@wechat_.*:example.org"}],
                   "aliases": [{"exclusive": True, "regex": "#wechat_.*:example.org"}],
                   "rooms": [{"exclusive": False, "regex": "!bridged.*"}]},
    "rate_limited": False,
    "de.sorunome.msc2409.push_ephemeral": True,
    "protocols": ["wechat"],
}


def test_good_registration():
    s = parse_registration(GOOD, "example.org")
    assert s.sender == "@wechatbot:example.org"
    assert s.receive_ephemeral and not s.rate_limited and s.protocols == ("wechat",)
    assert s.is_interested_in_user("@wechat_1:example.org")
    assert s.is_interested_in_user("@wechatbot:example.org")
    assert not s.is_interested_in_user("@alice:example.org")
    assert not s.is_interested_in_user("@wechat_1:example.org.evil")  # full match, not prefix
    assert s.is_exclusive_user("@wechat_1:example.org")
    assert s.is_exclusive_alias("#wechat_g:example.org")
    assert s.is_interested_in_room_id("!bridged1:example.org") and not s.is_exclusive_room("!bridged1:x")


def test_remote_users_are_not_of_interest():
    s = parse_registration({**GOOD, "namespaces": {"users": [{"exclusive": False, "regex": "@wechat_.*"}]}},
                           "example.org")
    assert s.is_interested_in_user("@wechat_1:example.org")
    assert not s.is_interested_in_user("@wechat_1:other.org")


def test_url_null_and_defaults():
    data = {k: v for k, v in GOOD.items() if k not in ("rate_limited", "de.sorunome.msc2409.push_ephemeral")}
    s = parse_registration({**data, "url": None, "namespaces": {}}, "example.org")
    assert s.url is None and s.rate_limited and not s.receive_ephemeral and s.users == ()


@pytest.mark.parametrize("change, key", [
    ({"id": None}, "id"),
    ({"url": 5}, "url"),
    ({"url": "ftp://x"}, "url"),
    ({"as_token": ""}, "as_token"),
    ({"hs_token": "as-secret"}, "hs_token"),
    ({"sender_localpart": "Bad Name"}, "sender_localpart"),
    ({"namespaces": []}, "namespaces"),
    ({"namespaces": {"users": [{"regex": "@a.*"}]}}, "namespaces.users[0].exclusive"),
    ({"namespaces": {"users": [{"exclusive": True, "regex": "@a(("}]}}, "namespaces.users[0].regex"),
    ({"namespaces": {"aliases": [{"exclusive": "yes", "regex": "#a"}]}}, "namespaces.aliases[0].exclusive"),
    ({"namespaces": {"groups": []}}, "namespaces.groups"),
    ({"rate_limited": "no"}, "rate_limited"),
    ({"receive_ephemeral": 1}, "receive_ephemeral"),
    ({"protocols": [3]}, "protocols[0]"),
])
def test_errors_name_file_and_key(change, key):
    data = {k: v for k, v in {**GOOD, **change}.items() if v is not None or k == "url"}
    with pytest.raises(ConfigError) as e:
        parse_registration(data, "example.org", "bridge.yaml")
    assert e.value.key == f"bridge.yaml: {key}"
    assert "\n" not in str(e.value)


def test_missing_url_is_an_error():
    data = {k: v for k, v in GOOD.items() if k != "url"}
    with pytest.raises(ConfigError) as e:
        parse_registration(data, "example.org", "b.yaml")
    assert e.value.key == "b.yaml: url"


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_tokens_and_ids_unique_across_files(tmp_path):
    a = _write(tmp_path, "a.yaml", GOOD)
    b = _write(tmp_path, "b.yaml", {**GOOD, "id": "other", "hs_token": "hs2"})
    with pytest.raises(ConfigError) as e:
        load_registrations([a, b], "example.org")
    assert e.value.key == f"{b}: as_token"
    c = _write(tmp_path, "c.yaml", {**GOOD, "as_token": "as2", "hs_token": "hs2"})
    with pytest.raises(ConfigError) as e:
        load_registrations([a, c], "example.org")
    assert e.value.key == f"{c}: id"
    d = _write(tmp_path, "d.yaml", {**GOOD, "id": "d", "as_token": "hs-secret", "hs_token": "hs3"})
    with pytest.raises(ConfigError) as e:
        load_registrations([a, d], "example.org")
    assert e.value.key == f"{d}: as_token"


def test_unreadable_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_registrations([str(tmp_path / "missing.yaml")], "example.org")
    assert "cannot read" in str(e.value)
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: [unclosed\n")
    with pytest.raises(ConfigError) as e:
        load_registrations([str(bad)], "example.org")
    assert "not valid YAML" in str(e.value)


def test_config_key(tmp_path):
    cfg = Config.from_dict({"server_name": "example.org", "app_service_config_files": "x.yaml"})
    with pytest.raises(ConfigError) as e:
        AppserviceConfig.parse(cfg)
    assert e.value.key == "app_service_config_files"
    path = _write(tmp_path, "a.yaml", GOOD)
    cfg = Config.from_dict({"server_name": "example.org", "app_service_config_files": [path]})
    assert [s.id for s in AppserviceConfig.parse(cfg).load("example.org")] == ["wechat"]
