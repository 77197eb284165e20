"""Signing: the spec's test vectors (appendices.md "Cryptographic Test Vectors")."""

import copy

import pytest
from signedjson.key import decode_signing_key_base64, get_verify_key

from homeserver.core.events import check_content_hash, compute_content_hash
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS, get_room_version
from homeserver.core.signing import (
    SignatureError,
    add_hashes_and_signatures,
    encode_verify_key_base64,
    generate_signing_key,
    read_signing_keys,
    required_signature_servers,
    sign_event,
    sign_json,
    verify_event_signatures,
    verify_json,
    write_signing_keys,
)

SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
KEY = decode_signing_key_base64("ed25519", "1", SEED)
VK = get_verify_key(KEY)
V1 = get_room_version("1")


def known(server, key_id):
    return VK if (server, key_id) == ("domain", "ed25519:1") else None


def test_sign_empty_object():
    assert sign_json({}, "domain", KEY) == {
        "signatures": {
            "domain": {
                "ed25519:1": "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
            }
        }
    }


def test_sign_object_with_data():
    signed = sign_json({"one": 1, "two": "Two"}, "domain", KEY)
    assert signed == {
        "one": 1,
        "signatures": {
            "domain": {
                "ed25519:1": "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
            }
        },
        "two": "Two",
    }
    verify_json(signed, "domain", VK)
    tampered = dict(signed, one=2)
    with pytest.raises(SignatureError):
        verify_json(tampered, "domain", VK)
    with pytest.raises(SignatureError):
        verify_json(signed, "other", VK)


MINIMAL_EVENT = {
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "signatures": {},
    "hashes": {},
    "type": "X",
    "content": {},
    "prev_events": [],
    "auth_events": [],
    "depth": 3,
    "unsigned": {"age_ts": 1000000},
}

REDACTABLE_EVENT = {
    "content": {"body": "Here is the message content"},
    "event_id": "$0:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {},
    "unsigned": {"age_ts": 1000000},
}


def test_event_signing_minimal():
    original = copy.deepcopy(MINIMAL_EVENT)
    signed = add_hashes_and_signatures(MINIMAL_EVENT, V1, "domain", KEY)
    assert MINIMAL_EVENT == original, "input must not be mutated"
    assert signed == {
        "auth_events": [],
        "content": {},
        "depth": 3,
        "hashes": {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},
        "origin": "domain",
        "origin_server_ts": 1000000,
        "prev_events": [],
        "room_id": "!x:domain",
        "sender": "@a:domain",
        "signatures": {
            "domain": {
                "ed25519:1": "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
            }
        },
        "type": "X",
        "unsigned": {"age_ts": 1000000},
    }


def test_event_signing_redactable():
    signed = add_hashes_and_signatures(REDACTABLE_EVENT, V1, "domain", KEY)
    assert signed["hashes"] == {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"}
    assert signed["signatures"] == {
        "domain": {
            "ed25519:1": "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"
        }
    }
    assert signed["content"] == REDACTABLE_EVENT["content"]
    assert signed["unsigned"] == {"age_ts": 1000000}


def test_content_hash_vectors():
    assert compute_content_hash(MINIMAL_EVENT) == "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"
    assert compute_content_hash(REDACTABLE_EVENT) == "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"
    signed = add_hashes_and_signatures(REDACTABLE_EVENT, V1, "domain", KEY)
    assert check_content_hash(signed)
    assert not check_content_hash(dict(signed, content={"body": "changed"}))
    assert not check_content_hash(REDACTABLE_EVENT)  # no hashes at all


def test_verify_event_signatures_ok_and_survives_redaction():
    signed = add_hashes_and_signatures(REDACTABLE_EVENT, V1, "domain", KEY)
    verify_event_signatures(signed, V1, known)
    # The signature covers the redacted form, so changing content keeps it valid
    # (the content hash check is what catches that).
    verify_event_signatures(dict(signed, content={}), V1, known)


def test_verify_event_signatures_rejects():
    signed = add_hashes_and_signatures(REDACTABLE_EVENT, V1, "domain", KEY)
    with pytest.raises(SignatureError):
        verify_event_signatures(dict(signed, origin_server_ts=5), V1, known)
    with pytest.raises(SignatureError, match="known key"):
        verify_event_signatures(signed, V1, lambda s, k: None)
    with pytest.raises(SignatureError, match="not signed"):
        verify_event_signatures(dict(signed, signatures={}), V1, known)


def test_v1_event_id_domain_must_sign():
    pdu = dict(REDACTABLE_EVENT, event_id="$0:elsewhere")
    assert required_signature_servers(pdu, V1) == {"domain", "elsewhere"}
    signed = add_hashes_and_signatures(pdu, V1, "domain", KEY)
    with pytest.raises(SignatureError, match="elsewhere"):
        verify_event_signatures(signed, V1, known)
    other = generate_signing_key("x")
    cosigned = sign_event(signed, V1, "elsewhere", other)
    keys = {("domain", "ed25519:1"): VK, ("elsewhere", "ed25519:x"): get_verify_key(other)}
    verify_event_signatures(cosigned, V1, lambda s, k: keys.get((s, k)))


def test_required_servers_restricted_join_and_3pid():
    v10 = get_room_version("10")
    join = {"type": "m.room.member", "sender": "@a:one", "state_key": "@a:one",
            "content": {"membership": "join", "join_authorised_via_users_server": "@b:two"}}
    assert required_signature_servers(join, v10) == {"one", "two"}
    assert required_signature_servers(join, get_room_version("7")) == {"one"}
    invite = {"type": "m.room.member", "sender": "@a:one", "state_key": "@c:three",
              "content": {"membership": "invite", "third_party_invite": {}}}
    assert required_signature_servers(invite, v10) == set()


def test_key_file_roundtrip():
    key = generate_signing_key("a_abcd")
    text = write_signing_keys([key])
    assert text.startswith("ed25519 a_abcd ")
    (back,) = read_signing_keys(text)
    assert back.version == "a_abcd"
    assert encode_verify_key_base64(get_verify_key(back)) == encode_verify_key_base64(get_verify_key(key))
    assert read_signing_keys(f"ed25519 1 {SEED}\n")[0].encode() == KEY.encode()


@pytest.mark.parametrize("rv", list(KNOWN_ROOM_VERSIONS.values()), ids=lambda v: v.identifier)
def test_sign_verify_every_version(rv):
    pdu = {"type": "m.room.message", "sender": "@u:domain", "room_id": "!r:domain",
           "content": {"body": "hi"}, "depth": 1, "origin_server_ts": 1, "prev_events": [],
           "auth_events": [], "hashes": {}, "signatures": {}}
    if rv.event_id_format == "v1":
        pdu["event_id"] = "$e:domain"
    signed = add_hashes_and_signatures(pdu, rv, "domain", KEY)
    verify_event_signatures(signed, rv, known)
