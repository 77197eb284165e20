"""Identifier grammar and the room version table."""

import pytest

from homeserver.core.ids import (
    InvalidIdError,
    RoomAlias,
    UserID,
    get_domain_from_id,
    is_valid_event_id,
    is_valid_localpart,
    is_valid_room_id,
    is_valid_user_id,
    server_name_is_valid,
)
from homeserver.core.room_versions import (
    DEFAULT_ROOM_VERSION,
    KNOWN_ROOM_VERSIONS,
    UnsupportedRoomVersion,
    get_room_version,
)


@pytest.mark.parametrize("name", ["matrix.org", "matrix.org:8888", "1.2.3.4", "1.2.3.4:1234",
                                  "[1234:5678::abcd]", "[1234:5678::abcd]:5678", "localhost"])
def test_valid_server_names(name):
    assert server_name_is_valid(name)


@pytest.mark.parametrize("name", ["", "a b", "matrix.org:", "matrix.org:123456", "[::1", "[::1]:x",
                                  "256.1.1.1", "exa_mple.org", "a" * 256])
def test_invalid_server_names(name):
    assert not server_name_is_valid(name)


def test_user_id_parse():
    u = UserID.parse("@alice:example.org:8448")
    assert (u.localpart, u.domain) == ("alice", "example.org:8448")
    assert str(u) == "@alice:example.org:8448"
    assert u.is_compliant()
    assert not UserID.parse("@Alice:example.org").is_compliant()  # historical, still parses
    for bad in ["alice:example.org", "@alice", "@a:bad domain", "@" + "a" * 250 + ":example.org"]:
        with pytest.raises(InvalidIdError):
            UserID.parse(bad)
    assert is_valid_user_id("@Alice:example.org")
    assert not is_valid_user_id("@Alice:example.org", strict=True)


def test_localpart_and_other_ids():
    assert is_valid_localpart("a.b_c=d-e/f+1")
    assert not is_valid_localpart("") and not is_valid_localpart("A") and not is_valid_localpart("a:b")
    assert get_domain_from_id("!room:example.org") == "example.org"
    with pytest.raises(InvalidIdError):
        get_domain_from_id("$hashonly")
    assert RoomAlias.parse("#room:example.org").localpart == "room"
    assert is_valid_room_id("!abc:example.org") and is_valid_room_id("!" + "A" * 43)
    assert not is_valid_room_id("abc:example.org") and not is_valid_room_id("!a:bad name")
    assert is_valid_event_id("$abc") and not is_valid_event_id("abc")


def test_room_version_table():
    assert list(KNOWN_ROOM_VERSIONS) == [str(i) for i in range(1, 13)]
    assert get_room_version(DEFAULT_ROOM_VERSION).identifier == "10"
    with pytest.raises(UnsupportedRoomVersion):
        get_room_version("13")
    with pytest.raises(KeyError):
        get_room_version("bogus")
    v = {k: get_room_version(k) for k in KNOWN_ROOM_VERSIONS}
    assert [v[k].state_res for k in ("1", "2", "11", "12")] == ["v1", "v2", "v2", "v2.1"]
    assert [v[k].event_id_format for k in ("2", "3", "4", "12")] == ["v1", "v3", "v4", "v4"]
    assert v["5"].special_case_aliases_auth and not v["6"].special_case_aliases_auth
    assert not v["6"].knock_join_rule and v["7"].knock_join_rule
    assert not v["7"].restricted_join_rule and v["8"].restricted_join_rule
    assert not v["9"].integer_power_levels and v["10"].integer_power_levels
    assert not v["10"].updated_redaction_rules and v["11"].msc2176_redaction_rules
    assert not v["11"].creators_have_infinite_power and v["12"].room_id_from_create_event
    assert v["2"].redaction_checked_by_auth_rules and not v["3"].redaction_checked_by_auth_rules
