"""The content repository: uploads, async create, lookups, thumbnails, admin actions.

HTTP lives in homeserver/api/client/media.py; bytes live behind a
:class:`~homeserver.media.storage.StorageProvider`; rows live in
:class:`~homeserver.storage.media.MediaStore`. Blocking work (hashing, file
moves, Pillow) runs on the reactor's thread pool, never on the reactor.
"""
from __future__ import annotations

import io
import logging
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Protocol, TypeVar

from twisted.internet import defer, threads
from twisted.python.failure import Failure

from homeserver.api.errors import MatrixError, invalid_param, not_found
from homeserver.core.ids import server_name_is_valid
from homeserver.media import thumbnailer
from homeserver.media.config import MediaConfig
from homeserver.media.storage import StorageProvider, copy_hashing
from homeserver.storage.media import MediaInfo, MediaStore, ThumbnailInfo
from homeserver.util.clock import Clock
from homeserver.util.ids import random_string

logger = logging.getLogger(__name__)

T = TypeVar("T")
MEDIA_ID = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
#: How often expired pending IDs are swept from the table.
SWEEP_INTERVAL_S = 3600.0


@dataclass(frozen=True)
class RemoteFile:
    content_type: str | None
    filename: str | None


class RemoteMediaFetcher(Protocol):
    """The hook federation fills: fetch ``mxc://origin/media_id`` from its server.

    The implementation (the federation engineer's) calls
    ``GET /_matrix/federation/v1/media/download/{mediaId}`` on ``origin``,
    writes at most ``max_size`` bytes of the file to ``dest`` and returns its
    content type and filename. It raises ``MatrixError(404, "M_NOT_FOUND")``
    when the origin has no such media and ``MatrixError(502, "M_TOO_LARGE")``
    past ``max_size``. The content repository caches what it gets (the media
    table with ``origin`` = the remote server) and thumbnails it locally.
    """

    async def fetch(self, origin: str, media_id: str, dest: BinaryIO, max_size: int) -> RemoteFile: ...


def check_media_path(server_name: str, media_id: str) -> None:
    """The spec's sanitising of mxc:// parts (content_repo.md "Security considerations")."""
    if not server_name_is_valid(server_name):
        raise invalid_param("Invalid server name")
    if not MEDIA_ID.match(media_id):
        raise invalid_param("Invalid media ID")


def cannot_thumbnail() -> MatrixError:
    return MatrixError(400, "M_UNKNOWN", "Cannot generate thumbnails for the requested content")


def image_too_large() -> MatrixError:
    return MatrixError(413, "M_TOO_LARGE", "The image is too large to thumbnail")


@dataclass(frozen=True)
class ThumbnailResult:
    """Either a stored thumbnail or, when that is what the spec asks for, the original."""

    media: MediaInfo
    thumbnail: ThumbnailInfo | None  # None: serve the original


