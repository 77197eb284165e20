"""Persistence of the application-service queues (tables of ``060_appservice.sql``).

Per service: the stream position delivered so far and the last transaction
ID, plus the transaction in flight with its exact body. A transaction is
written before it is first sent and deleted, in the same database
transaction that advances the position, once the service answers 200.
"""
from __future__ import annotations

from dataclasses import dataclass

from homeserver.storage.database import Database, Txn


@dataclass(frozen=True)
class ServiceState:
    stream_position: int
    last_txn_id: int


@dataclass(frozen=True)
class StoredTxn:
    txn_id: int
    stream_position: int
    body: bytes


class AppserviceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def load(self, as_id: str, initial_position: int) -> tuple[ServiceState, list[StoredTxn]]:
        """The service's state (created at ``initial_position`` if new) and its unacknowledged txns."""
        def txn_fn(txn: Txn) -> tuple[ServiceState, list[StoredTxn]]:
            txn.execute("INSERT INTO appservice_state (as_id, stream_position, last_txn_id) VALUES (?, ?, 0)"
                        " ON CONFLICT (as_id) DO NOTHING", (as_id, initial_position))
            row = txn.query_one("SELECT stream_position, last_txn_id FROM appservice_state WHERE as_id = ?",
                                (as_id,))
            assert row is not None
            txns = [StoredTxn(r[0], r[1], r[2].encode("utf-8")) for r in txn.query(
                "SELECT txn_id, stream_position, body FROM appservice_txns WHERE as_id = ? ORDER BY txn_id",
                (as_id,))]
            return ServiceState(row[0], row[1]), txns
        return await self.db.run(txn_fn)

    async def create_txn(self, as_id: str, txn_id: int, stream_position: int, body: bytes) -> None:
        def txn_fn(txn: Txn) -> None:
            txn.execute("INSERT INTO appservice_txns (as_id, txn_id, stream_position, body) VALUES (?, ?, ?, ?)",
                        (as_id, txn_id, stream_position, body.decode("utf-8")))
            txn.execute("UPDATE appservice_state SET last_txn_id = ? WHERE as_id = ?", (txn_id, as_id))
        await self.db.run(txn_fn)

    async def complete_txn(self, as_id: str, txn_id: int, stream_position: int) -> None:
        def txn_fn(txn: Txn) -> None:
            txn.execute("DELETE FROM appservice_txns WHERE as_id = ? AND txn_id = ?", (as_id, txn_id))
            txn.execute("UPDATE appservice_state SET stream_position = ? WHERE as_id = ? AND stream_position < ?",
                        (stream_position, as_id, stream_position))
        await self.db.run(txn_fn)

    async def set_position(self, as_id: str, stream_position: int) -> None:
        """Advance the position past events of no interest (never moves it back)."""
        await self.db.run(lambda txn: txn.execute(
            "UPDATE appservice_state SET stream_position = ? WHERE as_id = ? AND stream_position < ?",
            (stream_position, as_id, stream_position)))
