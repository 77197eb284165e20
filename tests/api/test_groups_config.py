"""The groups: config section: defaults and one-line errors naming the key."""
from __future__ import annotations

import pytest
import pytest_twisted

from homeserver.config import Config, ConfigError
from homeserver.groups.config import GroupsConfig


def test_defaults():
    g = GroupsConfig.parse(Config.from_dict({"server_name": "x"}).section("groups"))
    assert (g.max_members, g.recall_window_ms, g.max_admins) == (500, 120_000, 3)
    assert g.invite_code_lifetime_ms == 7 * 24 * 3600 * 1000
    assert (g.face_to_face_radius_m, g.face_to_face_window_ms) == (1000.0, 15 * 60 * 1000)


@pytest.mark.parametrize("groups, key", [
    ({"max_members": 0}, "groups.max_members"),
    ({"max_members": "many"}, "groups.max_members"),
    ({"recall_window_ms": -1}, "groups.recall_window_ms"),
    ({"max_admins": True}, "groups.max_admins"),
    ({"face_to_face_radius_m": "near"}, "groups.face_to_face_radius_m"),
    ({"invite_code_lifetime_ms": 5}, "groups.invite_code_lifetime_ms"),
])
def test_bad_values_name_the_key(groups, key):
    with pytest.raises(ConfigError) as e:
        GroupsConfig.parse(Config.from_dict({"server_name": "x", "groups": groups}).section("groups"))
    assert e.value.key == key


def test_lifetime_cap_is_never_below_the_default():
    g = GroupsConfig.parse(Config.from_dict({"server_name": "x", "groups": {
        "invite_code_lifetime_ms": 90 * 24 * 3600 * 1000}}).section("groups"))
    assert g.max_invite_code_lifetime_ms == g.invite_code_lifetime_ms


@pytest_twisted.ensureDeferred
async def test_advertised_in_versions_and_capabilities(client_factory):
    c = client_factory()
    status, versions = await c.get("/_matrix/client/versions")
    assert versions["unstable_features"]["im.qun.groups"] is True
    await c.register("cap")
    status, caps = await c.get("/_matrix/client/v3/capabilities")
    assert caps["capabilities"]["im.qun.groups"] == {"max_members": 500, "max_admins": 3,
                                                     "recall_window_ms": 120_000}
