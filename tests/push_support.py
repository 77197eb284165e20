"""Response shapes checked against the spec's bundled OpenAPI (client-server.json)."""
from __future__ import annotations

import functools
import json
from typing import Any

import jsonschema

SPEC = "/work/shared/matrix-spec/openapi/client-server.json"


@functools.lru_cache(maxsize=1)
def _spec() -> dict[str, Any]:
    with open(SPEC, encoding="utf-8") as f:
        return json.load(f)


def check(path: str, method: str, status: int, body: Any) -> None:
    """Validate ``body`` against the spec's schema for that route, method and status."""
    op = _spec()["paths"]["/_matrix/client/v3" + path][method.lower()]
    schema = op["responses"][str(status)]["content"]["application/json"]["schema"]
    jsonschema.validate(body, schema)


class FakeRoomView:
    """A RoomView over plain dicts: rooms -> members, names, power levels."""

    def __init__(self, server_name: str = "test.local") -> None:
        self.server_name = server_name
        self.members: dict[str, list[str]] = {}
        self.names: dict[str, dict[str, str]] = {}
        self.levels: dict[str, dict[str, int]] = {}
        self.room_names: dict[str, str] = {}

    def add_room(self, room_id: str, members: list[str], names: dict[str, str] | None = None,
                 levels: dict[str, int] | None = None, name: str | None = None) -> None:
        self.members[room_id] = members
        self.names[room_id] = names or {}
        self.levels[room_id] = levels or {}
        if name:
            self.room_names[room_id] = name

    def local_members(self, room_id: str):
        return [m for m in self.members.get(room_id, ()) if m.endswith(":" + self.server_name)]

    def member_count(self, room_id: str) -> int:
        return len(self.members.get(room_id, ()))

    def display_names(self, room_id: str):
        return self.names.get(room_id, {})

    def power_level(self, room_id: str, user_id: str) -> int:
        return self.levels.get(room_id, {}).get(user_id, 0)

    def notification_levels(self, room_id: str):
        return {}

    def room_name(self, room_id: str):
        return self.room_names.get(room_id)

    def room_alias(self, room_id: str):
        return None


class FakeEvent:
    """What the notification service reads from a SyncEvent."""

    _next = [0]

    def __init__(self, room_id: str, sender: str, body: str | None = "hello", etype: str = "m.room.message",
                 content: dict[str, Any] | None = None, state_key: str | None = None) -> None:
        FakeEvent._next[0] += 1
        self.stream_ordering = FakeEvent._next[0]
        self.room_id = room_id
        self.sender = sender
        self.event_id = f"$ev{self.stream_ordering}"
        self.type = etype
        self.state_key = state_key
        if content is None:
            content = {"msgtype": "m.text", "body": body}
        self.client = {"type": etype, "sender": sender, "room_id": room_id, "event_id": self.event_id,
                       "origin_server_ts": 1000 + self.stream_ordering, "content": content}
        if state_key is not None:
            self.client["state_key"] = state_key
