"""Stored sync filters (``POST /user/{userId}/filter``)."""
from __future__ import annotations

from typing import Any

from homeserver.storage.database import Database, Txn
from homeserver.util import json as jsonutil


class FilterStore:
    """Table ``user_filters``; filter IDs count up per user."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._cache: dict[tuple[str, int], dict[str, Any]] = {}

    async def add(self, user_id: str, definition: dict[str, Any]) -> int:
        raw = jsonutil.dumps(definition)

        def fn(txn: Txn) -> int:
            # Reuse an identical filter: clients re-upload the same one on every start.
            existing = txn.scalar("SELECT filter_id FROM user_filters WHERE user_id = ? AND filter_json = ?",
                                  (user_id, raw))
            if existing is not None:
                return int(existing)
            top = txn.scalar("SELECT MAX(filter_id) FROM user_filters WHERE user_id = ?", (user_id,))
            filter_id = int(top) + 1 if top is not None else 0
            txn.execute("INSERT INTO user_filters (user_id, filter_id, filter_json) VALUES (?, ?, ?)",
                        (user_id, filter_id, raw))
            return filter_id

        return await self._db.run(fn)

    async def get(self, user_id: str, filter_id: int) -> dict[str, Any] | None:
        key = (user_id, filter_id)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        raw = await self._db.run(lambda txn: txn.scalar(
            "SELECT filter_json FROM user_filters WHERE user_id = ? AND filter_id = ?", key))
        if raw is None:
            return None
        value = jsonutil.loads(raw)
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[key] = value
        return value
