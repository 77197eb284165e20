"""Sync filters: validated at the edge into immutable, fast-to-apply objects.

A filter (``POST /user/{userId}/filter`` or inline JSON in ``/sync?filter=``)
is checked once (wrong shapes → ``M_BAD_JSON``) and turned into a
:class:`SyncFilter`; applying it is plain attribute reads. Type patterns
accept ``*`` wildcards as the spec allows.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from homeserver.api.errors import MatrixError, bad_json

#: Timeline limit when a filter sets none, and the most a client may ask for.
DEFAULT_TIMELINE_LIMIT = 10
MAX_TIMELINE_LIMIT = 100
MAX_LIST = 1000
MAX_FILTER_BYTES = 16 * 1024


def _pattern(values: Sequence[str] | None) -> "re.Pattern[str] | None":
    if values is None:
        return None
    if not values:
        return re.compile(r"(?!x)x")  # matches nothing
    return re.compile("|".join(fnmatch.translate(v) for v in values))


@dataclass(frozen=True)
class EventFilter:
    """``EventFilter`` / ``RoomEventFilter`` of the spec."""

    limit: int | None = None
    types: tuple[str, ...] | None = None
    not_types: tuple[str, ...] = ()
    senders: frozenset[str] | None = None
    not_senders: frozenset[str] = frozenset()
    rooms: frozenset[str] | None = None
    not_rooms: frozenset[str] = frozenset()
    contains_url: bool | None = None
    lazy_load_members: bool = False
    include_redundant_members: bool = False
    _types_re: Any = field(default=None, compare=False, repr=False)
    _not_types_re: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_types_re", _pattern(self.types))
        object.__setattr__(self, "_not_types_re", _pattern(self.not_types) if self.not_types else None)

    @property
    def matches_nothing(self) -> bool:
        return self.limit == 0 or (self.types is not None and not self.types)

    def allows(self, event: Mapping[str, Any]) -> bool:
        etype = event.get("type", "")
        if self._not_types_re is not None and self._not_types_re.match(etype):
            return False
        if self._types_re is not None and not self._types_re.match(etype):
            return False
        sender = event.get("sender")
        if sender in self.not_senders:
            return False
        if self.senders is not None and sender not in self.senders:
            return False
        room_id = event.get("room_id")
        if room_id is not None:
            if room_id in self.not_rooms or (self.rooms is not None and room_id not in self.rooms):
                return False
        if self.contains_url is not None:
            content = event.get("content")
            has_url = isinstance(content, dict) and isinstance(content.get("url"), str)
            if has_url != self.contains_url:
                return False
        return True

    def allows_room(self, room_id: str) -> bool:
        return room_id not in self.not_rooms and (self.rooms is None or room_id in self.rooms)


@dataclass(frozen=True)
class SyncFilter:
    presence: EventFilter = EventFilter()
    account_data: EventFilter = EventFilter()
    rooms: frozenset[str] | None = None
    not_rooms: frozenset[str] = frozenset()
    include_leave: bool = False
    timeline: EventFilter = EventFilter()
    state: EventFilter = EventFilter()
    ephemeral: EventFilter = EventFilter()
    room_account_data: EventFilter = EventFilter()
    event_fields: tuple[str, ...] | None = None
    event_format: str = "client"

    def allows_room(self, room_id: str) -> bool:
        return room_id not in self.not_rooms and (self.rooms is None or room_id in self.rooms)

    @property
    def timeline_limit(self) -> int:
        limit = self.timeline.limit if self.timeline.limit is not None else DEFAULT_TIMELINE_LIMIT
        return min(limit, MAX_TIMELINE_LIMIT)

    @property
    def lazy_load_members(self) -> bool:
        return self.state.lazy_load_members

    def project(self, event: dict[str, Any]) -> dict[str, Any]:
        """Apply ``event_fields`` (dotted paths; ``\\.`` escapes a dot)."""
        if self.event_fields is None:
            return event
        out: dict[str, Any] = {}
        for path in self.event_fields:
            parts = [p.replace("\\.", ".") for p in re.split(r"(?<!\\)\.", path)]
            src: Any = event
            for part in parts:
                if not isinstance(src, dict) or part not in src:
                    src = _MISSING
                    break
                src = src[part]
            if src is _MISSING:
                continue
            dst = out
            for part in parts[:-1]:
                dst = dst.setdefault(part, {})
                if not isinstance(dst, dict):
                    break
            else:
                dst[parts[-1]] = src
        return out


_MISSING = object()
DEFAULT_FILTER = SyncFilter()


def _str_list(value: Any, key: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_json(f"'{key}' must be a list of strings")
    if len(value) > MAX_LIST:
        raise bad_json(f"'{key}' has more than {MAX_LIST} items")
    return tuple(value)


def _bool(body: Mapping[str, Any], key: str, path: str, default: Any = False) -> Any:
    value = body.get(key, default)
    if value is not default and not isinstance(value, bool):
        raise bad_json(f"'{path}{key}' must be true or false")
    return value


def parse_event_filter(body: Any, path: str, room_event: bool = False) -> EventFilter:
    if body is None:
        return EventFilter()
    if not isinstance(body, dict):
        raise bad_json(f"'{path}' must be an object")
    limit = body.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise bad_json(f"'{path}.limit' must be a non-negative integer")
    senders = _str_list(body.get("senders"), f"{path}.senders")
    rooms = _str_list(body.get("rooms"), f"{path}.rooms") if room_event else None
    contains_url = body.get("contains_url")
    if contains_url is not None and not isinstance(contains_url, bool):
        raise bad_json(f"'{path}.contains_url' must be true or false")
    return EventFilter(
        limit=limit,
        types=_str_list(body.get("types"), f"{path}.types"),
        not_types=_str_list(body.get("not_types"), f"{path}.not_types") or (),
        senders=frozenset(senders) if senders is not None else None,
        not_senders=frozenset(_str_list(body.get("not_senders"), f"{path}.not_senders") or ()),
        rooms=frozenset(rooms) if rooms is not None else None,
        not_rooms=frozenset((_str_list(body.get("not_rooms"), f"{path}.not_rooms") or ()) if room_event else ()),
        contains_url=contains_url,
        lazy_load_members=_bool(body, "lazy_load_members", path + ".") if room_event else False,
        include_redundant_members=_bool(body, "include_redundant_members", path + ".") if room_event else False,
    )


def parse_filter(body: Any) -> SyncFilter:
    """Validate a filter definition; ``M_BAD_JSON`` naming the first bad field."""
    if not isinstance(body, dict):
        raise bad_json("Filter must be a JSON object")
    fields = _str_list(body.get("event_fields"), "event_fields")
    fmt = body.get("event_format", "client")
    if fmt not in ("client", "federation"):
        raise bad_json("'event_format' must be 'client' or 'federation'")
    room = body.get("room")
    room = {} if room is None else room
    if not isinstance(room, dict):
        raise bad_json("'room' must be an object")
    rooms = _str_list(room.get("rooms"), "room.rooms")
    return SyncFilter(
        presence=parse_event_filter(body.get("presence"), "presence"),
        account_data=parse_event_filter(body.get("account_data"), "account_data"),
        rooms=frozenset(rooms) if rooms is not None else None,
        not_rooms=frozenset(_str_list(room.get("not_rooms"), "room.not_rooms") or ()),
        include_leave=_bool(room, "include_leave", "room."),
        timeline=parse_event_filter(room.get("timeline"), "room.timeline", room_event=True),
        state=parse_event_filter(room.get("state"), "room.state", room_event=True),
        ephemeral=parse_event_filter(room.get("ephemeral"), "room.ephemeral", room_event=True),
        room_account_data=parse_event_filter(room.get("account_data"), "room.account_data", room_event=True),
        event_fields=fields,
        event_format=fmt,
    )


def check_filter_size(raw: bytes | str) -> None:
    if len(raw) > MAX_FILTER_BYTES:
        raise MatrixError(413, "M_TOO_LARGE", "Filter is too large")
