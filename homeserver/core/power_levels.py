"""A read-only view over ``m.room.power_levels`` content with spec defaults.

Defaults (from the ``m.room.power_levels`` schema and the federation
"Definitions"): ``users_default`` 0, ``events_default`` 0, ``state_default``
50, ``invite`` 0, ``kick``/``ban``/``redact`` 50, ``notifications.room`` 50.
With no power levels event at all, the room creator has 100 and everyone
else 0. From room version 12 the creators (create event sender plus
``additional_creators``) have infinite power whatever the event says.

Older room versions tolerate string (v1-v9) and float (v1-v5) values; they
are normalised here so callers always compare numbers.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, Mapping

from homeserver.core.room_versions import RoomVersion

if TYPE_CHECKING:
    from homeserver.core.events import Event

CREATOR_POWER_LEVEL = math.inf
"""What :meth:`PowerLevels.user_level` returns for v12+ room creators."""

_STRINGY_INT_RE = re.compile(r"\s*[+-]?\d+\s*")
_DEFAULTS = {
    "users_default": 0,
    "events_default": 0,
    "state_default": 50,
    "invite": 0,
    "kick": 50,
    "ban": 50,
    "redact": 50,
}
SCALAR_KEYS = tuple(_DEFAULTS)


def parse_power_level(value: Any, room_version: RoomVersion) -> int | None:
    """Normalise one power level value, or None if the version disallows it.

    v10+: integers only. v1-v9: also strings holding a base-10 integer with
    optional sign and surrounding whitespace. v1-v5: also finite floats,
    truncated toward zero.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if room_version.integer_power_levels:
        return None
    if isinstance(value, str):
        return int(value) if _STRINGY_INT_RE.fullmatch(value) else None
    if isinstance(value, float) and not room_version.strict_canonical_json:
        return int(value) if math.isfinite(value) else None
    return None


def room_creators(create_event: "Event | None", room_version: RoomVersion) -> frozenset[str]:
    """The users the create event names as creators.

    v12+: its sender plus ``content.additional_creators``. v11: its sender.
    Before v11: ``content.creator``.
    """
    if create_event is None:
        return frozenset()
    if not room_version.implicit_room_creator:
        creator = create_event.content.get("creator")
        return frozenset((creator,)) if isinstance(creator, str) else frozenset()
    creators = {create_event.sender}
    if room_version.creators_have_infinite_power:
        extra = create_event.content.get("additional_creators")
        if isinstance(extra, list):
            creators.update(u for u in extra if isinstance(u, str))
    return frozenset(creators)


class PowerLevels:
    """Power levels of a room at one point in its state.

    Args:
        content: The ``m.room.power_levels`` content, or None if the room
            has no such event.
        room_version: The room's version.
        creators: The room creators (see :func:`room_creators`).
    """

    __slots__ = (
        "content", "room_version", "creators", "has_event", "_users", "_events",
        "users_default", "events_default", "state_default", "invite", "kick", "ban", "redact",
    )

    content: Mapping[str, Any]
    room_version: RoomVersion
    creators: frozenset[str]
    has_event: bool
    users_default: int
    events_default: int
    state_default: int
    invite: int
    kick: int
    ban: int
    redact: int

    def __init__(
        self,
        content: Mapping[str, Any] | None,
        room_version: RoomVersion,
        creators: frozenset[str] = frozenset(),
    ) -> None:
        self.room_version = room_version
        self.creators = creators
        self.has_event = content is not None
        self.content = content or {}
        level = self._scalar
        self.users_default = level("users_default")
        self.events_default = level("events_default")
        self.state_default = level("state_default")
        self.invite = level("invite")
        self.kick = level("kick")
        self.ban = level("ban")
        self.redact = level("redact")
        users = self.content.get("users")
        self._users: Mapping[str, Any] = users if isinstance(users, dict) else {}
        events = self.content.get("events")
        self._events: Mapping[str, Any] = events if isinstance(events, dict) else {}

    def _scalar(self, key: str) -> int:
        raw = self.content.get(key)
        value = None if raw is None else parse_power_level(raw, self.room_version)
        return _DEFAULTS[key] if value is None else value

    @classmethod
    def from_events(
        cls, power_levels_event: "Event | None", create_event: "Event | None", room_version: RoomVersion
    ) -> "PowerLevels":
        """Build from the room's current power levels and create events."""
        return cls(
            power_levels_event.content if power_levels_event is not None else None,
            room_version,
            room_creators(create_event, room_version),
        )

    def user_level(self, user_id: str) -> int | float:
        """The user's power level; ``math.inf`` for v12+ creators."""
        if self.room_version.creators_have_infinite_power and user_id in self.creators:
            return CREATOR_POWER_LEVEL
        raw = self._users.get(user_id)
        if raw is not None:
            level = parse_power_level(raw, self.room_version)
            if level is not None:
                return level
        if not self.has_event and user_id in self.creators:
            return 100
        return self.users_default

    def event_level(self, event_type: str, is_state: bool) -> int:
        """The level required to send an event of this type."""
        raw = self._events.get(event_type)
        if raw is not None:
            level = parse_power_level(raw, self.room_version)
            if level is not None:
                return level
        return self.state_default if is_state else self.events_default

    def notification_level(self, key: str = "room") -> int:
        """The level needed to trigger a notification (``room`` = ``@room``)."""
        notifications = self.content.get("notifications")
        if isinstance(notifications, dict) and key in notifications:
            level = parse_power_level(notifications[key], self.room_version)
            if level is not None:
                return level
        return 50

    @property
    def users(self) -> dict[str, int]:
        """Explicit user levels (normalised; invalid values dropped)."""
        out = {}
        for user, raw in self._users.items():
            level = parse_power_level(raw, self.room_version)
            if level is not None:
                out[user] = level
        return out
