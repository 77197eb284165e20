"""RoomStore: rooms (version, creator, directory visibility) and room aliases.

Tables: ``rooms`` and ``room_aliases``. Transaction IDs live with the events
(:mod:`homeserver.storage.events`), written in the same transaction.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from homeserver.storage.database import Database, Txn


@dataclass(frozen=True)
class RoomInfo:
    room_id: str
    room_version: str
    creator: str | None
    is_public: bool
    created_ts: int


@dataclass(frozen=True)
class AliasInfo:
    alias: str
    room_id: str
    creator: str
    servers: list[str]


class RoomStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._versions: dict[str, str] = {}

    def store_room_txn(self, txn: Txn, room_id: str, room_version: str, creator: str | None,
                       is_public: bool, created_ts: int) -> None:
        """Record a room (no-op when it is already known)."""
        txn.execute("INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts)"
                    " VALUES (?,?,?,?,?) ON CONFLICT (room_id) DO NOTHING",
                    (room_id, room_version, creator, is_public, created_ts))

    async def store_room(self, room_id: str, room_version: str, creator: str | None,
                         is_public: bool, created_ts: int) -> None:
        await self.db.run(self.store_room_txn, room_id, room_version, creator, is_public, created_ts)

    async def get_room(self, room_id: str) -> RoomInfo | None:
        row = await self.db.run(lambda txn: txn.query_one(
            "SELECT room_id, room_version, creator, is_public, created_ts FROM rooms WHERE room_id = ?",
            (room_id,)))
        if row is None:
            return None
        self._versions[room_id] = row[1]
        return RoomInfo(row[0], row[1], row[2], bool(row[3]), int(row[4]))

    async def get_room_version_id(self, room_id: str) -> str | None:
        if room_id in self._versions:
            return self._versions[room_id]
        info = await self.get_room(room_id)
        return info.room_version if info else None

    async def set_public(self, room_id: str, is_public: bool) -> None:
        await self.db.run(lambda txn: txn.execute("UPDATE rooms SET is_public = ? WHERE room_id = ?",
                                                  (is_public, room_id)))

    async def public_room_ids(self) -> list[str]:
        return await self.db.run(lambda txn: [r[0] for r in txn.query(
            "SELECT room_id FROM rooms WHERE is_public = ? ORDER BY room_id", (True,))])

    # --- aliases -------------------------------------------------------------

    async def create_alias(self, alias: str, room_id: str, creator: str, servers: list[str]) -> bool:
        """Map ``alias`` to ``room_id``; False when the alias is taken."""
        def txn_fn(txn: Txn) -> bool:
            if txn.query_one("SELECT 1 FROM room_aliases WHERE room_alias = ?", (alias,)):
                return False
            txn.execute("INSERT INTO room_aliases (room_alias, room_id, creator, servers) VALUES (?,?,?,?)",
                        (alias, room_id, creator, json.dumps(servers)))
            return True
        return await self.db.run(txn_fn)

    async def get_alias(self, alias: str) -> AliasInfo | None:
        row = await self.db.run(lambda txn: txn.query_one(
            "SELECT room_alias, room_id, creator, servers FROM room_aliases WHERE room_alias = ?", (alias,)))
        return AliasInfo(row[0], row[1], row[2], json.loads(row[3])) if row else None

    async def delete_alias(self, alias: str) -> str | None:
        """Remove an alias; returns the room it pointed to."""
        def txn_fn(txn: Txn) -> Any:
            room_id = txn.scalar("SELECT room_id FROM room_aliases WHERE room_alias = ?", (alias,))
            if room_id is not None:
                txn.execute("DELETE FROM room_aliases WHERE room_alias = ?", (alias,))
            return room_id
        return await self.db.run(txn_fn)

    async def all_aliases(self) -> list[tuple[str, str]]:
        """Every ``(alias, room_id)`` (loaded once at start by in-memory alias indexes)."""
        return await self.db.run(lambda txn: [(r[0], r[1]) for r in txn.query(
            "SELECT room_alias, room_id FROM room_aliases")])

    async def aliases_for_room(self, room_id: str) -> list[str]:
        return await self.db.run(lambda txn: [r[0] for r in txn.query(
            "SELECT room_alias FROM room_aliases WHERE room_id = ? ORDER BY room_alias", (room_id,))])
