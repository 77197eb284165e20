"""Account data (global and per room) and room tags, with fan-out to the owner's syncs."""
from __future__ import annotations

from typing import Any

from homeserver.api.errors import MatrixError
from homeserver.storage.account_data import GLOBAL, AccountDataStore
from homeserver.sync.notifier import Notifier
from homeserver.util import json as jsonutil

TAGS = "m.tag"
#: Bound on one account data entry's JSON size.
MAX_CONTENT_BYTES = 64 * 1024
#: Types the server manages itself; clients may not set them through /account_data.
SERVER_MANAGED = ("m.fully_read", "m.push_rules")


class AccountDataService:
    def __init__(self, store: AccountDataStore, notifier: Notifier) -> None:
        self._store = store
        self._notifier = notifier

    def position(self) -> int:
        return self._store.stream.current()

    async def put(self, user_id: str, room_id: str | None, data_type: str, content: dict[str, Any],
                  *, internal: bool = False) -> int:
        if not internal and data_type in SERVER_MANAGED:
            raise MatrixError(405, "M_BAD_JSON", f"Cannot set {data_type} through this API")
        if len(jsonutil.dumps_bytes(content)) > MAX_CONTENT_BYTES:
            raise MatrixError(413, "M_TOO_LARGE", "Account data is too large")
        return await self._store.put(
            user_id, room_id or GLOBAL, data_type, content,
            lambda pos: self._notifier.notify("account_data", pos, users=[user_id]))

    async def get(self, user_id: str, room_id: str | None, data_type: str) -> dict[str, Any] | None:
        return await self._store.get(user_id, room_id or GLOBAL, data_type)

    async def changed(self, user_id: str, since: int, upto: int) -> dict[str, dict[str, dict[str, Any]]]:
        return await self._store.get_changed(user_id, since, upto)

    # tags: stored as the m.tag room account data they appear as in /sync

    async def get_tags(self, user_id: str, room_id: str) -> dict[str, Any]:
        content = await self.get(user_id, room_id, TAGS) or {}
        tags = content.get("tags")
        return tags if isinstance(tags, dict) else {}

    async def set_tag(self, user_id: str, room_id: str, tag: str, body: dict[str, Any]) -> None:
        tags = await self.get_tags(user_id, room_id)
        if tag not in tags and len(tags) >= 100:
            raise MatrixError(400, "M_LIMIT_EXCEEDED", "Too many tags on this room")
        tags[tag] = body
        await self.put(user_id, room_id, TAGS, {"tags": tags}, internal=True)

    async def remove_tag(self, user_id: str, room_id: str, tag: str) -> None:
        tags = await self.get_tags(user_id, room_id)
        if tags.pop(tag, None) is not None:
            await self.put(user_id, room_id, TAGS, {"tags": tags}, internal=True)
