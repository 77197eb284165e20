"""Content repository endpoints (spec 'Content repository', content_repo.md).

Uploads arrive in Twisted's temporary file (the site's ``body_limits`` let
them past the JSON body limit) and are copied to the store on a thread.
Downloads are streamed from the file with a pull producer, never read whole.
Every media response carries the spec's Content-Security-Policy, nosniff and
Cross-Origin-Resource-Policy headers and a Content-Disposition that is
``inline`` only for the spec's allow-list of types.
"""
from __future__ import annotations

import io
from typing import Any, BinaryIO

from twisted.internet import defer
from twisted.protocols.basic import FileSender
from twisted.python.failure import Failure

from homeserver.api.errors import MatrixError, invalid_param, missing_param, not_found, unrecognized
from homeserver.api.http import ApiRequest, Response, Router
from homeserver.media.config import MediaConfig
from homeserver.media.preview import PreviewError, UrlPreviewer
from homeserver.media.service import MediaService
from homeserver.media.serving import (SECURITY_HEADERS, clean_content_type, content_disposition,
                                      parse_range)
from homeserver.storage.media import MediaInfo

MEDIA_PREFIX = "/_matrix/media"
AUTHED_PREFIX = "/_matrix/client/v1/media"
LEGACY_VERSIONS = ("v3", "r0")
#: Path prefixes whose bodies may be as large as media.max_upload_size.
UPLOAD_PREFIXES = tuple(f"{MEDIA_PREFIX}/{v}/upload" for v in LEGACY_VERSIONS)
#: Path prefixes of handlers that read or stream the Twisted request itself (``ApiRequest.raw``).
RAW_PREFIXES = (MEDIA_PREFIX + "/", AUTHED_PREFIX + "/")
MAX_FILENAME = 1024


class _ChunkedFileSender(FileSender):
    CHUNK_SIZE = 1 << 16


class _Window:
    """A read-only view of ``length`` bytes of a file (for byte ranges)."""

    def __init__(self, f: BinaryIO, length: int) -> None:
        self._f = f
        self._left = length

    def read(self, n: int) -> bytes:
        if self._left <= 0 or self._f.closed:
            return b""
        chunk = self._f.read(min(n, self._left))
        self._left -= len(chunk)
        return chunk


