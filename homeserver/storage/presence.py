"""Presence state per local user, persisted so it survives restarts."""
from __future__ import annotations

from dataclasses import dataclass

from homeserver.storage.database import Database, Txn


@dataclass
class PresenceState:
    user_id: str
    state: str  # online, unavailable, offline
    status_msg: str | None
    last_active_ts: int
    currently_active: bool
    stream_id: int


class PresenceStore:
    """Table ``presence``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def load_all(self) -> list[PresenceState]:
        rows = await self._db.run(lambda txn: txn.query(
            "SELECT user_id, state, status_msg, last_active_ts, currently_active, stream_id FROM presence"))
        return [PresenceState(r[0], r[1], r[2], int(r[3]), bool(r[4]), int(r[5])) for r in rows]

    async def save(self, states: list[PresenceState]) -> None:
        def fn(txn: Txn) -> None:
            txn.executemany(
                "INSERT INTO presence (user_id, state, status_msg, last_active_ts, currently_active, stream_id)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET state = excluded.state,"
                " status_msg = excluded.status_msg, last_active_ts = excluded.last_active_ts,"
                " currently_active = excluded.currently_active, stream_id = excluded.stream_id",
                [(s.user_id, s.state, s.status_msg, s.last_active_ts, s.currently_active, s.stream_id)
                 for s in states])

        if states:
            await self._db.run(fn)
