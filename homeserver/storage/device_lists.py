"""Which users' device lists changed, and when (for ``device_lists.changed`` in /sync)."""
from __future__ import annotations

from typing import Callable, Sequence

from homeserver.storage.database import Database, Txn
from homeserver.storage.streams import ChangeCache, StreamWriter, write_keyed


class DeviceListStore:
    """Table ``device_lists_stream``; change cache keyed by user."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.stream = StreamWriter(0)
        self.changes = ChangeCache(0)

    async def load(self) -> None:
        top = int(await self._db.run(
            lambda txn: txn.scalar("SELECT MAX(stream_id) FROM device_lists_stream")) or 0)
        self.stream = StreamWriter(top)
        self.changes = ChangeCache(top)

    async def add_change(self, user_id: str, on_visible: Callable[[int], None] | None = None) -> int:
        return await write_keyed(self._db, self.stream, self.changes, user_id, lambda txn, pos: txn.execute(
            "INSERT INTO device_lists_stream (stream_id, user_id) VALUES (?, ?)", (pos, user_id)), on_visible)

    async def changed_among(self, user_ids: Sequence[str], since: int, upto: int) -> set[str]:
        candidates = [u for u in user_ids if self.changes.has_changed(u, since)]
        if not candidates:
            return set()

        def fn(txn: Txn) -> set[str]:
            out: set[str] = set()
            for i in range(0, len(candidates), 500):
                clause, args = txn.in_list("user_id", candidates[i:i + 500])
                out.update(r[0] for r in txn.query(
                    f"SELECT DISTINCT user_id FROM device_lists_stream WHERE {clause}"
                    " AND stream_id > ? AND stream_id <= ?", args + [since, upto]))
            return out

        return await self._db.run(fn)