class MediaService:
    def __init__(self, server_name: str, config: MediaConfig, store: MediaStore,
                 storage: StorageProvider, clock: Clock,
                 remote_fetcher: RemoteMediaFetcher | None = None,
                 run_blocking: Callable[..., Any] | None = None) -> None:
        self.server_name = server_name
        self.config = config
        self.store = store
        self.storage = storage
        self.clock = clock
        #: Set by server.py when federation provides one; None answers remote media with 404.
        self.remote_fetcher = remote_fetcher
        self._run = run_blocking or threads.deferToThread
        # Serialises "file in place + row inserted" against "rows deleted + orphan files removed",
        # so a deduplicated upload never loses its file to a concurrent delete.
        self._gc_lock = defer.DeferredLock()
        self._waiters: dict[tuple[str, str], list[defer.Deferred[None]]] = {}
        self._rendering: dict[tuple[str, str, int, int, str], list[defer.Deferred[Any]]] = {}
        self._probes: OrderedDict[str, thumbnailer.Probe] = OrderedDict()
        self._sweeper: Any = None
        #: Counters for tests and metrics: how bodies travelled.
        self.stats = {"uploads_streamed_from_file": 0, "uploads_in_memory": 0, "downloads_streamed": 0}

    def start(self) -> None:
        self._sweeper = self.clock.looping_call(self.sweep_expired, SWEEP_INTERVAL_S)

    def stop(self) -> None:
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()

    async def sweep_expired(self) -> int:
        """Drop pending IDs whose upload never came (``unused_expires_at`` passed)."""
        try:
            return await self.store.delete_expired_pending(self.clock.time_msec())
        except Exception:
            logger.exception("sweeping expired media IDs failed")
            return 0

    # uploads

    async def _ingest(self, body: BinaryIO) -> tuple[str, int]:
        """Copy an upload into the store, hashing as it goes, off the reactor."""
        limit = self.config.max_upload_size

        def copy() -> tuple[str, str, int]:
            body.seek(0)
            f, path = self.storage.new_temp_file()
            try:
                with f:
                    sha, size = copy_hashing(body, f, limit)
            except BaseException:
                os.unlink(path)
                raise
            return sha, path, size

        try:
            sha, path, size = await self._run(copy)
        except OverflowError:
            raise MatrixError(413, "M_TOO_LARGE", "Upload is larger than the server allows") from None
        await self._gc_lock.acquire()  # released by the caller after the row is written
        try:
            await self._run(self.storage.put, sha, path)
        except BaseException:
            self._gc_lock.release()
            raise
        return sha, size

    async def upload(self, uploader: str, body: BinaryIO, content_type: str,
                     filename: str | None) -> str:
        """Store a new upload; returns its ``mxc://`` URI."""
        sha, size = await self._ingest(body)
        try:
            now = self.clock.time_msec()
            media_id = random_string(24)
            await self.store.insert_media(MediaInfo(
                self.server_name, media_id, uploader, content_type, filename, size, sha, now, now, None,
                False, self.config.freeze_legacy_media))
        finally:
            self._gc_lock.release()
        return f"mxc://{self.server_name}/{media_id}"

    async def create(self, uploader: str) -> tuple[str, int]:
        """POST /create: a pending ID. Returns (mxc URI, unused_expires_at)."""
        now = self.clock.time_msec()
        expires = now + self.config.unused_expiration_ms
        media_id = random_string(24)
        ok = await self.store.create_pending(MediaInfo(
            self.server_name, media_id, uploader, None, None, None, None, now, None, expires, False,
            self.config.freeze_legacy_media), now, self.config.max_pending_uploads)
        if not ok:
            raise MatrixError(429, "M_LIMIT_EXCEEDED", "Too many pending media uploads",
                              retry_after_ms=60_000)
        return f"mxc://{self.server_name}/{media_id}", expires

    async def upload_to(self, uploader: str, server_name: str, media_id: str, body: BinaryIO,
                        content_type: str, filename: str | None) -> None:
        """PUT /upload/{serverName}/{mediaId}: fill a pending ID created by ``uploader``."""
        check_media_path(server_name, media_id)
        if server_name != self.server_name:
            raise not_found("Unknown media ID")
        media = await self.store.get_media(server_name, media_id)
        now = self.clock.time_msec()
        if media is None or (media.pending and (media.unused_expires_at or 0) <= now):
            raise not_found("Unknown media ID")
        if media.uploader != uploader:
            raise MatrixError(403, "M_FORBIDDEN", "This media ID was created by another user")
        if not media.pending:
            raise MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media ID already has content")
        sha, size = await self._ingest(body)
        try:
            ok = await self.store.complete_pending(
                server_name, media_id, content_type, filename, size, sha, self.clock.time_msec(),
                self.config.freeze_legacy_media)
        finally:
            self._gc_lock.release()
        if not ok:
            # lost a race with another upload (or the ID expired meanwhile); drop our copy if unused
            await self._collect([sha])
            raise MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media ID already has content")
        for d in self._waiters.pop((server_name, media_id), []):
            if not d.called:
                d.callback(None)

    # lookups

    async def get_media(self, server_name: str, media_id: str, *, legacy: bool = False,
                        timeout_ms: int = 20_000, allow_remote: bool = True) -> MediaInfo:
        """The media to serve, waiting up to ``timeout_ms`` for a pending upload.

        Raises:
            MatrixError: 404 M_NOT_FOUND (unknown, quarantined, expired, frozen for legacy
                routes, remote without a fetcher), 504 M_NOT_YET_UPLOADED.
        """
        check_media_path(server_name, media_id)
        if server_name != self.server_name:
            media = await self._get_remote(server_name, media_id, allow_remote)
        else:
            media = await self.store.get_media(server_name, media_id)
            if media is not None and media.pending:
                media = await self._wait_for_upload(media, timeout_ms)
        if media is None or media.quarantined:
            raise not_found("Media not found")
        if legacy and media.authenticated_only:
            raise not_found("Media not found")
        return media

    async def _wait_for_upload(self, media: MediaInfo, timeout_ms: int) -> MediaInfo | None:
        now = self.clock.time_msec()
        if (media.unused_expires_at or 0) <= now:
            return None
        wait_ms = max(0, min(timeout_ms, self.config.max_download_wait_ms,
                             (media.unused_expires_at or 0) - now))
        if wait_ms > 0:
            d: defer.Deferred[None] = defer.Deferred()
            key = (media.origin, media.media_id)
            self._waiters.setdefault(key, []).append(d)
            timer: Any = self.clock.call_later(wait_ms / 1000.0, _fire, d)
            try:
                await d
            finally:
                if timer.active():
                    timer.cancel()
                waiters = self._waiters.get(key)
                if waiters and d in waiters:
                    waiters.remove(d)
                    if not waiters:
                        del self._waiters[key]
            fresh = await self.store.get_media(media.origin, media.media_id)
            if fresh is None or not fresh.pending:
                return fresh
        raise MatrixError(504, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded")

    async def _get_remote(self, origin: str, media_id: str, allow_fetch: bool) -> MediaInfo | None:
        cached = await self.store.get_media(origin, media_id)
        if cached is not None or self.remote_fetcher is None or not allow_fetch:
            return cached
        f, path = await self._run(self.storage.new_temp_file)
        try:
            with f:
                try:
                    remote = await self.remote_fetcher.fetch(origin, media_id, f,
                                                             self.config.max_upload_size)
                except MatrixError:
                    raise
                except Exception:
                    logger.warning("fetching mxc://%s/%s failed", origin, media_id, exc_info=True)
                    raise MatrixError(502, "M_UNKNOWN", "Could not fetch the remote media") from None
            with open(path, "rb") as body:
                sha, size = await self._ingest(body)
        finally:
            if os.path.exists(path):
                os.unlink(path)
        try:
            now = self.clock.time_msec()
            media = MediaInfo(origin, media_id, None, remote.content_type or "application/octet-stream",
                              remote.filename, size, sha, now, now, None, False, False)
            try:
                await self.store.insert_media(media)
            except Exception:  # fetched concurrently by another request: use that row
                existing = await self.store.get_media(origin, media_id)
                if existing is None:
                    raise
                media = existing
        finally:
            self._gc_lock.release()
        return media

    async def open(self, media: MediaInfo | ThumbnailInfo) -> BinaryIO | None:
        """Open stored bytes for reading (on a thread)."""
        if media.sha256 is None:
            return None
        return await self._run(self.storage.open, media.sha256)  # type: ignore[no-any-return]

    async def read_all(self, item: ThumbnailInfo) -> bytes:
        def read() -> bytes:
            f = self.storage.open(item.sha256)
            if f is None:
                raise FileNotFoundError(item.sha256)
            with f:
                return f.read()
        return await self._run(read)

    # thumbnails

    async def thumbnail(self, media: MediaInfo, width: int, height: int, method: str,
                        animated: bool = False) -> ThumbnailResult:
        """The thumbnail to serve for a request, generating and caching it on first use.

        Raises:
            MatrixError: 400 M_UNKNOWN (not an image, undecodable), 413 M_TOO_LARGE (too many pixels).
        """
        ctype = thumbnailer.base_type(media.content_type)
        if ctype not in thumbnailer.THUMBNAILABLE:
            raise cannot_thumbnail()
        info = await self._probe(media)
        if animated and info.animated and ctype in thumbnailer.ANIMATABLE:
            return ThumbnailResult(media, None)
        if info.width <= width and info.height <= height:
            return ThumbnailResult(media, None)  # already small: the spec wants the original
        tw, th, tm = thumbnailer.choose_size(self.config.thumbnail_sizes, width, height, method)
        cached = await self.store.get_thumbnail(media.origin, media.media_id, tw, th, tm)
        if cached is not None:
            return ThumbnailResult(media, cached)
        key = (media.origin, media.media_id, tw, th, tm)
        # Concurrent requests for one thumbnail share one rendering.
        waiter: defer.Deferred[ThumbnailInfo] = defer.Deferred()
        waiters = self._rendering.get(key)
        if waiters is None:
            waiters = self._rendering[key] = [waiter]
            defer.Deferred.fromCoroutine(self._generate(media, tw, th, tm)).addBoth(self._rendered, key)
        else:
            waiters.append(waiter)
        return ThumbnailResult(media, await waiter)

    def _rendered(self, result: Any, key: tuple) -> None:
        for waiter in self._rendering.pop(key, []):
            if waiter.called:  # its request went away
                continue
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    async def _probe(self, media: MediaInfo) -> thumbnailer.Probe:
        assert media.sha256 is not None
        info = self._probes.get(media.sha256)
        if info is not None:
            self._probes.move_to_end(media.sha256)
            return info

        def run() -> thumbnailer.Probe:
            f = self.storage.open(media.sha256)  # type: ignore[arg-type]
            if f is None:
                raise thumbnailer.ThumbnailError("missing file")
            with f:
                return thumbnailer.probe(f, self.config.max_image_pixels)

        info = await self._blocking_image_op(run)
        self._probes[media.sha256] = info
        if len(self._probes) > 10_000:
            self._probes.popitem(last=False)
        return info

    async def _blocking_image_op(self, fn: Callable[[], T]) -> T:
        try:
            return await self._run(fn)
        except thumbnailer.ImageTooLarge:
            raise image_too_large() from None
        except thumbnailer.ThumbnailError:
            raise cannot_thumbnail() from None

    async def _generate(self, media: MediaInfo, width: int, height: int, method: str) -> ThumbnailInfo:
        def run() -> tuple[str, str, thumbnailer.Rendered]:
            f = self.storage.open(media.sha256)  # type: ignore[arg-type]
            if f is None:
                raise thumbnailer.ThumbnailError("missing file")
            with f:
                rendered = thumbnailer.render(f, media.content_type or "", width, height, method,
                                              self.config.max_image_pixels)
            out, path = self.storage.new_temp_file()
            with out:
                sha, _size = copy_hashing(io.BytesIO(rendered.data), out, len(rendered.data))
            return sha, path, rendered

        sha, path, rendered = await self._blocking_image_op(run)
        thumb = ThumbnailInfo(width, height, method, rendered.content_type, len(rendered.data), sha)
        await self._gc_lock.acquire()
        try:
            await self._run(self.storage.put, sha, path)
            await self.store.store_thumbnail(media.origin, media.media_id, thumb, self.clock.time_msec())
        finally:
            self._gc_lock.release()
        return thumb

    # admin

    async def quarantine(self, server_name: str, media_id: str, quarantined: bool = True) -> bool:
        check_media_path(server_name, media_id)
        return await self.store.set_quarantined(server_name, media_id, quarantined)

    async def delete(self, server_name: str, media_id: str) -> bool:
        """Delete a media item, its thumbnails, and the files nothing else shares."""
        check_media_path(server_name, media_id)
        await self._gc_lock.acquire()
        try:
            existed, orphans = await self.store.delete_media(server_name, media_id)
            for sha in orphans:
                await self._run(self.storage.delete, sha)
        finally:
            self._gc_lock.release()
        return existed

    async def _collect(self, hashes: list[str]) -> None:
        await self._gc_lock.acquire()
        try:
            for sha in hashes:
                if not await self.store.is_referenced(sha):
                    await self._run(self.storage.delete, sha)
        finally:
            self._gc_lock.release()


def _fire(d: "defer.Deferred[None]") -> None:
    if not d.called:
        d.callback(None)
