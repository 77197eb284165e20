"""Authorization rules: for each rule, an event it allows and one it rejects."""

import pytest
from core_builder import ALICE, BOB, CAROL, DAVE, RoomBuilder
from signedjson.key import generate_signing_key, get_verify_key

from homeserver.core.auth import (
    AuthError,
    auth_types_for_event,
    check_auth,
    check_state_independent_auth,
)
from homeserver.core.events import Event
from homeserver.core.power_levels import PowerLevels
from homeserver.core.room_versions import get_room_version
from homeserver.core.signing import encode_verify_key_base64, sign_json

V = get_room_version


def allowed(rb, ev, state=None):
    check_auth(ev, rb.auth_state(state))


def rejected(rb, ev, match=None, state=None):
    with pytest.raises(AuthError, match=match):
        check_auth(ev, rb.auth_state(state))


def room(version="10", **kw):
    return RoomBuilder(version).create_room(**kw)


# --- rule 1: create ----------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "10", "11", "12"])
def test_create_allowed(version):
    rb = RoomBuilder(version).create_room()
    create = rb.events[rb.state[("m.room.create", "")]]
    check_auth(create, {})


def test_create_rejections():
    rb = RoomBuilder("10")
    good = {"room_version": "10", "creator": ALICE}
    with pytest.raises(AuthError, match="first event"):
        check_auth(rb.event("m.room.create", ALICE, good, "", prev=["$x"]), {})
    rb.room_id = "!room:other.example"
    with pytest.raises(AuthError, match="server"):
        check_auth(rb.event("m.room.create", ALICE, good, "", prev=[]), {})
    rb.room_id = "!room:a.example"
    with pytest.raises(AuthError, match="room version"):
        check_auth(rb.event("m.room.create", ALICE, {"room_version": "99", "creator": ALICE}, "", prev=[]), {})
    with pytest.raises(AuthError, match="creator"):
        check_auth(rb.event("m.room.create", ALICE, {"room_version": "10"}, "", prev=[]), {})
    # v11 no longer needs creator
    rb11 = RoomBuilder("11")
    check_auth(rb11.event("m.room.create", ALICE, {"room_version": "11"}, "", prev=[]), {})


def test_v12_create_rules():
    rb = RoomBuilder("12")
    ok = rb.event("m.room.create", ALICE, {"room_version": "12", "additional_creators": [BOB]}, "", prev=[])
    check_auth(ok, {})
    with pytest.raises(AuthError, match="additional_creators"):
        check_auth(rb.event("m.room.create", ALICE, {"additional_creators": ["not-a-user"]}, "", prev=[]), {})
    with pytest.raises(AuthError, match="room ID"):
        check_auth(rb.event("m.room.create", ALICE, {}, "", prev=[], extra={"room_id": "!x"}), {})


# --- rule 2 / 3: auth events and room ID ----------------------------------------------


def test_state_independent_auth():
    rb = room("10")
    msg = rb.event("m.room.message", ALICE, {"body": "hi"})
    by_id = {e: rb.events[e] for e in msg.auth_event_ids}
    check_state_independent_auth(msg, by_id)
    # Duplicate (type, state_key)
    pl2 = rb.add("m.room.power_levels", ALICE, {"users": {ALICE: 100}}, "")
    dup = rb.event("m.room.message", ALICE, {}, auth=msg.auth_event_ids + [pl2.event_id])
    with pytest.raises(AuthError, match="more than once"):
        check_state_independent_auth(dup, {e: rb.events[e] for e in dup.auth_event_ids})
    # Not selectable: join rules for a message
    jr = rb.state[("m.room.join_rules", "")]
    extra = rb.event("m.room.message", ALICE, {}, auth=msg.auth_event_ids + [jr])
    with pytest.raises(AuthError, match="may cite"):
        check_state_independent_auth(extra, {e: rb.events[e] for e in extra.auth_event_ids})
    # Missing create
    nocreate = rb.event("m.room.message", ALICE, {}, auth=[rb.state[("m.room.member", ALICE)]])
    with pytest.raises(AuthError, match="create"):
        check_state_independent_auth(nocreate, {e: rb.events[e] for e in nocreate.auth_event_ids})
    # Rejected auth event
    by_id_rej = dict(by_id)
    pl = by_id[msg.auth_event_ids[1]]
    assert pl.type == "m.room.power_levels"
    by_id_rej[pl.event_id] = Event(pl.pdu, pl.room_version, rejected_reason="bad")
    with pytest.raises(AuthError, match="rejected"):
        check_state_independent_auth(msg, by_id_rej)
    # Unknown auth event
    with pytest.raises(AuthError, match="not known"):
        check_state_independent_auth(msg, {})


