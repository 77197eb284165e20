"""Pure tests of the push rule evaluator: every default rule fires and does not fire."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

import homeserver.push
from homeserver.push import rules as defaults
from homeserver.push.evaluator import (
    EventContext, compile_condition, contains_words, evaluate, split_path, tweaks_of)
from homeserver.push.ruleset import DEFAULT_COMPILED, DefaultChange, UserRules

ME = "@alice:test.local"
OTHER = "@bob:test.local"
ROOM = "!room:test.local"


def msg(body: str = "hello", **content: Any) -> dict[str, Any]:
    return {"type": "m.room.message", "room_id": ROOM, "sender": OTHER,
            "content": {"msgtype": "m.text", "body": body, **content}}


def rule_for(event: dict[str, Any], members: int = 5, power: int = 0, rules=DEFAULT_COMPILED,
             user: str = ME, name: str | None = "Alice Liddell", levels=None) -> str | None:
    ctx = EventContext(event, members, power, levels)
    found = evaluate(ctx, rules, user, name)
    return found.rule_id if found else None


# (rule id, an event that fires it, evaluation kwargs, an event that does not fire it)
CASES = [
    (".m.rule.suppress_notices", msg(msgtype="m.notice"), {}, msg()),
    (".m.rule.invite_for_me",
     {"type": "m.room.member", "state_key": ME, "sender": OTHER, "room_id": ROOM,
      "content": {"membership": "invite"}}, {},
     {"type": "m.room.member", "state_key": "@carol:test.local", "sender": OTHER, "room_id": ROOM,
      "content": {"membership": "invite"}}),
    (".m.rule.member_event",
     {"type": "m.room.member", "state_key": OTHER, "sender": OTHER, "room_id": ROOM,
      "content": {"membership": "join"}}, {}, msg()),
    (".m.rule.is_user_mention", msg("hi", **{"m.mentions": {"user_ids": [ME]}}), {},
     msg("hi", **{"m.mentions": {"user_ids": ["@carol:test.local"]}})),
    (".m.rule.contains_display_name", msg("ask alice liddell!"), {}, msg("ask Alice Liddells")),
    (".m.rule.is_room_mention", msg("hi", **{"m.mentions": {"room": True}}), {"power": 50},
     msg("hi", **{"m.mentions": {"room": "true"}})),
    (".m.rule.roomnotif", msg("@room lunch"), {"power": 100}, msg("@roomy lunch", **{})),
    (".m.rule.tombstone",
     {"type": "m.room.tombstone", "state_key": "", "sender": OTHER, "room_id": ROOM,
      "content": {"replacement_room": "!n:x"}}, {},
     {"type": "m.room.tombstone", "sender": OTHER, "room_id": ROOM, "content": {}}),
    (".m.rule.reaction",
     {"type": "m.reaction", "sender": OTHER, "room_id": ROOM,
      "content": {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$x", "key": "👍"}}}, {},
     {"type": "m.reactionx", "sender": OTHER, "room_id": ROOM, "content": {}}),
    (".m.rule.room.server_acl",
     {"type": "m.room.server_acl", "state_key": "", "sender": OTHER, "room_id": ROOM,
      "content": {"allow": ["*"]}}, {},
     {"type": "m.room.server_acl", "state_key": "x", "sender": OTHER, "room_id": ROOM, "content": {}}),
    (".m.rule.suppress_edits",
     msg("* fixed", **{"m.relates_to": {"rel_type": "m.replace", "event_id": "$x"}}), {},
     msg("reply", **{"m.relates_to": {"rel_type": "m.reference", "event_id": "$x"}})),
    (".m.rule.contains_user_name", msg("ping ALICE please"), {"name": None}, msg("ping alice_x please")),
    (".m.rule.call", {"type": "m.call.invite", "sender": OTHER, "room_id": ROOM, "content": {}}, {},
     {"type": "m.call.answer", "sender": OTHER, "room_id": ROOM, "content": {}}),
    (".m.rule.encrypted_room_one_to_one",
     {"type": "m.room.encrypted", "sender": OTHER, "room_id": ROOM, "content": {}}, {"members": 2}, msg()),
    (".m.rule.room_one_to_one", msg(), {"members": 2},
     {"type": "m.room.encrypted", "sender": OTHER, "room_id": ROOM, "content": {}}),
    (".m.rule.message", msg(), {}, {"type": "m.room.topic", "state_key": "", "sender": OTHER,
                                     "room_id": ROOM, "content": {"topic": "hi"}}),
    (".m.rule.encrypted", {"type": "m.room.encrypted", "sender": OTHER, "room_id": ROOM, "content": {}},
     {}, {"type": "m.room.encryption", "state_key": "", "sender": OTHER, "room_id": ROOM, "content": {}}),
]


@pytest.mark.parametrize("rule_id, fires, kwargs, not_fires", CASES, ids=[c[0] for c in CASES])
def test_default_rule(rule_id, fires, kwargs, not_fires):
    assert rule_for(fires, **kwargs) == rule_id
    assert rule_for(not_fires, **kwargs) != rule_id


def test_master_rule_fires_only_when_enabled():
    rules = UserRules(changes={("override", ".m.rule.master"): DefaultChange(enabled=True)}).compile()
    assert rule_for(msg("alice"), rules=rules) == ".m.rule.master"
    assert rule_for(msg("alice")) != ".m.rule.master"


def test_every_spec_rule_is_covered_and_in_order():
    ids = [r["rule_id"] for kind in defaults.KINDS for r in defaults.DEFAULTS[kind]]
    assert ids == [
        ".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me", ".m.rule.member_event",
        ".m.rule.is_user_mention", ".m.rule.contains_display_name", ".m.rule.is_room_mention",
        ".m.rule.roomnotif", ".m.rule.tombstone", ".m.rule.reaction", ".m.rule.room.server_acl",
        ".m.rule.suppress_edits", ".m.rule.contains_user_name", ".m.rule.call",
        ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one", ".m.rule.message",
        ".m.rule.encrypted"]
    covered = {c[0] for c in CASES} | {".m.rule.master"}
    assert covered == set(ids)


def test_legacy_mention_rules_ignored_when_event_has_m_mentions():
    event = msg("alice @room", **{"m.mentions": {}})
    assert rule_for(event, power=100) == ".m.rule.message"


def test_highlight_and_tweaks():
    ctx = EventContext(msg("hi", **{"m.mentions": {"user_ids": [ME]}}), 5)
    rule = evaluate(ctx, DEFAULT_COMPILED, ME)
    assert rule.notify and rule.highlight
    assert tweaks_of(rule.actions) == {"sound": "default", "highlight": True}
    plain = evaluate(EventContext(msg("hi"), 5), DEFAULT_COMPILED, ME)
    assert plain.notify and not plain.highlight


def test_sender_notification_permission_uses_power_levels():
    event = msg("hi", **{"m.mentions": {"room": True}})
    assert rule_for(event, power=10, levels={"room": 10}) == ".m.rule.is_room_mention"
    assert rule_for(event, power=9, levels={"room": 10}) == ".m.rule.message"


@pytest.mark.parametrize("spec, count, expected", [
    ("2", 2, True), ("==2", 3, False), ("<3", 2, True), ("<3", 3, False), (">3", 4, True),
    ("<=3", 3, True), (">=3", 2, False), (">=3", 3, True), ("x3", 3, False), ("", 0, False)])
def test_room_member_count(spec, count, expected):
    cond = compile_condition({"kind": "room_member_count", "is": spec})
    assert cond.matches(EventContext(msg(), count)) is expected


def test_event_match_glob_and_case():
    ctx = EventContext({"type": "m.room.topic", "content": {"topic": "Lunch plans"}}, 2)
    assert compile_condition({"kind": "event_match", "key": "content.topic", "pattern": "lunc?*"}).matches(ctx)
    for topic in (" lunch", "lunc", None):
        ctx = EventContext({"type": "m.room.topic", "content": {"topic": topic}}, 2)
        assert not compile_condition(
            {"kind": "event_match", "key": "content.topic", "pattern": "lunc?*"}).matches(ctx)
    star = compile_condition({"kind": "event_match", "key": "content.missing", "pattern": "*"})
    assert not star.matches(ctx)


def test_body_word_boundaries():
    cond = compile_condition({"kind": "event_match", "key": "content.body", "pattern": "ex*ple"})
    for body in ("An example event.", "exple", "An exciting triple-whammy"):
        assert cond.matches(EventContext(msg(body), 2)), body
    for body in ("examples", "xexample"):
        assert not cond.matches(EventContext(msg(body), 2)), body
    assert contains_words("hi alice.", "Alice") and not contains_words("alice_b", "alice")


def test_property_is_and_contains_are_exact():
    ev = {"type": "m.room.create", "content": {"m.federate": True, "n": 1, "list": ["a", 1, True, {"x": 1}]}}
    ctx = EventContext(ev, 2)
    is_ = lambda key, value: compile_condition(  # noqa: E731
        {"kind": "event_property_is", "key": key, "value": value}).matches(ctx)
    assert is_("content.m\\.federate", True)
    assert not is_("content.m\\.federate", "true") and not is_("content.m\\.federate", 1)
    assert is_("content.n", 1) and not is_("content.n", True)
    has = lambda value: compile_condition(  # noqa: E731
        {"kind": "event_property_contains", "key": "content.list", "value": value}).matches(ctx)
    assert has("a") and has(1) and has(True) and not has("b") and not has({"x": 1})


def test_dotted_path_escapes():
    assert split_path("content.m\\.relates_to.rel_type") == ("content", "m.relates_to", "rel_type")
    assert split_path("content.m\\\\foo") == ("content", "m\\foo")
    assert split_path("content.m\\xfoo") == ("content", "m\\xfoo")


def test_unknown_and_malformed_conditions_never_match():
    ctx = EventContext(msg(), 2)
    for cond in ({"kind": "org.example.unknown"}, {"kind": "event_match", "key": "type"}, "junk",
                 {"kind": "event_property_is", "key": "content.body", "value": 1.5}):
        c = compile_condition(cond)
        assert not c.matches(ctx) and not c.for_user(ctx, ME, None)


def test_user_rules_come_before_defaults_but_after_master():
    own = {"override": [{"rule_id": "quiet", "enabled": True, "actions": [],
                         "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.message"}]}],
           "room": [{"rule_id": ROOM, "enabled": True, "actions": ["dont_notify"]}]}
    rules = UserRules(own=own).compile()
    assert rule_for(msg(), rules=rules) == "quiet"
    # do-not-disturb: the room rule silences plain messages, but override mentions still highlight
    dnd = UserRules(own={"room": own["room"]}).compile()
    assert rule_for(msg(), rules=dnd) == ROOM
    found = evaluate(EventContext(msg(), 5), dnd, ME)
    assert not found.notify and found.actions == ()
    assert rule_for(msg("hi", **{"m.mentions": {"user_ids": [ME]}}), rules=dnd) == ".m.rule.is_user_mention"


def test_many_members_share_the_work():
    users = [f"@u{i}:test.local" for i in range(500)]
    event = msg("hey u7 and U9!", **{})
    ctx = EventContext(event, 500)
    results = {u: evaluate(ctx, DEFAULT_COMPILED, u, None) for u in users}
    highlighted = sorted(u for u, r in results.items() if r.highlight)
    assert highlighted == ["@u7:test.local", "@u9:test.local"]
    assert all(r.notify for r in results.values())


def test_evaluator_is_pure():
    path = Path(homeserver.push.__file__).parent
    for name in ("evaluator.py", "rules.py", "ruleset.py"):
        tree = ast.parse((path / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mod = getattr(node, "module", None) or node.names[0].name
                assert not mod.startswith(("twisted", "homeserver.storage", "treq")), (name, mod)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from homeserver.push.evaluator import glob_matcher  # noqa: E402


def _reference(pattern: str, text: str, words: bool) -> bool:
    import re
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    if words:
        return re.search(r"(?<![A-Za-z0-9_])" + body + r"(?![A-Za-z0-9_])", text, re.I | re.S) is not None
    return re.fullmatch(body, text, re.I | re.S) is not None


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="ab *?-", max_size=8), st.text(alphabet="abAB -_", max_size=14), st.booleans())
def test_glob_matcher_agrees_with_a_backtracking_regex(pattern, text, words):
    assert glob_matcher(pattern, words)(text) == _reference(pattern, text, words), (pattern, text, words)


def test_glob_is_linear_on_hostile_input():
    body = "a " * 30000  # 60 KB, 30000 word boundaries
    matcher = glob_matcher("a*a*a*a*a*a*a*b", True)
    assert matcher(body) is False  # a backtracking regex would take minutes here
    assert glob_matcher("a*a*a*a*a*a*a*b", False)("a" * 60000) is False
