"""Read receipts (``m.read``, ``m.read.private``, threaded) per room and user."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from homeserver.storage.database import Database, Txn
from homeserver.storage.streams import ChangeCache, StreamWriter, write_keyed
from homeserver.util import json as jsonutil


@dataclass(frozen=True)
class Receipt:
    room_id: str
    receipt_type: str
    user_id: str
    thread_id: str  # '' for unthreaded
    event_id: str
    data: dict[str, Any]
    stream_id: int


class ReceiptStore:
    """Table ``receipts``. Stream ``receipts``; change cache keyed by room."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.stream = StreamWriter(0)
        self.changes = ChangeCache(0)

    async def load(self) -> None:
        top = int(await self._db.run(lambda txn: txn.scalar("SELECT MAX(stream_id) FROM receipts")) or 0)
        self.stream = StreamWriter(top)
        self.changes = ChangeCache(top)

    async def put(self, room_id: str, receipt_type: str, user_id: str, thread_id: str, event_id: str,
                  data: dict[str, Any], on_visible: Callable[[int], None] | None = None) -> int:
        raw = jsonutil.dumps(data)

        def fn(txn: Txn, pos: int) -> None:
            txn.execute(
                "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, data, stream_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (room_id, receipt_type, user_id, thread_id)"
                " DO UPDATE SET event_id = excluded.event_id, data = excluded.data,"
                " stream_id = excluded.stream_id",
                (room_id, receipt_type, user_id, thread_id, event_id, raw, pos))

        return await write_keyed(self._db, self.stream, self.changes, room_id, fn, on_visible)

    async def get_for_rooms(self, room_ids: Sequence[str], since: int, upto: int) -> list[Receipt]:
        """Receipts in ``room_ids`` with positions in (since, upto]; since=0 means all."""
        if since >= upto:
            return []
        rooms = [r for r in room_ids if self.changes.has_changed(r, since)]
        if not rooms:
            return []

        def fn(txn: Txn) -> list[tuple]:
            out: list[tuple] = []
            for i in range(0, len(rooms), 500):
                clause, args = txn.in_list("room_id", rooms[i:i + 500])
                out += txn.query(
                    "SELECT room_id, receipt_type, user_id, thread_id, event_id, data, stream_id"
                    f" FROM receipts WHERE {clause} AND stream_id > ? AND stream_id <= ?",
                    args + [since, upto])
            return out

        rows = await self._db.run(fn)
        return [Receipt(r[0], r[1], r[2], r[3], r[4], jsonutil.loads(r[5]), int(r[6])) for r in rows]

    async def get_user_receipt(self, room_id: str, user_id: str, receipt_types: Sequence[str]
                               ) -> list[Receipt]:
        def fn(txn: Txn) -> list[tuple]:
            clause, args = txn.in_list("receipt_type", list(receipt_types))
            return txn.query(
                "SELECT room_id, receipt_type, user_id, thread_id, event_id, data, stream_id"
                f" FROM receipts WHERE room_id = ? AND user_id = ? AND {clause}",
                [room_id, user_id] + args)

        rows = await self._db.run(fn)
        return [Receipt(r[0], r[1], r[2], r[3], r[4], jsonutil.loads(r[5]), int(r[6])) for r in rows]
