"""URL previews: fetch a page safely and read its OpenGraph tags.

Safety (the homeserver must not become a proxy into its own network):
- only http and https URLs, on any port;
- the host is resolved here and EVERY address it resolves to must be globally
  routable (no loopback, private, link-local, shared, multicast or reserved
  ranges) unless ``url_preview.ip_range_whitelist`` allows it;
- the connection goes to the address that was checked (no second lookup a DNS
  rebinding could change), with TLS verified against the host name;
- redirects are followed by hand, each hop checked again;
- the whole fetch is bounded in time and bytes.

The blocking fetch runs on a worker thread. The parser is the stdlib's
``html.parser``.
"""
from __future__ import annotations

import http.client
import io
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

from twisted.internet import defer

from homeserver.media.config import UrlPreviewConfig


class PreviewError(Exception):
    """The URL cannot be previewed; ``blocked`` when it points somewhere forbidden."""

    def __init__(self, msg: str, blocked: bool = False) -> None:
        super().__init__(msg)
        self.blocked = blocked


@dataclass(frozen=True)
class Fetched:
    url: str
    content_type: str
    body: bytes


def address_allowed(ip: str, config: UrlPreviewConfig) -> bool:
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if any(addr in net for net in config.ip_range_whitelist):
        return True
    return addr.is_global and not addr.is_multicast


def resolve_checked(host: str, port: int, config: UrlPreviewConfig) -> str:
    """Resolve ``host`` and return one address, refusing if ANY resolved address is forbidden."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise PreviewError(f"cannot resolve {host}: {e}") from None
    addrs = [str(info[4][0]) for info in infos]
    if not addrs:
        raise PreviewError(f"cannot resolve {host}")
    for ip in addrs:
        if not address_allowed(ip, config):
            raise PreviewError("URL blocked: it resolves to a non-public address", blocked=True)
    return addrs[0]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, ip: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._ip = ip

    def connect(self) -> None:
        self.sock = socket.create_connection((self._ip, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, ip: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._ip = ip

    def connect(self) -> None:
        sock = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def fetch(url: str, config: UrlPreviewConfig, max_size: int | None = None,
          user_agent: str = "qun-homeserver URL preview") -> Fetched:
    """GET ``url`` under the rules in the module docstring. Blocking: call on a thread."""
    limit = max_size or config.max_page_size
    deadline = time.monotonic() + config.timeout_s
    for _hop in range(config.max_redirects + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PreviewError("only http and https URLs can be previewed")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise PreviewError("bad port") from None
        ip = resolve_checked(parts.hostname, port, config)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PreviewError("timed out")
        cls = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
        conn = cls(parts.hostname, port, ip, remaining)
        try:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.request("GET", path, headers={"User-Agent": user_agent, "Accept": "text/html,*/*"})
            resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.getheader("Location")
                if not location:
                    raise PreviewError("redirect without a Location")
                url = urljoin(url, location)
                continue
            if resp.status != 200:
                raise PreviewError(f"the page answered {resp.status}")
            length = resp.getheader("Content-Length")
            if length and length.isdigit() and int(length) > limit:
                raise PreviewError("the page is too large")
            chunks, total = [], 0
            while total <= limit:
                if time.monotonic() > deadline:
                    raise PreviewError("timed out")
                chunk = resp.read(min(65536, limit + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
            if total > limit:
                raise PreviewError("the page is too large")
            return Fetched(url, resp.getheader("Content-Type") or "", b"".join(chunks))
        except (OSError, http.client.HTTPException) as e:
            raise PreviewError(f"fetch failed: {e}") from None
        finally:
            conn.close()
    raise PreviewError("too many redirects")


class _OpenGraphParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.og: dict[str, str] = {}
        self.title: str | None = None
        self.description: str | None = None
        self._in_title = False
        self._title_parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): v for k, v in attrs if v is not None}
        if tag == "meta":
            key = a.get("property") or a.get("name") or ""
            content = a.get("content")
            if content is None:
                return
            if key.startswith("og:") and len(self.og) < 50 and key not in self.og:
                self.og[key[:100]] = content[:1000]
            elif key.lower() == "description" and self.description is None:
                self.description = content[:1000]
        elif tag == "title" and self.title is None:
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._in_title:
            self._in_title = False
            self.title = "".join(self._title_parts).strip()[:1000]

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self._title_parts.append(data)


def parse_opengraph(html: str, base_url: str) -> dict[str, Any]:
    """OpenGraph tags of a page, with <title> and the description meta as fallbacks."""
    parser = _OpenGraphParser()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # malformed markup: keep what was read
        pass
    og: dict[str, Any] = dict(parser.og)
    if "og:title" not in og and parser.title:
        og["og:title"] = parser.title
    if "og:description" not in og and parser.description:
        og["og:description"] = parser.description
    if "og:image" in og:
        og["og:image"] = urljoin(base_url, og["og:image"])
    return og


def decode_html(body: bytes, content_type: str) -> str:
    charset = "utf-8"
    for param in content_type.split(";")[1:]:
        k, _, v = param.partition("=")
        if k.strip().lower() == "charset" and v.strip():
            charset = v.strip().strip('"')
    try:
        return body.decode(charset, "replace")
    except LookupError:
        return body.decode("utf-8", "replace")


class UrlPreviewer:
    """Answers preview_url: fetch (on a thread), parse, store og:image as media, cache an hour."""

    CACHE_MS = 3600 * 1000
    CACHE_ENTRIES = 1000
    MAX_CONCURRENT_FETCHES = 4

    def __init__(self, config: UrlPreviewConfig, media: Any, clock: Any, run_blocking: Any,
                 max_image_size: int) -> None:
        self.config = config
        self.media = media  # MediaService: stores the og:image
        self.clock = clock
        self._run = run_blocking
        self.max_image_size = max_image_size
        self._cache: dict[str, tuple[int, dict[str, Any]]] = {}
        # Fetches hold a worker thread for up to `timeout`: cap them so slow sites
        # cannot starve uploads and thumbnails, which share the reactor's pool.
        self._slots = defer.DeferredSemaphore(self.MAX_CONCURRENT_FETCHES)

    async def preview(self, url: str, user_id: str) -> dict[str, Any]:
        now = self.clock.time_msec()
        hit = self._cache.get(url)
        if hit is not None and hit[0] > now:
            return hit[1]
        page = await self._slots.run(self._run, fetch, url, self.config)
        og: dict[str, Any] = {}
        ctype = page.content_type.split(";", 1)[0].strip().lower()
        if ctype in ("text/html", "application/xhtml+xml"):
            og = parse_opengraph(decode_html(page.body, page.content_type), page.url)
            image_url = og.pop("og:image", None)
            if isinstance(image_url, str):
                try:
                    image = await self._slots.run(self._run, fetch, image_url, self.config,
                                                  self.max_image_size)
                    og.update(await self._store_image(image, user_id))
                except PreviewError:
                    pass  # a preview without its picture is still a preview
        elif ctype.startswith("image/"):
            og.update(await self._store_image(page, user_id))
        if len(self._cache) >= self.CACHE_ENTRIES:
            self._cache.clear()
        self._cache[url] = (now + self.CACHE_MS, og)
        return og

    async def _store_image(self, image: Fetched, user_id: str) -> dict[str, Any]:
        ctype = image.content_type.split(";", 1)[0].strip().lower()
        if not ctype.startswith("image/"):
            return {}
        mxc = await self.media.upload(user_id, io.BytesIO(image.body), ctype, None)
        return {"og:image": mxc, "og:image:type": ctype, "matrix:image:size": len(image.body)}