def test_state_independent_auth_v12():
    rb = room("12")
    create = rb.events[rb.state[("m.room.create", "")]]
    msg = rb.event("m.room.message", ALICE, {"body": "hi"})
    assert create.event_id not in msg.auth_event_ids
    check_state_independent_auth(msg, {e: rb.events[e] for e in msg.auth_event_ids}, create)
    with pytest.raises(AuthError, match="create event"):
        check_state_independent_auth(msg, {e: rb.events[e] for e in msg.auth_event_ids}, None)
    other = RoomBuilder("12").create_room(create_content={"other": True})
    other_create = other.events[other.state[("m.room.create", "")]]
    with pytest.raises(AuthError, match="room ID"):
        check_state_independent_auth(msg, {e: rb.events[e] for e in msg.auth_event_ids}, other_create)


def test_no_create_event_in_state():
    rb = room()
    msg = rb.event("m.room.message", ALICE, {})
    state = rb.auth_state()
    del state[("m.room.create", "")]
    with pytest.raises(AuthError, match="create"):
        check_auth(msg, state)


def test_v12_room_id_must_match_create():
    rb = room("12")
    allowed(rb, rb.event("m.room.message", ALICE, {}))
    other = RoomBuilder("12").create_room(create_content={"other": True})
    state = rb.auth_state()
    state[("m.room.create", "")] = other.events[other.state[("m.room.create", "")]]
    with pytest.raises(AuthError, match="room ID"):
        check_auth(rb.event("m.room.message", ALICE, {}), state)


def test_m_federate():
    rb = RoomBuilder("10").create_room(create_content={"m.federate": False})
    allowed(rb, rb.event("m.room.message", ALICE, {}))
    rejected(rb, rb.event("m.room.member", BOB, {"membership": "join"}, BOB), "federate")


# --- rule 4 (v1-v5): aliases ---------------------------------------------------------------


def test_aliases_special_case():
    rb = room("5")
    allowed(rb, rb.event("m.room.aliases", BOB, {"aliases": []}, "b.example"))  # not even joined
    rejected(rb, rb.event("m.room.aliases", BOB, {"aliases": []}, "a.example"), "own server")
    rb6 = room("6")
    rejected(rb6, rb6.event("m.room.aliases", BOB, {"aliases": []}, "b.example"), "not in the room")


# --- rule 5: membership ------------------------------------------------------------------


def test_member_needs_membership():
    rb = room()
    rejected(rb, rb.event("m.room.member", BOB, {}, BOB), "membership")


def test_creator_first_join():
    rb = RoomBuilder("11")
    create = rb.add("m.room.create", ALICE, {"room_version": "11"}, "", prev=[])
    allowed(rb, rb.event("m.room.member", ALICE, {"membership": "join"}, ALICE))
    rejected(rb, rb.event("m.room.member", BOB, {"membership": "join"}, BOB), "invite")
    assert create.content == {"room_version": "11"}
    # Pre-v11 uses content.creator
    rb1 = RoomBuilder("1")
    rb1.add("m.room.create", ALICE, {"creator": BOB}, "", prev=[])
    allowed(rb1, rb1.event("m.room.member", BOB, {"membership": "join"}, BOB))
    rejected(rb1, rb1.event("m.room.member", ALICE, {"membership": "join"}, ALICE))


def test_join_public_and_not_for_others():
    rb = room(join_rule="public")
    allowed(rb, rb.event("m.room.member", BOB, {"membership": "join"}, BOB))
    rejected(rb, rb.event("m.room.member", ALICE, {"membership": "join"}, BOB), "behalf")


def test_join_banned():
    rb = room()
    rb.join(BOB)
    rb.add("m.room.member", ALICE, {"membership": "ban"}, BOB)
    rejected(rb, rb.event("m.room.member", BOB, {"membership": "join"}, BOB), "banned")


