"""The server-default push rules, as data, in the order the spec lists them.

Rule ids start with a dot (server-default). ``USER_ID`` and ``LOCALPART`` are
placeholders replaced per user (see :func:`default_rules_for`).

The current spec (v1.17) removed the three legacy mention rules that look in
``content.body`` (``.m.rule.contains_display_name``, ``.m.rule.roomnotif`` and
``.m.rule.contains_user_name``). We keep them, at the positions they used to
have, because many clients still send mentions only in the body (WeChat-style
"@name" typing, bots, bridges). As the spec prescribed while they existed,
they do not apply to an event whose content has an ``m.mentions`` property
(the evaluator enforces that), so clients that send ``m.mentions`` get exactly
the current spec's behaviour.
"""
from __future__ import annotations

import copy
from typing import Any

USER_ID = "[the user's Matrix ID]"
LOCALPART = "[the local part of the user's Matrix ID]"

KINDS = ("override", "content", "room", "sender", "underride")

#: Rule ids that only apply to events without ``content.m.mentions``.
LEGACY_MENTION_RULES = frozenset({
    ".m.rule.contains_display_name", ".m.rule.roomnotif", ".m.rule.contains_user_name"})

_SOUND = {"set_tweak": "sound", "value": "default"}
_HIGHLIGHT = {"set_tweak": "highlight"}


def _match(key: str, pattern: str) -> dict[str, Any]:
    return {"kind": "event_match", "key": key, "pattern": pattern}


def _rule(rule_id: str, conditions: list[dict[str, Any]], actions: list[Any],
          enabled: bool = True) -> dict[str, Any]:
    return {"rule_id": rule_id, "default": True, "enabled": enabled,
            "conditions": conditions, "actions": actions}


#: ``.m.rule.master`` comes before every rule, user-defined ones included.
MASTER = _rule(".m.rule.master", [], [], enabled=False)

#: The remaining default override rules (after the user's own override rules).
OVERRIDE = [
    _rule(".m.rule.suppress_notices", [_match("content.msgtype", "m.notice")], []),
    _rule(".m.rule.invite_for_me",
          [_match("type", "m.room.member"), _match("content.membership", "invite"),
           _match("state_key", USER_ID)],
          ["notify", _SOUND]),
    _rule(".m.rule.member_event", [_match("type", "m.room.member")], []),
    _rule(".m.rule.is_user_mention",
          [{"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": USER_ID}],
          ["notify", _SOUND, _HIGHLIGHT]),
    _rule(".m.rule.contains_display_name", [{"kind": "contains_display_name"}],
          ["notify", _SOUND, _HIGHLIGHT]),
    _rule(".m.rule.is_room_mention",
          [{"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
           {"kind": "sender_notification_permission", "key": "room"}],
          ["notify", _HIGHLIGHT]),
    _rule(".m.rule.roomnotif",
          [_match("content.body", "@room"), {"kind": "sender_notification_permission", "key": "room"}],
          ["notify", _HIGHLIGHT]),
    _rule(".m.rule.tombstone", [_match("type", "m.room.tombstone"), _match("state_key", "")],
          ["notify", _HIGHLIGHT]),
    _rule(".m.rule.reaction", [_match("type", "m.reaction")], []),
    _rule(".m.rule.room.server_acl", [_match("type", "m.room.server_acl"), _match("state_key", "")], []),
    _rule(".m.rule.suppress_edits",
          [{"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.replace"}],
          []),
]

#: Default content rules (after the user's own content rules).
CONTENT = [
    {"rule_id": ".m.rule.contains_user_name", "default": True, "enabled": True,
     "pattern": LOCALPART, "actions": ["notify", _SOUND, _HIGHLIGHT]},
]

#: Default underride rules (after the user's own underride rules).
UNDERRIDE = [
    _rule(".m.rule.call", [_match("type", "m.call.invite")],
          ["notify", {"set_tweak": "sound", "value": "ring"}]),
    _rule(".m.rule.encrypted_room_one_to_one",
          [{"kind": "room_member_count", "is": "2"}, _match("type", "m.room.encrypted")],
          ["notify", _SOUND]),
    _rule(".m.rule.room_one_to_one",
          [{"kind": "room_member_count", "is": "2"}, _match("type", "m.room.message")],
          ["notify", _SOUND]),
    _rule(".m.rule.message", [_match("type", "m.room.message")], ["notify"]),
    _rule(".m.rule.encrypted", [_match("type", "m.room.encrypted")], ["notify"]),
]

#: kind -> default rules of that kind, in evaluation order.
DEFAULTS: dict[str, list[dict[str, Any]]] = {
    "override": [MASTER, *OVERRIDE],
    "content": CONTENT,
    "room": [],
    "sender": [],
    "underride": UNDERRIDE,
}

#: (kind, rule_id) of every server-default rule.
DEFAULT_IDS: frozenset[tuple[str, str]] = frozenset(
    (kind, r["rule_id"]) for kind, rules in DEFAULTS.items() for r in rules)


def localpart(user_id: str) -> str:
    return user_id[1:].split(":", 1)[0]


def substitute(rule: dict[str, Any], user_id: str) -> dict[str, Any]:
    """A copy of a default rule with the user's ID / localpart filled in."""
    out = copy.deepcopy(rule)
    for cond in out.get("conditions", ()):
        for field in ("pattern", "value"):
            if cond.get(field) == USER_ID:
                cond[field] = user_id
    if out.get("pattern") == LOCALPART:
        out["pattern"] = localpart(user_id)
    return out
