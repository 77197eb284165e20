"""Account data (global and per room) and room tags, with fan-out to the owner's syncs.

Also the users each user ignores (``m.ignored_user_list``, client-server
module "Ignoring Users"): validated on write and kept in memory, so that
/sync, /messages and push evaluation ask :meth:`AccountDataService.ignored_by`
without I/O.
"""
from __future__ import annotations

from typing import Any

from homeserver.api.errors import MatrixError
from homeserver.core.ids import is_valid_user_id
from homeserver.storage.account_data import GLOBAL, AccountDataStore
from homeserver.sync.notifier import Notifier
from homeserver.util import json as jsonutil

TAGS = "m.tag"
#: Bound on one account data entry's JSON size.
MAX_CONTENT_BYTES = 64 * 1024
#: Types the server manages itself; clients may not set them through /account_data.
SERVER_MANAGED = ("m.fully_read", "m.push_rules")
IGNORED_USER_LIST = "m.ignored_user_list"
NOBODY: frozenset[str] = frozenset()


def parse_ignored_users(user_id: str, content: Any) -> frozenset[str]:
    """The user IDs ``content`` (an ``m.ignored_user_list``) ignores; MatrixError 400 when malformed.

    ``{}`` (how account data is deleted) ignores nobody.
    """
    if not isinstance(content, dict):
        raise MatrixError(400, "M_BAD_JSON", "Content must be a JSON object")
    if not content:
        return NOBODY
    ignored = content.get("ignored_users")
    if not isinstance(ignored, dict):
        raise MatrixError(400, "M_BAD_JSON", "ignored_users must be an object")
    for target, value in ignored.items():
        if not is_valid_user_id(target):
            raise MatrixError(400, "M_INVALID_PARAM", f"{target[:64]!r} is not a valid user ID")
        if not isinstance(value, dict):
            raise MatrixError(400, "M_BAD_JSON", "Each ignored user must map to an object")
        if target == user_id:
            raise MatrixError(400, "M_INVALID_PARAM", "You cannot ignore yourself")
    return frozenset(ignored) if ignored else NOBODY


class AccountDataService:
    def __init__(self, store: AccountDataStore, notifier: Notifier) -> None:
        self._store = store
        self._notifier = notifier
        #: user -> the users they ignore; only users who ignore someone (few) are here.
        self._ignored: dict[str, frozenset[str]] = {}
        #: user -> stream position of their latest ignore list change since start-up.
        self._ignored_changed: dict[str, int] = {}

    async def load(self) -> None:
        """Read every stored ignore list (at start-up; afterwards :meth:`put` keeps them current)."""
        self._ignored.clear()
        for user_id, content in await self._store.get_all_global(IGNORED_USER_LIST):
            try:
                ignored = parse_ignored_users(user_id, content)
            except MatrixError:
                continue  # stored before validation existed: ignores nobody
            if ignored:
                self._ignored[user_id] = ignored

    def ignored_by(self, user_id: str) -> frozenset[str]:
        """The users ``user_id`` ignores (no I/O)."""
        return self._ignored.get(user_id, NOBODY)

    def ignores_changed_after(self, user_id: str, position: int) -> bool:
        """Whether ``user_id``'s ignore list changed after account data ``position``
        (a body built up to ``position`` may have used another list)."""
        return self._ignored_changed.get(user_id, 0) > position

    def position(self) -> int:
        return self._store.stream.current()

    async def put(self, user_id: str, room_id: str | None, data_type: str, content: dict[str, Any],
                  *, internal: bool = False) -> int:
        if not internal and data_type in SERVER_MANAGED:
            raise MatrixError(405, "M_BAD_JSON", f"Cannot set {data_type} through this API")
        if len(jsonutil.dumps_bytes(content)) > MAX_CONTENT_BYTES:
            raise MatrixError(413, "M_TOO_LARGE", "Account data is too large")
        ignored: frozenset[str] | None = None
        if data_type == IGNORED_USER_LIST and not room_id:
            ignored = parse_ignored_users(user_id, content)

        def visible(pos: int) -> None:
            # The new list applies before the owner's syncs wake to build with it.
            if ignored is not None:
                self._ignored_changed[user_id] = pos
                if ignored:
                    self._ignored[user_id] = ignored
                else:
                    self._ignored.pop(user_id, None)
            self._notifier.notify("account_data", pos, users=[user_id])

        return await self._store.put(user_id, room_id or GLOBAL, data_type, content, visible)

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
