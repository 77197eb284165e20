"""The ``media:`` config section (see docs/media.md and docs/configuration.md)."""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from homeserver.config import ConfigError, Section

#: The spec's recommended sizes (content_repo.md "Thumbnails"), as Synapse ships them.
DEFAULT_THUMBNAIL_SIZES: tuple[tuple[int, int, str], ...] = (
    (32, 32, "crop"), (96, 96, "crop"), (320, 240, "scale"), (640, 480, "scale"), (800, 600, "scale"),
)


@dataclass(frozen=True)
class UrlPreviewConfig:
    enabled: bool = False
    #: Bytes read from a page (and from its og:image) at most.
    max_page_size: int = 1 << 20
    #: Seconds for the whole fetch (connect, redirects, body).
    timeout_s: float = 10.0
    max_redirects: int = 5
    #: Networks that are allowed even though they are not globally routable (tests, intranets).
    ip_range_whitelist: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, s: Section) -> "UrlPreviewConfig":
        nets = []
        for i, item in enumerate(s.list("ip_range_whitelist", [])):
            try:
                nets.append(ipaddress.ip_network(str(item), strict=False))
            except ValueError:
                raise ConfigError(f"{s.key('ip_range_whitelist')}[{i}]", f"{item!r} is not a network") from None
        return cls(
            enabled=s.bool("enabled", False),
            max_page_size=s.size("max_page_size", 1 << 20),
            timeout_s=s.float("timeout", 10.0, minimum=0.1),
            max_redirects=s.int("max_redirects", 5, minimum=0, maximum=20),
            ip_range_whitelist=tuple(nets),
        )


@dataclass(frozen=True)
class MediaConfig:
    """Limits and behaviour of the content repository."""

    #: Where files live (the local storage provider); default ``<data_dir>/media``.
    store_path: str
    max_upload_size: int = 50 << 20
    #: Images with more pixels than this are never decoded (decompression bombs): 413 M_TOO_LARGE.
    max_image_pixels: int = 32_000_000
    thumbnail_sizes: tuple[tuple[int, int, str], ...] = DEFAULT_THUMBNAIL_SIZES
    #: Serve new uploads only through /_matrix/client/v1/media (the Matrix 1.12 "freeze").
    freeze_legacy_media: bool = False
    #: How long an ID from POST /_matrix/media/v1/create waits for its upload.
    unused_expiration_ms: int = 24 * 3600 * 1000
    max_pending_uploads: int = 10
    #: Longest wait a download may ask for (timeout_ms) on not-yet-uploaded media.
    max_download_wait_ms: int = 60_000
    url_preview: UrlPreviewConfig = field(default_factory=UrlPreviewConfig)

    @classmethod
    def parse(cls, s: Section, data_dir: str) -> "MediaConfig":
        sizes = []
        for i, item in enumerate(s.list("thumbnail_sizes", [list(t) for t in DEFAULT_THUMBNAIL_SIZES])):
            key = f"{s.key('thumbnail_sizes')}[{i}]"
            if isinstance(item, dict):
                ts = Section(item, key)
                w, h, m = ts.int("width", minimum=1), ts.int("height", minimum=1), ts.str("method")
            elif isinstance(item, list) and len(item) == 3:
                w, h, m = item
            else:
                raise ConfigError(key, "must be {width, height, method}")
            if not (isinstance(w, int) and isinstance(h, int) and 0 < w <= 4096 and 0 < h <= 4096):
                raise ConfigError(key, "width and height must be integers from 1 to 4096")
            if m not in ("crop", "scale"):
                raise ConfigError(key, "method must be crop or scale")
            sizes.append((w, h, m))
        store = s.str("store_path", os.path.join(data_dir, "media"))
        return cls(
            store_path=store if os.path.isabs(store) else os.path.join(data_dir, store),
            max_upload_size=s.size("max_upload_size", 50 << 20),
            max_image_pixels=s.int("max_image_pixels", 32_000_000, minimum=1),
            thumbnail_sizes=tuple(sizes),
            freeze_legacy_media=s.bool("freeze_legacy_media", False),
            unused_expiration_ms=s.int("unused_expiration_ms", 24 * 3600 * 1000, minimum=1000),
            max_pending_uploads=s.int("max_pending_uploads", 10, minimum=1),
            max_download_wait_ms=s.int("max_download_wait_ms", 60_000, minimum=0),
            url_preview=UrlPreviewConfig.parse(s.section("url_preview")),
        )
