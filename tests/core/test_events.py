"""Event format, hashes, event IDs and the redaction algorithm per version."""

import copy
import hashlib

import pytest
from canonicaljson import encode_canonical_json
from unpaddedbase64 import encode_base64

from homeserver.core.events import (
    MAX_EVENT_SIZE,
    Event,
    EventFormatError,
    check_event_format,
    compute_event_id,
    compute_reference_hash,
    redact_pdu,
    room_id_from_create_event,
)
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS, get_room_version

V = get_room_version


def base_pdu(rv, **kw):
    pdu = {
        "type": "m.room.message", "sender": "@u:example.org", "room_id": "!r:example.org",
        "content": {"body": "hi"}, "depth": 5, "origin_server_ts": 1000, "prev_events": [],
        "auth_events": [], "hashes": {"sha256": "x"}, "signatures": {},
    }
    if rv.event_id_format == "v1":
        pdu["event_id"] = "$abc:example.org"
    if rv.room_id_from_create_event:
        pdu["room_id"] = "!" + "A" * 43
    pdu.update(kw)
    return pdu


# --- reference hash and event IDs ----------------------------------------------


def test_reference_hash_definition():
    rv = V("4")
    pdu = base_pdu(rv, unsigned={"age": 5})
    expected_obj = {k: v for k, v in pdu.items() if k not in ("signatures", "unsigned")}
    expected_obj["content"] = {}  # m.room.message content is redacted away
    assert compute_reference_hash(pdu, rv) == hashlib.sha256(encode_canonical_json(expected_obj)).digest()


def test_event_id_formats():
    pdu = base_pdu(V("3"))
    h = compute_reference_hash(pdu, V("3"))
    assert compute_event_id(pdu, V("3")) == "$" + encode_base64(h)
    assert compute_event_id(pdu, V("4")) == "$" + encode_base64(h, urlsafe=True)
    with pytest.raises(ValueError):
        compute_event_id(pdu, V("1"))


def test_event_id_ignores_unsigned_signatures_and_redactable_content():
    rv = V("10")
    pdu = base_pdu(rv)
    eid = compute_event_id(pdu, rv)
    assert compute_event_id(dict(pdu, unsigned={"age": 1}, signatures={"a": {}}), rv) == eid
    # Content of a message is not covered directly (only through hashes).
    assert compute_event_id(dict(pdu, content={"body": "other"}), rv) == eid
    assert compute_event_id(dict(pdu, hashes={"sha256": "y"}), rv) != eid


def test_v12_room_id_from_create_event():
    rv = V("12")
    create = {"type": "m.room.create", "state_key": "", "sender": "@c:example.org",
              "content": {"room_version": "12"}, "depth": 1, "origin_server_ts": 1,
              "prev_events": [], "auth_events": [], "hashes": {"sha256": "x"}, "signatures": {}}
    room_id = room_id_from_create_event(create, rv)
    ev = Event(create, rv)
    assert room_id == "!" + ev.event_id[1:]
    assert ev.room_id == room_id
    assert len(room_id) == 44
    check_event_format(create, rv)
    with pytest.raises(EventFormatError):
        check_event_format(dict(create, room_id=room_id), rv)
    with pytest.raises(ValueError):
        room_id_from_create_event(create, V("11"))


# --- Event -------------------------------------------------------------------


def test_event_fields_v1_and_v10():
    rv1 = V("1")
    pdu = base_pdu(rv1, prev_events=[["$p:example.org", {"sha256": "h"}]],
                   auth_events=[["$a:example.org", {"sha256": "h"}]], unsigned={"age": 3})
    ev = Event(pdu, rv1)
    assert ev.event_id == "$abc:example.org"
    assert ev.prev_event_ids == ["$p:example.org"]
    assert ev.auth_event_ids == ["$a:example.org"]
    assert not ev.is_state() and ev.state_key is None
    assert ev.unsigned == {"age": 3}
    assert ev.get_pdu_json()["event_id"] == "$abc:example.org"
    rv10 = V("10")
    ev10 = Event(base_pdu(rv10, prev_events=["$p"], state_key="", type="m.room.topic"), rv10)
    assert ev10.is_state() and ev10.state_key == ""
    assert ev10.prev_event_ids == ["$p"]
    assert ev10.event_id == compute_event_id(ev10.pdu, rv10)
    assert "event_id" not in ev10.get_pdu_json()


def test_event_never_mutates_pdu():
    rv = V("11")
    pdu = base_pdu(rv, unsigned={"age": 1})
    snapshot = copy.deepcopy(pdu)
    ev = Event(pdu, rv)
    ev.unsigned["age"] = 99
    ev.get_pdu_json()["content"]["body"] = "x"
    ev.redacted()
    assert pdu == snapshot


def test_redacts_location():
    top = Event(base_pdu(V("10"), type="m.room.redaction", redacts="$x", content={"redacts": "$y"}), V("10"))
    assert top.redacts == "$x"
    inner = Event(base_pdu(V("11"), type="m.room.redaction", redacts="$x", content={"redacts": "$y"}), V("11"))
    assert inner.redacts == "$y"


# --- redaction ---------------------------------------------------------------

FULL_TOP = {"origin": "example.org", "membership": "join", "prev_state": [], "unsigned": {"a": 1}, "junk": 1}


def redact(rv_id, type_, content, **extra):
    rv = V(rv_id)
    pdu = base_pdu(rv, type=type_, content=content, state_key="", **FULL_TOP, **extra)
    return redact_pdu(pdu, rv)