class MediaServlets:
    def __init__(self, server_name: str, config: MediaConfig, media: MediaService,
                 previewer: UrlPreviewer | None) -> None:
        self.server_name = server_name
        self.config = config
        self.media = media
        self.previewer = previewer

    def register(self, router: Router) -> None:
        for v in LEGACY_VERSIONS:
            base = f"{MEDIA_PREFIX}/{v}"
            router.add("POST", f"{base}/upload", self.upload, name=f"{MEDIA_PREFIX}/v3/upload")
            router.add("PUT", f"{base}/upload/{{server_name}}/{{media_id}}", self.upload_to,
                       name=f"{MEDIA_PREFIX}/v3/upload/{{serverName}}/{{mediaId}}")
            router.add("GET", f"{base}/download/{{server_name}}/{{media_id}}", self.legacy_download,
                       auth="none", name=f"{MEDIA_PREFIX}/v3/download")
            router.add("GET", f"{base}/download/{{server_name}}/{{media_id}}/{{file_name}}",
                       self.legacy_download, auth="none", name=f"{MEDIA_PREFIX}/v3/download")
            router.add("GET", f"{base}/thumbnail/{{server_name}}/{{media_id}}", self.legacy_thumbnail,
                       auth="none", name=f"{MEDIA_PREFIX}/v3/thumbnail")
            router.add("GET", f"{base}/config", self.config_endpoint, name=f"{MEDIA_PREFIX}/v3/config")
            router.add("GET", f"{base}/preview_url", self.preview_url, name=f"{MEDIA_PREFIX}/v3/preview_url")
        router.add("POST", f"{MEDIA_PREFIX}/v1/create", self.create)
        router.add("GET", f"{AUTHED_PREFIX}/download/{{server_name}}/{{media_id}}", self.download,
                   name=f"{AUTHED_PREFIX}/download")
        router.add("GET", f"{AUTHED_PREFIX}/download/{{server_name}}/{{media_id}}/{{file_name}}",
                   self.download, name=f"{AUTHED_PREFIX}/download")
        router.add("GET", f"{AUTHED_PREFIX}/thumbnail/{{server_name}}/{{media_id}}", self.thumbnail,
                   name=f"{AUTHED_PREFIX}/thumbnail")
        router.add("GET", f"{AUTHED_PREFIX}/config", self.config_endpoint)
        router.add("GET", f"{AUTHED_PREFIX}/preview_url", self.preview_url)

    # uploads

    def _body(self, request: ApiRequest) -> BinaryIO:
        """The upload body as a file: Twisted's temp file when there is one."""
        raw = getattr(request.raw, "content", None)
        if raw is None:
            self.media.stats["uploads_in_memory"] += 1
            return io.BytesIO(request.content)
        if request.content:
            self.media.stats["uploads_in_memory"] += 1
        else:
            self.media.stats["uploads_streamed_from_file"] += 1
        return raw

    def _filename(self, request: ApiRequest) -> str | None:
        name = request.query("filename")
        if name is not None and len(name) > MAX_FILENAME:
            raise invalid_param("filename is too long")
        return name or None

    async def upload(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/media/v3/upload — store content, answer its mxc:// URI (content-repo)."""
        mxc = await self.media.upload(request.requester.user_id, self._body(request),
                                      clean_content_type(request.headers.get("content-type")),
                                      self._filename(request))
        return {"content_uri": mxc}

    async def create(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/media/v1/create — reserve an mxc:// URI to upload to later."""
        mxc, expires = await self.media.create(request.requester.user_id)
        return {"content_uri": mxc, "unused_expires_at": expires}

    async def upload_to(self, request: ApiRequest) -> dict[str, Any]:
        """PUT /_matrix/media/v3/upload/{serverName}/{mediaId} — the content of a created URI."""
        p = request.path_params
        await self.media.upload_to(request.requester.user_id, p["server_name"], p["media_id"],
                                   self._body(request),
                                   clean_content_type(request.headers.get("content-type")),
                                   self._filename(request))
        return {}

    # downloads

    async def download(self, request: ApiRequest) -> Any:
        """GET /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}] — the content."""
        return await self._download(request, legacy=False)

    async def legacy_download(self, request: ApiRequest) -> Any:
        """GET /_matrix/media/v3/download/{serverName}/{mediaId}[/{fileName}] — deprecated, unauthenticated.

        Media uploaded while media.freeze_legacy_media is on answers 404 here.
        """
        return await self._download(request, legacy=True)

    async def _download(self, request: ApiRequest, legacy: bool) -> Any:
        p = request.path_params
        media = await self.media.get_media(p["server_name"], p["media_id"], legacy=legacy,
                                           timeout_ms=_timeout(request),
                                           allow_remote=request.query_bool("allow_remote", True))
        return await self._serve(request, media, p.get("file_name") or media.upload_name, legacy)

    async def _serve(self, request: ApiRequest, media: MediaInfo, filename: str | None,
                     public: bool) -> Any:
        f = await self.media.open(media)
        if f is None:
            raise not_found("Media not found")
        try:
            size = media.size or 0
            headers = {
                **SECURITY_HEADERS,
                "Content-Disposition": content_disposition(media.content_type, filename),
                "Cache-Control": ("public" if public else "private") + ", max-age=86400",
                "Accept-Ranges": "bytes",
            }
            status, start, length = 200, 0, size
            rng = parse_range(request.headers.get("range"), size)
            if rng is False:
                raise MatrixError(416, "M_UNKNOWN", "Range not satisfiable",
                                  headers={**SECURITY_HEADERS, "Content-Range": f"bytes */{size}"})
            if rng is not None:
                status, start, length = 206, rng[0], rng[1] - rng[0] + 1
                headers["Content-Range"] = f"bytes {rng[0]}-{rng[1]}/{size}"
            twreq = request.raw
            if twreq is None:  # not over HTTP: no streaming consumer, answer the bytes
                f.seek(start)
                return Response(status, f.read(length), media.content_type or "application/octet-stream",
                                headers)
            twreq.setResponseCode(status)
            twreq.setHeader(b"Content-Type", (media.content_type or "application/octet-stream").encode("latin-1"))
            for name, value in headers.items():
                twreq.setHeader(name.encode("ascii"), value.encode("latin-1"))
            twreq.setHeader(b"Content-Length", str(length).encode("ascii"))
            if twreq.method == b"HEAD" or length == 0:
                twreq.finish()
                return None
            f.seek(start)
            self.media.stats["downloads_streamed"] += 1
            await _send(f, length, twreq)
            return None
        finally:
            f.close()

    async def thumbnail(self, request: ApiRequest) -> Any:
        """GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId} — a thumbnail of an image."""
        return await self._thumbnail(request, legacy=False)

    async def legacy_thumbnail(self, request: ApiRequest) -> Any:
        """GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId} — deprecated, unauthenticated."""
        return await self._thumbnail(request, legacy=True)

    async def _thumbnail(self, request: ApiRequest, legacy: bool) -> Any:
        p = request.path_params
        width, height = _dimension(request, "width"), _dimension(request, "height")
        method = request.query("method", "scale")
        if method not in ("crop", "scale"):
            raise invalid_param("method must be crop or scale")
        animated = request.query_bool("animated", False)
        media = await self.media.get_media(p["server_name"], p["media_id"], legacy=legacy,
                                           timeout_ms=_timeout(request),
                                           allow_remote=request.query_bool("allow_remote", True))
        result = await self.media.thumbnail(media, width, height, method, animated)
        if result.thumbnail is None:
            return await self._serve(request, media, None, legacy)
        thumb = result.thumbnail
        data = await self.media.read_all(thumb)
        return Response(200, data, thumb.content_type, {
            **SECURITY_HEADERS,
            "Content-Disposition": content_disposition(thumb.content_type, f"thumbnail.{thumb.content_type[6:]}"),
            "Cache-Control": ("public" if legacy else "private") + ", max-age=86400",
        })

    # config and previews

    async def config_endpoint(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v1/media/config — the upload size limit (also the legacy path)."""
        return {"m.upload.size": self.config.max_upload_size}

    async def preview_url(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v1/media/preview_url — OpenGraph data for a URL (also legacy path).

        Off by default: then 404 M_UNRECOGNIZED, as for an endpoint the server does not offer
        (what clients already handle from Synapse). docs/media.md.
        """
        if self.previewer is None:
            raise unrecognized(404, "URL previews are disabled on this server")
        url = request.query("url")
        if not url:
            raise missing_param("Missing url parameter")
        if len(url) > 2048:
            raise invalid_param("url is too long")
        try:
            return await self.previewer.preview(url, request.requester.user_id)
        except PreviewError as e:
            if e.blocked:
                raise MatrixError(403, "M_FORBIDDEN", str(e)) from None
            raise MatrixError(502, "M_UNKNOWN", f"Cannot preview this URL: {e}") from None


def _timeout(request: ApiRequest) -> int:
    return request.query_int("timeout_ms", 20_000, minimum=0)


def _dimension(request: ApiRequest, name: str) -> int:
    value = request.query(name)
    if value is None:
        raise missing_param(f"Missing {name} parameter")
    try:
        number = int(value)
    except ValueError:
        raise invalid_param(f"{name} must be an integer") from None
    if number <= 0 or number > 10_000:
        raise invalid_param(f"{name} must be between 1 and 10000")
    return number


async def _send(f: BinaryIO, length: int, twreq: Any) -> None:
    """Stream ``length`` bytes of ``f`` to the request, then finish it.

    A client that goes away stops the producer; the request is then left alone
    (the site sees it disconnected).
    """
    done: defer.Deferred[Any] = defer.Deferred()

    def relay(result: Any) -> None:
        if done.called:  # our request was cancelled meanwhile
            return
        if isinstance(result, Failure):
            done.errback(result)
        else:
            done.callback(result)

    _ChunkedFileSender().beginFileTransfer(_Window(f, length), twreq).addBoth(relay)
    try:
        await done
    except Exception:
        return
    if not twreq.finished and not getattr(twreq, "_disconnected", False):
        twreq.finish()
