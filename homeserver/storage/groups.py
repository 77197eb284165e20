"""GroupStore: invite codes, timed mutes and saved group settings.

Tables: ``group_invite_codes``, ``group_mutes``, ``group_settings``
(schema/040_groups.sql).
"""
from __future__ import annotations

from dataclasses import dataclass

from homeserver.storage.database import Database, Txn


@dataclass(frozen=True)
class InviteCode:
    code: str
    room_id: str
    creator: str
    created_ts: int
    expires_at: int


@dataclass(frozen=True)
class Mute:
    room_id: str
    user_id: str
    muted_by: str
    prev_level: int | None
    expires_at: int | None


class GroupStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- invite codes ---------------------------------------------------------

    async def add_invite_code(self, code: InviteCode) -> None:
        await self.db.run(lambda txn: txn.execute(
            "INSERT INTO group_invite_codes (room_id, code, creator, created_ts, expires_at) VALUES (?,?,?,?,?)",
            (code.room_id, code.code, code.creator, code.created_ts, code.expires_at)))

    async def get_invite_code(self, code: str) -> InviteCode | None:
        row = await self.db.run(lambda txn: txn.query_one(
            "SELECT code, room_id, creator, created_ts, expires_at FROM group_invite_codes WHERE code = ?",
            (code,)))
        return InviteCode(row[0], row[1], row[2], int(row[3]), int(row[4])) if row else None

    async def purge_expired_codes(self, now_ms: int) -> int:
        def txn_fn(txn: Txn) -> int:
            txn.execute("DELETE FROM group_invite_codes WHERE expires_at <= ?", (now_ms,))
            return txn.rowcount
        return await self.db.run(txn_fn)

    # --- mutes ----------------------------------------------------------------

    async def set_mute(self, mute: Mute) -> None:
        """Record a mute; a repeated mute keeps the level saved by the first one."""
        await self.db.run(lambda txn: txn.execute(
            "INSERT INTO group_mutes (room_id, user_id, muted_by, prev_level, expires_at) VALUES (?,?,?,?,?)"
            " ON CONFLICT (room_id, user_id) DO UPDATE SET muted_by = EXCLUDED.muted_by,"
            " expires_at = EXCLUDED.expires_at",
            (mute.room_id, mute.user_id, mute.muted_by, mute.prev_level, mute.expires_at)))

    async def get_mute(self, room_id: str, user_id: str) -> Mute | None:
        row = await self.db.run(lambda txn: txn.query_one(
            "SELECT room_id, user_id, muted_by, prev_level, expires_at FROM group_mutes"
            " WHERE room_id = ? AND user_id = ?", (room_id, user_id)))
        return _mute(row) if row else None

    async def delete_mute(self, room_id: str, user_id: str) -> None:
        await self.db.run(lambda txn: txn.execute(
            "DELETE FROM group_mutes WHERE room_id = ? AND user_id = ?", (room_id, user_id)))

    async def get_timed_mutes(self) -> list[Mute]:
        """Every mute with an expiry (scheduled at start)."""
        rows = await self.db.run(lambda txn: txn.query(
            "SELECT room_id, user_id, muted_by, prev_level, expires_at FROM group_mutes"
            " WHERE expires_at IS NOT NULL ORDER BY expires_at"))
        return [_mute(r) for r in rows]

    # --- settings -------------------------------------------------------------

    async def get_saved(self, room_id: str) -> tuple[int | None, str | None]:
        """``(saved events_default, saved join rule)``."""
        row = await self.db.run(lambda txn: txn.query_one(
            "SELECT saved_events_default, saved_join_rule FROM group_settings WHERE room_id = ?", (room_id,)))
        if row is None:
            return None, None
        return (int(row[0]) if row[0] is not None else None), row[1]

    async def set_saved_events_default(self, room_id: str, value: int | None) -> None:
        await self.db.run(lambda txn: txn.execute(
            "INSERT INTO group_settings (room_id, saved_events_default) VALUES (?, ?)"
            " ON CONFLICT (room_id) DO UPDATE SET saved_events_default = EXCLUDED.saved_events_default",
            (room_id, value)))

    async def set_saved_join_rule(self, room_id: str, value: str | None) -> None:
        await self.db.run(lambda txn: txn.execute(
            "INSERT INTO group_settings (room_id, saved_join_rule) VALUES (?, ?)"
            " ON CONFLICT (room_id) DO UPDATE SET saved_join_rule = EXCLUDED.saved_join_rule",
            (room_id, value)))


def _mute(row: tuple) -> Mute:
    return Mute(row[0], row[1], row[2], int(row[3]) if row[3] is not None else None,
                int(row[4]) if row[4] is not None else None)