@pytest.mark.parametrize("rule,version", [("invite", "10"), ("knock", "7")])
def test_join_invite_only(rule, version):
    rb = room(version, join_rule=rule)
    rejected(rb, rb.event("m.room.member", BOB, {"membership": "join"}, BOB), "invite")
    rb.add("m.room.member", ALICE, {"membership": "invite"}, BOB)
    allowed(rb, rb.event("m.room.member", BOB, {"membership": "join"}, BOB))


def test_join_unknown_rule_and_knock_before_v7():
    rb = room(join_rule="private")
    rejected(rb, rb.event("m.room.member", BOB, {"membership": "join"}, BOB), "join rule")
    rb6 = room("6", join_rule="knock")
    rejected(rb6, rb6.event("m.room.member", BOB, {"membership": "join"}, BOB))


@pytest.mark.parametrize("rule,version", [("restricted", "8"), ("restricted", "10"), ("knock_restricted", "10")])
def test_restricted_join(rule, version):
    rb = room(version, join_rule=rule, power_users={})
    via = {"membership": "join", "join_authorised_via_users_server": ALICE}
    allowed(rb, rb.event("m.room.member", BOB, via, BOB))
    rejected(rb, rb.event("m.room.member", BOB, {"membership": "join"}, BOB), "authorised")
    # The authoriser must be joined...
    rejected(rb, rb.event("m.room.member", BOB, dict(via, join_authorised_via_users_server=CAROL), BOB), "authorised")
    # ...and able to invite: raise the invite level above DAVE's 0.
    rb.add("m.room.power_levels", ALICE, {"users": {ALICE: 100}, "invite": 50}, "")
    rb.add("m.room.member", ALICE, {"membership": "invite"}, DAVE)
    rb.add("m.room.member", DAVE, {"membership": "join"}, DAVE)
    rejected(rb, rb.event("m.room.member", BOB, dict(via, join_authorised_via_users_server=DAVE), BOB), "authorised")
    # Already invited: no authoriser needed.
    rb.add("m.room.member", ALICE, {"membership": "invite"}, BOB)
    allowed(rb, rb.event("m.room.member", BOB, {"membership": "join"}, BOB))


def test_restricted_not_in_v7():
    rb = room("7", join_rule="restricted")
    via = {"membership": "join", "join_authorised_via_users_server": ALICE}
    rejected(rb, rb.event("m.room.member", BOB, via, BOB))


def test_invite_rules():
    rb = room()
    allowed(rb, rb.event("m.room.member", ALICE, {"membership": "invite"}, BOB))
    rejected(rb, rb.event("m.room.member", CAROL, {"membership": "invite"}, BOB), "must be in the room")
    rb.join(BOB)
    rejected(rb, rb.event("m.room.member", ALICE, {"membership": "invite"}, BOB), "already")
    rb.add("m.room.power_levels", ALICE, {"users": {ALICE: 100}, "invite": 10}, "")
    rejected(rb, rb.event("m.room.member", BOB, {"membership": "invite"}, CAROL), "power level")


def _tpi_room(version="10"):
    rb = room(version)
    key = generate_signing_key("0")
    rb.add("m.room.third_party_invite", ALICE,
           {"display_name": "c...", "public_key": encode_verify_key_base64(get_verify_key(key)),
            "key_validity_url": "https://id.example/v"}, "tok")
    signed = sign_json({"mxid": CAROL, "token": "tok"}, "id.example", key)
    return rb, signed


def test_third_party_invite_allowed():
    rb, signed = _tpi_room()
    ev = rb.event("m.room.member", ALICE, {"membership": "invite", "third_party_invite": {"signed": signed}}, CAROL)
    assert ("m.room.third_party_invite", "tok") in auth_types_for_event(ev.type, ev.sender, ev.state_key, ev.content, ev.room_version)
    allowed(rb, ev)


