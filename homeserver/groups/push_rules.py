"""The push-rule hook for group announcements (for the push rules engine, branch push).

An announcement (``im.qun.announcement`` state) carries ``"m.mentions":
{"room": true}``, so the spec's default override rule ``.m.rule.is_room_mention``
already makes it a highlight for every member (its sender is an owner or
admin, at the room's ``notifications.room`` level). :data:`ANNOUNCEMENT_OVERRIDE_RULE`
says the same without relying on the mention, for servers that add it to the
default override rules (right after ``.m.rule.is_room_mention``); it is a
plain push rule in the spec's format.
"""
from __future__ import annotations

from typing import Any

ANNOUNCEMENT_OVERRIDE_RULE: dict[str, Any] = {
    "rule_id": ".im.qun.rule.announcement",
    "default": True,
    "enabled": True,
    "conditions": [
        {"kind": "event_match", "key": "type", "pattern": "im.qun.announcement"},
        {"kind": "sender_notification_permission", "key": "room"},
    ],
    "actions": ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}],
}
