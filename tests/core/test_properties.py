"""Property tests (hypothesis): order independence, idempotent redaction,
hash stability under key reordering."""

from __future__ import annotations

import itertools
import random

from core_builder import ALICE, BOB, CAROL, DAVE, RoomBuilder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from homeserver.core.auth import AuthError, check_auth
from homeserver.core.events import compute_content_hash, compute_event_id, compute_reference_hash, redact_pdu
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS, get_room_version
from homeserver.core.state_res import resolve_state

USERS = [ALICE, BOB, CAROL, DAVE]

# --- random forks ------------------------------------------------------------------

op = st.tuples(
    st.sampled_from(["topic", "power", "ban", "kick", "join", "join_rules", "leave"]),
    st.sampled_from(USERS),  # sender
    st.sampled_from(USERS),  # target
    st.sampled_from([0, 25, 50, 75, 100]),
)


def _content(kind, sender, target, level):
    if kind == "topic":
        return "m.room.topic", {"topic": f"{sender}-{level}"}, ""
    if kind == "power":
        return "m.room.power_levels", {"users": {ALICE: 100, target: level} if target != ALICE else {ALICE: 100}}, ""
    if kind == "join_rules":
        return "m.room.join_rules", {"join_rule": "invite" if level < 50 else "public"}, ""
    membership = {"ban": "ban", "kick": "leave", "join": "join", "leave": "leave"}[kind]
    return "m.room.member", {"membership": membership}, (sender if kind in ("join", "leave") else target)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    version=st.sampled_from(["1", "2", "10", "11", "12"]),
    forks=st.lists(st.lists(op, min_size=1, max_size=5), min_size=2, max_size=3),
)
def test_resolution_independent_of_input_order(version, forks):
    rb = RoomBuilder(version).create_room(power_users={BOB: 50})
    rb.join(BOB)
    rb.join(CAROL)
    base = dict(rb.state)
    states = []
    for ops in forks:
        state = dict(base)
        prev = list(rb.last)
        for kind, sender, target, level in ops:
            type_, content, state_key = _content(kind, sender, target, level)
            ev = rb.event(type_, sender, content, state_key, state=state, prev=prev)
            try:
                check_auth(ev, rb.auth_state(state))
            except AuthError:
                continue
            rb.events[ev.event_id] = ev
            state[(type_, state_key)] = ev.event_id
            prev = [ev.event_id]
        states.append(state)
    results = [
        resolve_state(rb.rv, list(perm), rb.fetch_event, rb.auth_chain)
        for perm in itertools.permutations(states)
    ]
    assert all(r == results[0] for r in results)
    # The create event is never lost.
    assert results[0][("m.room.create", "")] == base[("m.room.create", "")]


# --- redaction and hashes -------------------------------------------------------------

json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1), st.text(max_size=8)
)
json_value = st.recursive(
    json_scalar,
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=4)),
    max_leaves=6,
)
SPECIAL_KEYS = ["membership", "join_authorised_via_users_server", "third_party_invite", "creator", "join_rule",
                "allow", "ban", "events", "users", "invite", "redacts", "aliases", "history_visibility", "body"]
content_st = st.dictionaries(st.one_of(st.sampled_from(SPECIAL_KEYS), st.text(max_size=6)), json_value, max_size=6)
pdu_st = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["m.room.member", "m.room.create", "m.room.join_rules", "m.room.power_levels",
                                 "m.room.history_visibility", "m.room.aliases", "m.room.redaction",
                                 "m.room.message", "x.custom"]),
        "content": content_st,
        "sender": st.just("@u:example.org"),
        "room_id": st.just("!r:example.org"),
        "depth": st.integers(min_value=0, max_value=1000),
        "origin_server_ts": st.integers(min_value=0, max_value=2**40),
        "prev_events": st.lists(st.text(max_size=5).map(lambda s: "$" + s), max_size=3),
        "auth_events": st.lists(st.text(max_size=5).map(lambda s: "$" + s), max_size=3),
        "hashes": st.just({"sha256": "abc"}),
        "signatures": st.just({}),
    },
    optional={
        "state_key": st.text(max_size=5),
        "unsigned": st.dictionaries(st.text(max_size=4), json_value, max_size=2),
        "origin": st.just("example.org"),
        "membership": st.just("join"),
        "extra": json_value,
    },
)
hashed_versions = st.sampled_from([v for v in KNOWN_ROOM_VERSIONS.values() if v.event_id_format != "v1"])


@settings(max_examples=60, deadline=None)
@given(pdu=pdu_st, rv=st.sampled_from(list(KNOWN_ROOM_VERSIONS.values())))
def test_redaction_idempotent(pdu, rv):
    once = redact_pdu(pdu, rv)
    assert redact_pdu(once, rv) == once
    assert "unsigned" not in once


@settings(max_examples=40, deadline=None)
@given(pdu=pdu_st, rv=hashed_versions)
def test_redacted_event_keeps_its_id(pdu, rv):
    assert compute_event_id(redact_pdu(pdu, rv), rv) == compute_event_id(pdu, rv)


def _shuffled(value, rnd):
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: _shuffled(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rnd) for v in value]
    return value


@settings(max_examples=40, deadline=None)
@given(pdu=pdu_st, seed=st.integers(), rv=hashed_versions)
def test_hashes_stable_under_key_reordering(pdu, seed, rv):
    reordered = _shuffled(pdu, random.Random(seed))
    assert compute_content_hash(reordered) == compute_content_hash(pdu)
    assert compute_reference_hash(reordered, rv) == compute_reference_hash(pdu, rv)


def test_room_version_lookup_round_trips():
    for ident, rv in KNOWN_ROOM_VERSIONS.items():
        assert get_room_version(ident) is rv