@pytest.mark.parametrize("case", ["no_signed", "no_token", "mxid", "no_event", "sender", "bad_sig", "banned"])
def test_third_party_invite_rejected(case):
    rb, signed = _tpi_room()
    target, sender = CAROL, ALICE
    tpi = {"signed": dict(signed)}
    if case == "no_signed":
        tpi = {}
    elif case == "no_token":
        del tpi["signed"]["token"]
    elif case == "mxid":
        target = DAVE
    elif case == "no_event":
        other = sign_json({"mxid": CAROL, "token": "other"}, "id.example", generate_signing_key("0"))
        tpi = {"signed": other}
    elif case == "sender":
        rb.join(BOB)
        rb.add("m.room.power_levels", ALICE, {"users": {ALICE: 100}}, "")
        sender = BOB
    elif case == "bad_sig":
        tpi = {"signed": sign_json({"mxid": CAROL, "token": "tok"}, "id.example", generate_signing_key("0"))}
    elif case == "banned":
        rb.add("m.room.member", ALICE, {"membership": "ban"}, CAROL)
    rejected(rb, rb.event("m.room.member", sender, {"membership": "invite", "third_party_invite": tpi}, target))


def test_leave_self():
    rb = room()
    rb.join(BOB)
    allowed(rb, rb.event("m.room.member", BOB, {"membership": "leave"}, BOB))
    rejected(rb, rb.event("m.room.member", CAROL, {"membership": "leave"}, CAROL), "not in")


def test_leave_after_knock_v7_only():
    rb = room("7", join_rule="knock")
    rb.add("m.room.member", BOB, {"membership": "knock"}, BOB)
    allowed(rb, rb.event("m.room.member", BOB, {"membership": "leave"}, BOB))


def test_kick_rules():
    rb = room(power_users={BOB: 50})
    rb.join(BOB)
    rb.join(CAROL)
    allowed(rb, rb.event("m.room.member", ALICE, {"membership": "leave"}, BOB))
    rejected(rb, rb.event("m.room.member", CAROL, {"membership": "leave"}, BOB), "kick")
    rejected(rb, rb.event("m.room.member", BOB, {"membership": "leave"}, ALICE), "kick")
    rejected(rb, rb.event("m.room.member", DAVE, {"membership": "leave"}, CAROL), "must be in the room")


def test_unban_needs_ban_level():
    rb = room(power_users={BOB: 50})
    rb.join(BOB)
    rb.add("m.room.member", ALICE, {"membership": "ban"}, CAROL)
    allowed(rb, rb.event("m.room.member", BOB, {"membership": "leave"}, CAROL))
    rb.add("m.room.power_levels", ALICE, {"users": {ALICE: 100, BOB: 50}, "ban": 60}, "")
    rejected(rb, rb.event("m.room.member", BOB, {"membership": "leave"}, CAROL), "unban")


def test_ban_rules():
    rb = room(power_users={BOB: 50})
    rb.join(BOB)
    allowed(rb, rb.event("m.room.member", BOB, {"membership": "ban"}, CAROL))
    rejected(rb, rb.event("m.room.member", BOB, {"membership": "ban"}, ALICE), "ban")
    rejected(rb, rb.event("m.room.member", CAROL, {"membership": "ban"}, DAVE), "must be in the room")


@pytest.mark.parametrize("version,rule", [("7", "knock"), ("10", "knock_restricted")])
def test_knock_rules(version, rule):
    rb = room(version, join_rule=rule)
    allowed(rb, rb.event("m.room.member", BOB, {"membership": "knock"}, BOB))
    rejected(rb, rb.event("m.room.member", BOB, {"membership": "knock"}, CAROL), "behalf")
    rb.add("m.room.member", ALICE, {"membership": "invite"}, BOB)
    rejected(rb, rb.event("m.room.member", BOB, {"membership": "knock"}, BOB), "invited")


def test_knock_rejections_by_version_and_rule():
    rb = room("10", join_rule="public")
    rejected(rb, rb.event("m.room.member", BOB, {"membership": "knock"}, BOB), "knocks")
    rb9 = room("9", join_rule="knock_restricted")
    rejected(rb9, rb9.event("m.room.member", BOB, {"membership": "knock"}, BOB), "knocks")
    rb6 = room("6", join_rule="knock")
    rejected(rb6, rb6.event("m.room.member", BOB, {"membership": "knock"}, BOB), "unknown membership")


def test_unknown_membership():
    rb = room()
    rejected(rb, rb.event("m.room.member", ALICE, {"membership": "dance"}, ALICE), "unknown")


