"""Send-to-device inboxes: messages wait per (user, device) until a sync acknowledges them."""
from __future__ import annotations

from typing import Any, Callable

from homeserver.storage.database import Database, Txn
from homeserver.storage.streams import ChangeCache, StreamWriter
from homeserver.util import json as jsonutil


class ToDeviceStore:
    """Tables ``device_inbox`` and ``to_device_txns``. Change cache keyed by (user, device)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.stream = StreamWriter(0)
        self.changes = ChangeCache(0)
        #: Highest position delivered per device and not yet deleted.
        self._delivered: dict[tuple[str, str], int] = {}

    async def load(self) -> None:
        top = int(await self._db.run(lambda txn: txn.scalar("SELECT MAX(stream_id) FROM device_inbox")) or 0)
        self.stream = StreamWriter(top)
        # Messages stored before a restart are at or below ``top``: a since below
        # it gets "maybe changed" from the cache, and so a query.
        self.changes = ChangeCache(top)

    async def add_messages(self, messages: list[tuple[str, str, dict[str, Any]]],
                           txn_key: tuple[str, str, str] | None, now_ms: int,
                           on_visible: Callable[[int, set[str]], None] | None = None) -> bool:
        """Queue ``(user_id, device_id, message)`` rows under one position.

        Returns False (and stores nothing) when ``txn_key`` (sender, device, txn id)
        was already used.
        """
        pos = self.stream.allocate()

        def fn(txn: Txn) -> bool:
            if txn_key is not None:
                if txn.query_one("SELECT 1 FROM to_device_txns WHERE user_id = ? AND device_id = ?"
                                 " AND txn_id = ?", txn_key):
                    return False
                txn.execute("INSERT INTO to_device_txns (user_id, device_id, txn_id, created_ts)"
                            " VALUES (?, ?, ?, ?)", (*txn_key, now_ms))
            txn.executemany("INSERT INTO device_inbox (user_id, device_id, stream_id, message)"
                            " VALUES (?, ?, ?, ?)",
                            [(u, d, pos, jsonutil.dumps(m)) for u, d, m in messages])
            return True

        stored = False
        try:
            stored = await self._db.run(fn)
        finally:
            def visible() -> None:
                if stored:
                    for u, d, _m in messages:
                        self.changes.changed((u, d), pos)
                    if on_visible is not None:
                        on_visible(pos, {u for u, _d, _m in messages})
            self.stream.finish(pos, visible)
        return stored

    def acknowledges(self, user_id: str, device_id: str, since: int) -> bool:
        """Whether a sync from ``since`` acknowledges delivered messages (that :meth:`get_messages` deletes)."""
        delivered = self._delivered.get((user_id, device_id))
        return delivered is not None and 0 < delivered <= since

    async def get_messages(self, user_id: str, device_id: str, since: int, upto: int,
                           limit: int = 100) -> tuple[list[dict[str, Any]], int]:
        """Messages in (since, upto], oldest first, and the position to resume from.

        Messages at or below ``since`` are deleted first: a request with
        ``since`` proves the client received everything up to it.
        """
        key = (user_id, device_id)
        delivered = self._delivered.get(key)
        if delivered is not None and 0 < delivered <= since:
            del self._delivered[key]
            await self.delete_acknowledged(user_id, device_id, since)
        if not self.changes.has_changed(key, since):
            return [], upto

        def fn(txn: Txn) -> tuple[list[dict[str, Any]], int]:
            if since > 0:
                txn.execute("DELETE FROM device_inbox WHERE user_id = ? AND device_id = ? AND stream_id <= ?",
                            (user_id, device_id, since))
            rows = txn.query(
                "SELECT stream_id, message FROM device_inbox WHERE user_id = ? AND device_id = ?"
                " AND stream_id > ? AND stream_id <= ? ORDER BY stream_id LIMIT ?",
                (user_id, device_id, since, upto, limit + 1))
            if len(rows) > limit:
                # Stop at a position boundary: all messages of one position go together.
                cut = int(rows[limit - 1][0])
                rows = [r for r in rows if int(r[0]) <= cut]
                return [jsonutil.loads(r[1]) for r in rows], cut
            return [jsonutil.loads(r[1]) for r in rows], upto

        messages, next_pos = await self._db.run(fn)
        if messages:
            self._delivered[key] = max(self._delivered.get(key, 0), next_pos)
        return messages, next_pos

    async def delete_acknowledged(self, user_id: str, device_id: str, upto: int) -> None:
        await self._db.run(lambda txn: txn.execute(
            "DELETE FROM device_inbox WHERE user_id = ? AND device_id = ? AND stream_id <= ?",
            (user_id, device_id, upto)))
