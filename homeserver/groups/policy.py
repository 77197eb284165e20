"""The groups' rules enforced inside the room layer (docs/groups.md).

Three small checks, plugged into the room layer by ``server.py``:

* :meth:`GroupPolicy.check_event` (an ``EventBuilder`` check, run on the
  room's tip right after the auth rules, with no await before the event is
  queued): the member cap on every local join (a plain join, an accepted
  invite, an approved knock, a join by invite code or face to face) and the
  @room rule (only users at the room's ``notifications.room`` level may
  mention everyone; others are refused, as WeChat hides "@all" from them).
* :meth:`GroupPolicy.check_redaction` (a ``Redactor`` check): the recall
  window for members redacting their own events.

Federation should call :meth:`check_event` too when it admits a remote join
(make_join/send_join), so the cap holds for remote users.
"""
from __future__ import annotations

import re
from typing import Any

from homeserver.api.errors import MatrixError
from homeserver.core.events import Event
from homeserver.groups.config import GroupsConfig
from homeserver.rooms.state_cache import RoomState
from homeserver.storage.events import StoredEvent
from homeserver.util.clock import Clock

GROUP_FULL = "IM.QUN_GROUP_FULL"
RECALL_WINDOW_PASSED = "IM.QUN_RECALL_WINDOW_PASSED"
MENTION_FORBIDDEN = "IM.QUN_ROOM_MENTION_FORBIDDEN"

#: "@room" as a word, as the spec's .m.rule.roomnotif matches it in the body.
_AT_ROOM = re.compile(r"(?<![\w@])@room(?![\w])")


def group_full(max_members: int) -> MatrixError:
    return MatrixError(403, GROUP_FULL, f"The group is full ({max_members} members).", limit=max_members)


def mentions_room(content: dict[str, Any]) -> bool:
    """Does the content mention the whole room (m.mentions.room or "@room" in the body)?"""
    for c in (content, content.get("m.new_content")):
        if not isinstance(c, dict):
            continue
        mentions = c.get("m.mentions")
        if isinstance(mentions, dict) and mentions.get("room") is True:
            return True
        body = c.get("body")
        if isinstance(body, str) and "@room" in body and _AT_ROOM.search(body):
            return True
    return False


class GroupPolicy:
    def __init__(self, config: GroupsConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock

    def check_event(self, room: RoomState, event: Event) -> None:
        """Refuse a local event the group rules forbid (it already passed the auth rules)."""
        if event.type == "m.room.member":
            if event.membership == "join":
                prev = room.tip_get("m.room.member", event.state_key or "")
                if (prev is None or prev.membership != "join") \
                        and room.tip_joined_count() >= self.config.max_members:
                    raise group_full(self.config.max_members)
            return
        if event.is_state() or event.type == "m.room.redaction":
            return
        if mentions_room(event.content):
            pl = room.tip_power_levels()
            if pl.user_level(event.sender) < pl.notification_level("room"):
                raise MatrixError(403, MENTION_FORBIDDEN,
                                  "Only the owner and admins may mention everyone (@room).")

    def check_redaction(self, room: RoomState, redacter: str, target: StoredEvent) -> None:
        """Members may recall their own events only within the recall window."""
        window = self.config.recall_window_ms
        if window <= 0 or target.event.sender != redacter:
            return
        pl = room.power_levels
        if pl.user_level(redacter) >= pl.redact:
            return  # owner and admins remove any message at any time
        if self.clock.time_msec() - target.event.origin_server_ts > window:
            raise MatrixError(403, RECALL_WINDOW_PASSED,
                              f"Messages can only be recalled within {window // 1000} seconds of sending.",
                              recall_window_ms=window)