# --- rules 6-9 --------------------------------------------------------------------------


def test_sender_must_be_joined():
    rb = room()
    allowed(rb, rb.event("m.room.message", ALICE, {"body": "x"}))
    rejected(rb, rb.event("m.room.message", BOB, {"body": "x"}), "not in the room")


def test_third_party_invite_event_level():
    rb = room(power_users={})
    rb.join(BOB)
    allowed(rb, rb.event("m.room.third_party_invite", BOB, {}, "t"))
    rb.add("m.room.power_levels", ALICE, {"users": {ALICE: 100}, "invite": 50}, "")
    rejected(rb, rb.event("m.room.third_party_invite", BOB, {}, "t"), "invite")


def test_required_power_level():
    rb = room()
    rb.join(BOB)
    allowed(rb, rb.event("m.room.message", BOB, {}))
    rejected(rb, rb.event("m.room.topic", BOB, {"topic": "x"}, ""), "power level")
    rb.add("m.room.power_levels", ALICE, {"users": {ALICE: 100}, "events": {"m.room.message": 10}}, "")
    rejected(rb, rb.event("m.room.message", BOB, {}), "power level")


def test_user_keyed_state():
    rb = room()
    allowed(rb, rb.event("m.custom", ALICE, {}, ALICE))
    rejected(rb, rb.event("m.custom", ALICE, {}, BOB), "another user")


# --- rule 10: power levels --------------------------------------------------------------


def test_power_levels_first_event_allowed():
    rb = RoomBuilder("10")
    rb.add("m.room.create", ALICE, {"creator": ALICE, "room_version": "10"}, "", prev=[])
    rb.join(ALICE)
    allowed(rb, rb.event("m.room.power_levels", ALICE, {"users": {ALICE: 100, BOB: 100}, "ban": 1000}, ""))


@pytest.mark.parametrize(
    "content,match",
    [
        ({"users": {ALICE: 100}, "ban": "50"}, "integer"),
        ({"users": {ALICE: 100}, "kick": 50.0}, "integer"),
        ({"users": {ALICE: 100}, "events": {"x": "1"}}, "integer"),
        ({"users": {ALICE: 100}, "notifications": []}, "object"),
        ({"users": {ALICE: 100, "bob": 1}}, "user ID"),
        ({"users": {ALICE: True}}, "integer"),
    ],
)
def test_power_levels_shape_v10(content, match):
    rb = room("10")
    rejected(rb, rb.event("m.room.power_levels", ALICE, content, ""), match)


def test_power_levels_strings_ok_before_v10():
    rb = room("9")
    allowed(rb, rb.event("m.room.power_levels", ALICE, {"users": {ALICE: " +100 "}, "ban": "050"}, ""))
    rejected(rb, rb.event("m.room.power_levels", ALICE, {"users": {ALICE: "1e2"}}, ""), "integer")


def _mod_room(version="10"):
    rb = room(version, power_users={BOB: 50, CAROL: 50})
    rb.join(BOB)
    rb.join(CAROL)
    return rb


def _pl(extra_users=None, **kw):
    users = {ALICE: 100, BOB: 50, CAROL: 50}
    users.update(extra_users or {})
    return {"users": {k: v for k, v in users.items() if v is not None}, **kw}


@pytest.mark.parametrize(
    "content,ok",
    [
        (_pl(kick=40), True),                 # change a default from 50 (= own) to 40
        (_pl(kick=60), False),                # new value above own level
        (_pl(state_default=10), True),
        (_pl(events={"m.room.name": 50}), True),
        (_pl(events={"m.room.name": 51}), False),
        (_pl({DAVE: 50}), True),              # grant up to own level
        (_pl({DAVE: 51}), False),
        (_pl({CAROL: 10}), False),            # demote a peer (current == own)
        (_pl({BOB: 10}), True),               # demote self
        (_pl({ALICE: 50}), False),            # demote a superior
        (_pl({ALICE: None}), False),          # remove a superior
    ],
)
def test_power_level_changes(content, ok):
    rb = _mod_room()
    rb.add("m.room.power_levels", ALICE, _pl(events={"m.room.power_levels": 50}), "")
    ev = rb.event("m.room.power_levels", BOB, content if "events" in content else dict(content, events={"m.room.power_levels": 50}), "")
    (allowed if ok else rejected)(rb, ev)


