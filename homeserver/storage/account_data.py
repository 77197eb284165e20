"""Account data (global and per room), including room tags (``m.tag``)."""
from __future__ import annotations

from typing import Any, Callable

from homeserver.storage.database import Database, Txn
from homeserver.storage.streams import ChangeCache, StreamWriter, write_keyed
from homeserver.util import json as jsonutil

GLOBAL = ""  # room_id of global account data


class AccountDataStore:
    """Table ``account_data``. Stream ``account_data``; change cache keyed by user."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.stream = StreamWriter(0)
        self.changes = ChangeCache(0)

    async def load(self) -> None:
        top = await self._db.run(lambda txn: txn.scalar("SELECT MAX(stream_id) FROM account_data")) or 0
        self.stream = StreamWriter(int(top))
        self.changes = ChangeCache(int(top))

    async def put(self, user_id: str, room_id: str, data_type: str, content: dict[str, Any],
                  on_visible: Callable[[int], None] | None = None) -> int:
        """Store one account data entry; returns its stream position."""
        raw = jsonutil.dumps(content)

        def fn(txn: Txn, pos: int) -> None:
            txn.execute(
                "INSERT INTO account_data (user_id, room_id, data_type, content, stream_id)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id, room_id, data_type)"
                " DO UPDATE SET content = excluded.content, stream_id = excluded.stream_id",
                (user_id, room_id, data_type, raw, pos))

        return await write_keyed(self._db, self.stream, self.changes, user_id, fn, on_visible)

    async def get(self, user_id: str, room_id: str, data_type: str) -> dict[str, Any] | None:
        raw = await self._db.run(lambda txn: txn.scalar(
            "SELECT content FROM account_data WHERE user_id = ? AND room_id = ? AND data_type = ?",
            (user_id, room_id, data_type)))
        return jsonutil.loads(raw) if raw is not None else None

    async def get_all_global(self, data_type: str) -> list[tuple[str, dict[str, Any]]]:
        """``(user_id, content)`` of every user's global entry of ``data_type``."""
        rows = await self._db.run(lambda txn: txn.query(
            "SELECT user_id, content FROM account_data WHERE room_id = ? AND data_type = ?",
            (GLOBAL, data_type)))
        return [(user_id, jsonutil.loads(content)) for user_id, content in rows]

    async def get_changed(self, user_id: str, since: int, upto: int
                          ) -> dict[str, dict[str, dict[str, Any]]]:
        """``{room_id ('' = global): {type: content}}`` changed in (since, upto]."""
        if not self.changes.has_changed(user_id, since):
            return {}
        rows = await self._db.run(lambda txn: txn.query(
            "SELECT room_id, data_type, content FROM account_data"
            " WHERE user_id = ? AND stream_id > ? AND stream_id <= ?", (user_id, since, upto)))
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for room_id, data_type, content in rows:
            value = jsonutil.loads(content)
            # An empty object is how deletion is represented on the wire; keep sending it.
            out.setdefault(room_id, {})[data_type] = value
        return out
