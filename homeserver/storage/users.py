"""Accounts, devices, access tokens and profiles (tables of ``001_accounts.sql``)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from homeserver.storage.database import Database, Txn


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenInfo:
    user_id: str
    device_id: str | None
    valid_until_ms: int | None


@dataclass(frozen=True)
class UserInfo:
    user_id: str
    password_hash: str | None
    creation_ts: int
    admin: bool
    deactivated: bool
    is_guest: bool
    appservice_id: str | None


@dataclass(frozen=True)
class Device:
    user_id: str
    device_id: str
    display_name: str | None
    last_seen_ts: int | None
    last_seen_ip: str | None


class UserStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # users
    async def create_user(self, user_id: str, password_hash: str | None, now_ms: int,
                          admin: bool = False, appservice_id: str | None = None,
                          is_guest: bool = False) -> bool:
        """Insert a user. Returns False when the ID is already taken."""
        def txn_fn(txn: Txn) -> bool:
            txn.execute(
                "INSERT INTO users (user_id, password_hash, creation_ts, admin, is_guest, appservice_id)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id) DO NOTHING",
                (user_id, password_hash, now_ms, admin, is_guest, appservice_id))
            if txn.rowcount != 1:
                return False
            txn.execute("INSERT INTO profiles (user_id, displayname) VALUES (?, ?)"
                        " ON CONFLICT (user_id) DO NOTHING", (user_id, user_id[1:].split(":", 1)[0]))
            return True
        return await self.db.run(txn_fn)

    async def get_user(self, user_id: str) -> UserInfo | None:
        row = await self.db.run(lambda txn: txn.query_one(
            "SELECT user_id, password_hash, creation_ts, admin, deactivated, is_guest, appservice_id"
            " FROM users WHERE user_id = ?", (user_id,)))
        if row is None:
            return None
        return UserInfo(row[0], row[1], row[2], bool(row[3]), bool(row[4]), bool(row[5]), row[6])

    async def find_user_case_insensitive(self, user_id: str) -> list[str]:
        rows = await self.db.run(lambda txn: txn.query(
            "SELECT user_id FROM users WHERE LOWER(user_id) = LOWER(?)", (user_id,)))
        return [r[0] for r in rows]

    async def set_password_hash(self, user_id: str, password_hash: str | None) -> None:
        await self.db.run(lambda txn: txn.execute(
            "UPDATE users SET password_hash = ? WHERE user_id = ?", (password_hash, user_id)))

    async def is_admin(self, user_id: str) -> bool:
        """Whether ``user_id`` is a server admin (users.admin)."""
        value = await self.db.run(lambda txn: txn.scalar(
            "SELECT admin FROM users WHERE user_id = ?", (user_id,)))
        return bool(value)

    async def set_admin(self, user_id: str, admin: bool) -> None:
        await self.db.run(lambda txn: txn.execute(
            "UPDATE users SET admin = ? WHERE user_id = ?", (admin, user_id)))

    async def deactivate(self, user_id: str) -> list[str]:
        """Mark deactivated, drop password, tokens and devices. Returns the removed token hashes."""
        def txn_fn(txn: Txn) -> list[str]:
            hashes = [r[0] for r in txn.query("SELECT token_hash FROM access_tokens WHERE user_id = ?", (user_id,))]
            txn.execute("UPDATE users SET deactivated = TRUE, password_hash = NULL WHERE user_id = ?", (user_id,))
            txn.execute("DELETE FROM access_tokens WHERE user_id = ?", (user_id,))
            txn.execute("DELETE FROM devices WHERE user_id = ?", (user_id,))
            txn.execute("UPDATE profiles SET displayname = NULL, avatar_url = NULL WHERE user_id = ?", (user_id,))
            return hashes
        return await self.db.run(txn_fn)

    async def count_users(self) -> int:
        return int(await self.db.run(lambda txn: txn.scalar("SELECT COUNT(*) FROM users")))

    # access tokens
    async def add_access_token(self, token: str, user_id: str, device_id: str | None, now_ms: int,
                               valid_until_ms: int | None = None) -> None:
        await self.db.run(lambda txn: txn.execute(
            "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, valid_until_ms)"
            " VALUES (?, ?, ?, ?, ?)", (hash_token(token), user_id, device_id, now_ms, valid_until_ms)))

    async def get_token(self, token: str) -> TokenInfo | None:
        row = await self.db.run(lambda txn: txn.query_one(
            "SELECT t.user_id, t.device_id, t.valid_until_ms FROM access_tokens t"
            " JOIN users u ON u.user_id = t.user_id"
            " WHERE t.token_hash = ? AND NOT u.deactivated", (hash_token(token),)))
        return TokenInfo(row[0], row[1], row[2]) if row else None

    async def delete_token(self, token: str) -> None:
        await self.db.run(lambda txn: txn.execute(
            "DELETE FROM access_tokens WHERE token_hash = ?", (hash_token(token),)))

    async def delete_tokens(self, user_id: str, device_ids: list[str] | None = None,
                            except_token: str | None = None) -> list[str]:
        """Delete a user's tokens (all, or those of some devices). Returns the deleted hashes."""
        def txn_fn(txn: Txn) -> list[str]:
            sql = "SELECT token_hash FROM access_tokens WHERE user_id = ?"
            args: list = [user_id]
            if device_ids is not None:
                clause, extra = txn.in_list("device_id", device_ids)
                sql += " AND " + clause
                args += extra
            hashes = [r[0] for r in txn.query(sql, args)]
            keep = hash_token(except_token) if except_token else None
            hashes = [h for h in hashes if h != keep]
            clause, extra = txn.in_list("token_hash", hashes)
            txn.execute("DELETE FROM access_tokens WHERE " + clause, extra)
            return hashes
        return await self.db.run(txn_fn)

    # devices
    async def upsert_device(self, user_id: str, device_id: str, display_name: str | None,
                            now_ms: int, ip: str | None = None) -> None:
        """Create a device, or mark an existing one seen (keeping its display name when none is given)."""
        await self.db.run(lambda txn: txn.execute(
            "INSERT INTO devices (user_id, device_id, display_name, last_seen_ts, last_seen_ip)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id, device_id) DO UPDATE SET"
            " display_name = COALESCE(excluded.display_name, devices.display_name),"
            " last_seen_ts = excluded.last_seen_ts, last_seen_ip = excluded.last_seen_ip",
            (user_id, device_id, display_name, now_ms, ip)))

    async def get_devices(self, user_id: str) -> list[Device]:
        rows = await self.db.run(lambda txn: txn.query(
            "SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip FROM devices"
            " WHERE user_id = ? ORDER BY device_id", (user_id,)))
        return [Device(*r) for r in rows]

    async def get_device(self, user_id: str, device_id: str) -> Device | None:
        row = await self.db.run(lambda txn: txn.query_one(
            "SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip FROM devices"
            " WHERE user_id = ? AND device_id = ?", (user_id, device_id)))
        return Device(*row) if row else None

    async def set_device_display_name(self, user_id: str, device_id: str, name: str | None) -> bool:
        def txn_fn(txn: Txn) -> bool:
            txn.execute("UPDATE devices SET display_name = ? WHERE user_id = ? AND device_id = ?",
                        (name, user_id, device_id))
            return txn.rowcount == 1
        return await self.db.run(txn_fn)

    async def delete_devices(self, user_id: str, device_ids: list[str]) -> list[str]:
        """Delete devices and their tokens. Returns the deleted token hashes."""
        def txn_fn(txn: Txn) -> list[str]:
            clause, extra = txn.in_list("device_id", device_ids)
            hashes = [r[0] for r in txn.query(
                "SELECT token_hash FROM access_tokens WHERE user_id = ? AND " + clause, [user_id] + extra)]
            txn.execute("DELETE FROM access_tokens WHERE user_id = ? AND " + clause, [user_id] + extra)
            txn.execute("DELETE FROM devices WHERE user_id = ? AND " + clause, [user_id] + extra)
            return hashes
        return await self.db.run(txn_fn)

    # profiles
    async def get_profile(self, user_id: str) -> tuple[str | None, str | None] | None:
        row = await self.db.run(lambda txn: txn.query_one(
            "SELECT displayname, avatar_url FROM profiles WHERE user_id = ?", (user_id,)))
        return (row[0], row[1]) if row else None

    async def set_profile_field(self, user_id: str, field: str, value: str | None) -> None:
        if field not in ("displayname", "avatar_url"):
            raise ValueError(field)
        await self.db.run(lambda txn: txn.execute(
            f"INSERT INTO profiles (user_id, {field}) VALUES (?, ?)"
            f" ON CONFLICT (user_id) DO UPDATE SET {field} = excluded.{field}", (user_id, value)))