def test_redaction_top_level_keys_v1_vs_v11():
    r1 = redact("1", "m.room.message", {"body": "x"})
    assert {"origin", "membership", "prev_state", "hashes", "signatures"} <= r1.keys()
    assert "unsigned" not in r1 and "junk" not in r1 and r1["content"] == {}
    r11 = redact("11", "m.room.message", {"body": "x"})
    assert not {"origin", "membership", "prev_state", "unsigned", "junk"} & r11.keys()
    assert {"hashes", "signatures", "auth_events", "prev_events", "depth"} <= r11.keys()


@pytest.mark.parametrize(
    "rv_id,type_,content,kept",
    [
        ("1", "m.room.member", {"membership": "join", "displayname": "x", "join_authorised_via_users_server": "@a:b"}, {"membership": "join"}),
        ("9", "m.room.member", {"membership": "join", "displayname": "x", "join_authorised_via_users_server": "@a:b"}, {"membership": "join", "join_authorised_via_users_server": "@a:b"}),
        ("10", "m.room.member", {"membership": "invite", "third_party_invite": {"display_name": "d", "signed": {"s": 1}}}, {"membership": "invite"}),
        ("11", "m.room.member", {"membership": "invite", "third_party_invite": {"display_name": "d", "signed": {"s": 1}}}, {"membership": "invite", "third_party_invite": {"signed": {"s": 1}}}),
        ("10", "m.room.create", {"creator": "@a:b", "room_version": "10", "m.federate": False}, {"creator": "@a:b"}),
        ("11", "m.room.create", {"room_version": "11", "m.federate": False}, {"room_version": "11", "m.federate": False}),
        ("7", "m.room.join_rules", {"join_rule": "restricted", "allow": [1]}, {"join_rule": "restricted"}),
        ("8", "m.room.join_rules", {"join_rule": "restricted", "allow": [1]}, {"join_rule": "restricted", "allow": [1]}),
        ("10", "m.room.power_levels", {"ban": 1, "invite": 2, "notifications": {"room": 1}, "users": {}}, {"ban": 1, "users": {}}),
        ("11", "m.room.power_levels", {"ban": 1, "invite": 2, "notifications": {"room": 1}, "users": {}}, {"ban": 1, "invite": 2, "users": {}}),
        ("5", "m.room.aliases", {"aliases": ["#a:b"]}, {"aliases": ["#a:b"]}),
        ("6", "m.room.aliases", {"aliases": ["#a:b"]}, {}),
        ("3", "m.room.history_visibility", {"history_visibility": "shared", "x": 1}, {"history_visibility": "shared"}),
        ("10", "m.room.redaction", {"redacts": "$e", "reason": "r"}, {}),
        ("11", "m.room.redaction", {"redacts": "$e", "reason": "r"}, {"redacts": "$e"}),
        ("12", "m.room.name", {"name": "n"}, {}),
    ],
)
def test_redaction_content(rv_id, type_, content, kept):
    assert redact(rv_id, type_, content)["content"] == kept


@pytest.mark.parametrize("rv", list(KNOWN_ROOM_VERSIONS.values()), ids=lambda v: v.identifier)
def test_redaction_idempotent_and_keeps_event_id(rv):
    pdu = base_pdu(rv, type="m.room.member", state_key="@u:example.org",
                   content={"membership": "join", "displayname": "U"}, unsigned={"x": 1})
    once = redact_pdu(pdu, rv)
    assert redact_pdu(once, rv) == once
    assert Event(once, rv).event_id == Event(pdu, rv).event_id


# --- format checks ---------------------------------------------------------------


@pytest.mark.parametrize("rv", list(KNOWN_ROOM_VERSIONS.values()), ids=lambda v: v.identifier)
def test_valid_event_passes(rv):
    check_event_format(base_pdu(rv), rv)


@pytest.mark.parametrize(
    "rv_id,mutate,msg",
    [
        ("10", lambda p: p.pop("depth"), "depth"),
        ("10", lambda p: p.pop("hashes"), "hashes"),
        ("1", lambda p: p.pop("event_id"), "event_id"),
        ("1", lambda p: p.update(event_id="$nodomain"), "event_id"),
        ("10", lambda p: p.update(sender="not-a-user"), "sender"),
        ("10", lambda p: p.update(type="t" * 256), "type"),
        ("10", lambda p: p.update(state_key="s" * 256), "state_key"),
        ("10", lambda p: p.update(room_id="!" + "r" * 250 + ":example.org"), "room_id"),
        ("10", lambda p: p.update(prev_events=[f"$e{i}" for i in range(21)]), "prev_events"),
        ("10", lambda p: p.update(auth_events=[f"$e{i}" for i in range(11)]), "auth_events"),
        ("1", lambda p: p.update(prev_events=["$plain"]), "pairs"),
        ("10", lambda p: p.update(depth=-1), "depth"),
        ("10", lambda p: p.update(depth=2**53), "depth"),
        ("10", lambda p: p.update(origin_server_ts="1"), "origin_server_ts"),
        ("10", lambda p: p.update(content=[]), "content"),
        ("10", lambda p: p.update(content={"n": 1.5}), "float"),
        ("10", lambda p: p.update(content={"n": 2**60}), "range"),
        ("10", lambda p: p.update(content={"body": "x" * MAX_EVENT_SIZE}), "larger"),
        ("12", lambda p: p.update(room_id="!r:example.org"), "room_id"),
        ("12", lambda p: p.pop("room_id"), "room_id"),
    ],
)
def test_invalid_events_rejected(rv_id, mutate, msg):
    rv = V(rv_id)
    pdu = base_pdu(rv)
    mutate(pdu)
    with pytest.raises(EventFormatError, match=msg):
        check_event_format(pdu, rv)


def test_pre_v6_tolerates_floats_and_big_depth():
    rv = V("5")
    check_event_format(base_pdu(rv, content={"n": 1.5}, depth=2**60), rv)
