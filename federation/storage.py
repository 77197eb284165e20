"""Federation's stores, one per concern, each owning its tables (schema 050)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from homeserver.storage.database import Database, Txn
from homeserver.util import json as jsonutil


@dataclass(frozen=True)
class StoredKey:
    server_name: str
    key_id: str
    verify_key: str
    valid_until_ts: int
    expired_ts: int | None


class KeyStore:
    """``federation_server_keys`` and ``federation_key_responses``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_keys(self, server_name: str) -> list[StoredKey]:
        rows = await self._db.run(lambda txn: txn.query(
            "SELECT key_id, verify_key, valid_until_ts, expired_ts FROM federation_server_keys"
            " WHERE server_name = ?", (server_name,)))
        return [StoredKey(server_name, r[0], r[1], int(r[2]), None if r[3] is None else int(r[3])) for r in rows]

    async def store_response(self, server_name: str, keys: list[StoredKey], response: dict[str, Any],
                             valid_until_ts: int, now_ms: int) -> None:
        def txn_fn(txn: Txn) -> None:
            for k in keys:
                txn.execute(
                    "INSERT INTO federation_server_keys (server_name, key_id, verify_key, valid_until_ts,"
                    " expired_ts, fetched_ts) VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (server_name, key_id) DO UPDATE SET verify_key = excluded.verify_key,"
                    " valid_until_ts = excluded.valid_until_ts, expired_ts = excluded.expired_ts,"
                    " fetched_ts = excluded.fetched_ts",
                    (server_name, k.key_id, k.verify_key, k.valid_until_ts, k.expired_ts, now_ms))
            txn.execute(
                "INSERT INTO federation_key_responses (server_name, valid_until_ts, response_json)"
                " VALUES (?, ?, ?) ON CONFLICT (server_name) DO UPDATE SET"
                " valid_until_ts = excluded.valid_until_ts, response_json = excluded.response_json"
                " WHERE excluded.valid_until_ts >= federation_key_responses.valid_until_ts",
                (server_name, valid_until_ts, jsonutil.dumps(response)))

        await self._db.run(txn_fn)

    async def get_response(self, server_name: str) -> tuple[int, dict[str, Any]] | None:
        row = await self._db.run(lambda txn: txn.query_one(
            "SELECT valid_until_ts, response_json FROM federation_key_responses WHERE server_name = ?",
            (server_name,)))
        return None if row is None else (int(row[0]), jsonutil.loads(row[1]))


@dataclass(frozen=True)
class RetryState:
    failure_ts: int | None
    retry_last_ts: int
    retry_interval_ms: int


class DestinationStore:
    """``federation_destinations``: back-off state per destination."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, destination: str) -> RetryState | None:
        row = await self._db.run(lambda txn: txn.query_one(
            "SELECT failure_ts, retry_last_ts, retry_interval_ms FROM federation_destinations"
            " WHERE destination = ?", (destination,)))
        return None if row is None else RetryState(row[0], int(row[1]), int(row[2]))

    async def set(self, destination: str, state: RetryState) -> None:
        await self._db.run(lambda txn: txn.execute(
            "INSERT INTO federation_destinations (destination, failure_ts, retry_last_ts, retry_interval_ms)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (destination) DO UPDATE SET failure_ts = excluded.failure_ts,"
            " retry_last_ts = excluded.retry_last_ts, retry_interval_ms = excluded.retry_interval_ms",
            (destination, state.failure_ts, state.retry_last_ts, state.retry_interval_ms)))


class OutboxStore:
    """``federation_outbox``: PDUs waiting for delivery, per destination."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._seq = 0

    async def load(self) -> list[str]:
        """Start-up: the next sequence number, and the destinations with queued PDUs."""
        def txn_fn(txn: Txn) -> tuple[int, list[str]]:
            seq = txn.scalar("SELECT MAX(seq) FROM federation_outbox")
            dests = [r[0] for r in txn.query("SELECT DISTINCT destination FROM federation_outbox")]
            return int(seq or 0), dests
        self._seq, dests = await self._db.run(txn_fn)
        return dests

    async def enqueue(self, room_id: str, pdu: dict[str, Any], destinations: list[str]) -> None:
        self._seq += 1
        seq = self._seq
        encoded = jsonutil.dumps(pdu)
        await self._db.run(lambda txn: txn.executemany(
            "INSERT INTO federation_outbox (destination, seq, room_id, pdu_json) VALUES (?, ?, ?, ?)",
            [(d, seq, room_id, encoded) for d in destinations]))

    async def peek(self, destination: str, limit: int) -> list[tuple[int, dict[str, Any]]]:
        rows = await self._db.run(lambda txn: txn.query(
            "SELECT seq, pdu_json FROM federation_outbox WHERE destination = ? ORDER BY seq LIMIT ?",
            (destination, limit)))
        return [(int(r[0]), jsonutil.loads(r[1])) for r in rows]

    async def remove(self, destination: str, up_to_seq: int) -> None:
        await self._db.run(lambda txn: txn.execute(
            "DELETE FROM federation_outbox WHERE destination = ? AND seq <= ?", (destination, up_to_seq)))


class TransactionStore:
    """``federation_received_txns``: answers to transactions already handled."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_response(self, origin: str, txn_id: str) -> dict[str, Any] | None:
        row = await self._db.run(lambda txn: txn.query_one(
            "SELECT response_json FROM federation_received_txns WHERE origin = ? AND txn_id = ?",
            (origin, txn_id)))
        return None if row is None else jsonutil.loads(row[0])

    async def set_response(self, origin: str, txn_id: str, response: dict[str, Any], now_ms: int) -> None:
        await self._db.run(lambda txn: txn.execute(
            "INSERT INTO federation_received_txns (origin, txn_id, response_json, received_ts)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (origin, txn_id) DO NOTHING",
            (origin, txn_id, jsonutil.dumps(response), now_ms)))

    async def prune(self, older_than_ms: int) -> None:
        await self._db.run(lambda txn: txn.execute(
            "DELETE FROM federation_received_txns WHERE received_ts < ?", (older_than_ms,)))
