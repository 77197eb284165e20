"""The media and media_thumbnails tables (schema/030_media.sql)."""
from __future__ import annotations

from dataclasses import dataclass

from homeserver.storage.database import Database, Txn

_COLUMNS = ("origin, media_id, uploader, content_type, upload_name, size, sha256, created_ts,"
            " upload_ts, unused_expires_at, quarantined, authenticated_only")


@dataclass(frozen=True)
class MediaInfo:
    origin: str
    media_id: str
    uploader: str | None
    content_type: str | None
    upload_name: str | None
    size: int | None
    sha256: str | None
    created_ts: int
    upload_ts: int | None
    unused_expires_at: int | None
    quarantined: bool
    authenticated_only: bool

    @property
    def pending(self) -> bool:
        """Created with POST /create and not uploaded yet."""
        return self.sha256 is None


@dataclass(frozen=True)
class ThumbnailInfo:
    width: int
    height: int
    method: str
    content_type: str
    size: int
    sha256: str


def _media(row: tuple) -> MediaInfo:
    return MediaInfo(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9],
                     bool(row[10]), bool(row[11]))


class MediaStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_media(self, origin: str, media_id: str) -> MediaInfo | None:
        row = await self.db.run(lambda txn: txn.query_one(
            f"SELECT {_COLUMNS} FROM media WHERE origin = ? AND media_id = ?", (origin, media_id)))
        return _media(row) if row else None

    async def insert_media(self, m: MediaInfo) -> None:
        """A new row: a finished upload, a cached remote file or a pending ID."""
        await self.db.run(lambda txn: txn.execute(
            f"INSERT INTO media ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (m.origin, m.media_id, m.uploader, m.content_type, m.upload_name, m.size, m.sha256,
             m.created_ts, m.upload_ts, m.unused_expires_at, m.quarantined, m.authenticated_only)))

    async def create_pending(self, m: MediaInfo, now_ms: int, max_pending: int) -> bool:
        """Insert a pending ID unless the uploader already has ``max_pending`` unexpired ones."""
        def txn_fn(txn: Txn) -> bool:
            count = txn.scalar(
                "SELECT COUNT(*) FROM media WHERE uploader = ? AND sha256 IS NULL AND unused_expires_at > ?",
                (m.uploader, now_ms))
            if count >= max_pending:
                return False
            txn.execute(
                f"INSERT INTO media ({_COLUMNS}) VALUES (?, ?, ?, NULL, NULL, NULL, NULL, ?, NULL, ?, ?, ?)",
                (m.origin, m.media_id, m.uploader, m.created_ts, m.unused_expires_at, False,
                 m.authenticated_only))
            return True
        return await self.db.run(txn_fn)

    async def complete_pending(self, origin: str, media_id: str, content_type: str,
                               upload_name: str | None, size: int, sha256: str, now_ms: int,
                               authenticated_only: bool) -> bool:
        """Fill in an unexpired pending ID; False when it was uploaded meanwhile or expired."""
        def txn_fn(txn: Txn) -> bool:
            txn.execute(
                "UPDATE media SET content_type = ?, upload_name = ?, size = ?, sha256 = ?, upload_ts = ?,"
                " unused_expires_at = NULL, authenticated_only = (authenticated_only OR ?)"
                " WHERE origin = ? AND media_id = ? AND sha256 IS NULL AND unused_expires_at > ?",
                (content_type, upload_name, size, sha256, now_ms, authenticated_only, origin, media_id,
                 now_ms))
            return txn.rowcount == 1
        return await self.db.run(txn_fn)

    async def delete_expired_pending(self, now_ms: int) -> int:
        def txn_fn(txn: Txn) -> int:
            txn.execute("DELETE FROM media WHERE sha256 IS NULL AND unused_expires_at <= ?", (now_ms,))
            return txn.rowcount
        return await self.db.run(txn_fn)

    async def set_quarantined(self, origin: str, media_id: str, quarantined: bool) -> bool:
        def txn_fn(txn: Txn) -> bool:
            txn.execute("UPDATE media SET quarantined = ? WHERE origin = ? AND media_id = ?",
                        (quarantined, origin, media_id))
            return txn.rowcount == 1
        return await self.db.run(txn_fn)

    async def delete_media(self, origin: str, media_id: str) -> tuple[bool, list[str]]:
        """Delete a media item and its thumbnails.

        Returns:
            (whether it existed, the sha256s no row references any more: their files may go).
        """
        def txn_fn(txn: Txn) -> tuple[bool, list[str]]:
            row = txn.query_one("SELECT sha256 FROM media WHERE origin = ? AND media_id = ?",
                                (origin, media_id))
            if row is None:
                return False, []
            hashes = {row[0]} if row[0] else set()
            hashes.update(r[0] for r in txn.query(
                "SELECT sha256 FROM media_thumbnails WHERE origin = ? AND media_id = ?", (origin, media_id)))
            txn.execute("DELETE FROM media_thumbnails WHERE origin = ? AND media_id = ?", (origin, media_id))
            txn.execute("DELETE FROM media WHERE origin = ? AND media_id = ?", (origin, media_id))
            orphans = [h for h in sorted(hashes) if not _referenced(txn, h)]
            return True, orphans
        return await self.db.run(txn_fn)

    async def is_referenced(self, sha256: str) -> bool:
        return await self.db.run(_referenced, sha256)

    # thumbnails

    async def get_thumbnail(self, origin: str, media_id: str, width: int, height: int,
                            method: str) -> ThumbnailInfo | None:
        row = await self.db.run(lambda txn: txn.query_one(
            "SELECT width, height, method, content_type, size, sha256 FROM media_thumbnails"
            " WHERE origin = ? AND media_id = ? AND width = ? AND height = ? AND method = ?",
            (origin, media_id, width, height, method)))
        return ThumbnailInfo(*row) if row else None

    async def store_thumbnail(self, origin: str, media_id: str, t: ThumbnailInfo, now_ms: int) -> None:
        await self.db.run(lambda txn: txn.execute(
            "INSERT INTO media_thumbnails (origin, media_id, width, height, method, content_type, size,"
            " sha256, created_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (origin, media_id, width, height, method) DO NOTHING",
            (origin, media_id, t.width, t.height, t.method, t.content_type, t.size, t.sha256, now_ms)))


def _referenced(txn: Txn, sha256: str) -> bool:
    return (txn.query_one("SELECT 1 FROM media WHERE sha256 = ? LIMIT 1", (sha256,)) is not None
            or txn.query_one("SELECT 1 FROM media_thumbnails WHERE sha256 = ? LIMIT 1", (sha256,))
            is not None)