def test_power_level_change_from_above():
    rb = _mod_room()
    rb.add("m.room.power_levels", ALICE, _pl(events={"m.room.power_levels": 50, "m.room.tombstone": 100}, ban=100), "")
    base = {"events": {"m.room.power_levels": 50, "m.room.tombstone": 100}, "ban": 100}
    rejected(rb, rb.event("m.room.power_levels", BOB, _pl(**dict(base, ban=50)), ""), "ban")
    rejected(rb, rb.event("m.room.power_levels", BOB, _pl(**dict(base, events={"m.room.power_levels": 50})), ""), "tombstone")


def test_notifications_checked_from_v6():
    for version, ok in (("5", True), ("6", False)):
        rb = _mod_room(version)
        rb.add("m.room.power_levels", ALICE, _pl(events={"m.room.power_levels": 50}, notifications={"room": 100}), "")
        ev = rb.event("m.room.power_levels", BOB, _pl(events={"m.room.power_levels": 50}, notifications={"room": 0}), "")
        (allowed if ok else rejected)(rb, ev)


# --- v12 creators ---------------------------------------------------------------------------


def test_v12_creators_infinite_power():
    rb = RoomBuilder("12")
    rb.create_room(create_content={"additional_creators": [BOB]})
    rb.join(BOB)
    rb.join(CAROL)
    # Creators cannot appear in users.
    rejected(rb, rb.event("m.room.power_levels", ALICE, {"users": {BOB: 100}}, ""), "creators")
    allowed(rb, rb.event("m.room.power_levels", ALICE, {"users": {CAROL: 100}}, ""))
    rb.add("m.room.power_levels", ALICE, {"users": {CAROL: 100}}, "")
    # CAROL at 100 cannot kick BOB (infinite), BOB can kick CAROL.
    rejected(rb, rb.event("m.room.member", CAROL, {"membership": "leave"}, BOB), "kick")
    allowed(rb, rb.event("m.room.member", BOB, {"membership": "leave"}, CAROL))
    # Creators cannot kick each other either (inf is not < inf).
    rejected(rb, rb.event("m.room.member", ALICE, {"membership": "ban"}, BOB), "ban")
    # Create event never cited in v12.
    assert ("m.room.create", "") not in auth_types_for_event("m.room.message", BOB, None, {}, V("12"))


def test_power_levels_view_defaults():
    rv = V("10")
    none = PowerLevels(None, rv, frozenset({ALICE}))
    assert none.user_level(ALICE) == 100 and none.user_level(BOB) == 0
    assert none.event_level("m.room.topic", True) == 50 and none.event_level("m.room.message", False) == 0
    assert (none.invite, none.kick, none.ban, none.redact) == (0, 50, 50, 50)
    assert none.notification_level("room") == 50
    pl = PowerLevels({"users": {BOB: 7}, "users_default": 3, "notifications": {"room": 20}}, rv, frozenset({ALICE}))
    assert pl.user_level(ALICE) == 3 and pl.user_level(BOB) == 7 and pl.notification_level() == 20
    floaty = PowerLevels({"users": {BOB: 50.57}, "ban": "  +70 "}, V("5"))
    assert floaty.user_level(BOB) == 50 and floaty.ban == 70
    assert PowerLevels({}, V("12"), frozenset({ALICE})).user_level(ALICE) == float("inf")


# --- v1/v2 redaction rule ---------------------------------------------------------------------


def test_v1_redaction_rule():
    rb = room("1")
    rb.join(BOB)
    own = rb.event("m.room.redaction", BOB, {}, extra={"redacts": "$5:a.example"})
    allowed(rb, own)  # same event-ID domain (a.example) as the redaction
    foreign = rb.event("m.room.redaction", BOB, {}, extra={"redacts": "$5:b.example"})
    rejected(rb, foreign, "redact")
    allowed(rb, rb.event("m.room.redaction", ALICE, {}, extra={"redacts": "$5:b.example"}))
    rb3 = room("3")
    rb3.join(BOB)
    allowed(rb3, rb3.event("m.room.redaction", BOB, {}, extra={"redacts": "$anything"}))
