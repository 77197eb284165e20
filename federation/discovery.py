"""Server discovery: from a server name to addresses, TLS name and Host header.

Follows server-server-api.md "Resolving server names", in order: IP
literals, explicit ports, ``/.well-known/matrix/server`` (cached per its
headers, 24 h by default, at most 48 h; failures cached for an hour), SRV
``_matrix-fed._tcp`` then the legacy ``_matrix._tcp``, and port 8448.

The two network look-ups are injected (``fetch_well_known`` and
``lookup_srv``) so the order of the steps is tested with fakes; the
defaults use treq and ``twisted.names``.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from homeserver.util.clock import Clock

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8448
WELL_KNOWN_DEFAULT_TTL_S = 24 * 3600
WELL_KNOWN_MAX_TTL_S = 48 * 3600
WELL_KNOWN_ERROR_TTL_S = 3600
WELL_KNOWN_MAX_BYTES = 50 * 1024
SRV_TTL_S = 3600
#: Cache entries kept at most (oldest dropped first), so a flood of names stays bounded.
MAX_CACHE_ENTRIES = 10_000

#: fetch_well_known(hostname) -> (status, headers {lower-case name: value}, body) or None on a network error.
FetchWellKnown = Callable[[str], Awaitable["tuple[int, dict[str, str], bytes] | None"]]
#: lookup_srv(name) -> [(priority, weight, target, port)]; [] when there is no record.
LookupSrv = Callable[[str], Awaitable["list[tuple[int, int, str, int]]"]]

_SERVER_NAME = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+)(?::(\d{1,5}))?$")


class DiscoveryError(Exception):
    """The server name is malformed or cannot be resolved."""


@dataclass(frozen=True)
class ResolvedServer:
    """Where to connect for a server name.

    Attributes:
        targets: ``(host, port)`` pairs to try in order; ``host`` is an IP
            literal or a hostname still to resolve.
        tls_name: The name the certificate must be valid for (also the SNI).
        host_header: The HTTP ``Host`` header.
    """
    targets: tuple[tuple[str, int], ...]
    tls_name: str
    host_header: str


def parse_server_name(name: str) -> tuple[str, int | None]:
    """``host[:port]`` → (host without brackets, port or None)."""
    m = _SERVER_NAME.match(name)
    if not m or len(name) > 255:
        raise DiscoveryError(f"invalid server name {name!r}")
    host, port = m.group(1), m.group(2)
    if host.startswith("["):
        host = host[1:-1]
        if not is_ip_literal(host):
            raise DiscoveryError(f"invalid IPv6 literal in {name!r}")
    port_n = int(port) if port is not None else None
    if port_n is not None and not 0 < port_n < 65536:
        raise DiscoveryError(f"invalid port in {name!r}")
    return host, port_n


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _cache_ttl(headers: dict[str, str]) -> float:
    """Seconds to cache a well-known response, from Cache-Control max-age (Expires is ignored)."""
    cc = headers.get("cache-control", "")
    if "no-store" in cc or "no-cache" in cc:
        return 0.0
    m = re.search(r"max-age=(\d+)", cc)
    if m:
        return min(float(m.group(1)), WELL_KNOWN_MAX_TTL_S)
    return WELL_KNOWN_DEFAULT_TTL_S


def _order_srv(records: list[tuple[int, int, str, int]]) -> list[tuple[str, int]]:
    """Lowest priority first, heavier weights first within a priority (deterministic)."""
    ordered = sorted(records, key=lambda r: (r[0], -r[1], r[2], r[3]))
    return [(target.rstrip("."), port) for _p, _w, target, port in ordered if target not in ("", ".")]


class ServerResolver:
    """Resolves server names, caching well-known and SRV answers."""

    def __init__(self, clock: Clock, fetch_well_known: FetchWellKnown, lookup_srv: LookupSrv) -> None:
        self._clock = clock
        self._fetch_well_known = fetch_well_known
        self._lookup_srv = lookup_srv
        self._well_known: dict[str, tuple[float, str | None]] = {}
        self._srv: dict[str, tuple[float, list[tuple[str, int]]]] = {}

    async def resolve(self, server_name: str) -> ResolvedServer:
        host, port = parse_server_name(server_name)
        # 1. IP literal; 2. explicit port.
        if is_ip_literal(host) or port is not None:
            return ResolvedServer(((host, port or DEFAULT_PORT),), host, server_name)
        # 3. well-known delegation.
        delegated = await self._delegation(host)
        if delegated is not None:
            try:
                d_host, d_port = parse_server_name(delegated)
            except DiscoveryError:
                d_host, d_port = "", None
            if d_host:
                if is_ip_literal(d_host) or d_port is not None:
                    return ResolvedServer(((d_host, d_port or DEFAULT_PORT),), d_host, delegated)
                targets = await self._srv_targets(d_host)
                return ResolvedServer(tuple(targets or [(d_host, DEFAULT_PORT)]), d_host, d_host)
        # 4./5. SRV on the server name; 6. port 8448.
        targets = await self._srv_targets(host)
        return ResolvedServer(tuple(targets or [(host, DEFAULT_PORT)]), host, host)

    async def _srv_targets(self, host: str) -> list[tuple[str, int]]:
        now = self._clock.time()
        cached = self._srv.get(host)
        if cached and cached[0] > now:
            return cached[1]
        targets: list[tuple[str, int]] = []
        for service in ("_matrix-fed._tcp.", "_matrix._tcp."):
            try:
                targets = _order_srv(await self._lookup_srv(service + host))
            except Exception as e:  # DNS failures mean "no record"
                logger.debug("SRV %s%s failed: %s", service, host, e)
                targets = []
            if targets:
                break
        _bounded_put(self._srv, host, (now + SRV_TTL_S, targets))
        return targets

    async def _delegation(self, host: str) -> str | None:
        now = self._clock.time()
        cached = self._well_known.get(host)
        if cached and cached[0] > now:
            return cached[1]
        result: str | None = None
        ttl: float = WELL_KNOWN_ERROR_TTL_S
        try:
            response = await self._fetch_well_known(host)
        except Exception as e:
            logger.info("well-known for %s failed: %s", host, e)
            response = None
        if response is not None:
            status, headers, body = response
            if status == 200 and len(body) <= WELL_KNOWN_MAX_BYTES:
                result = _parse_well_known(body)
                if result is not None:
                    ttl = _cache_ttl(headers)
        _bounded_put(self._well_known, host, (now + ttl, result))
        return result


def _parse_well_known(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    value = data.get("m.server") if isinstance(data, dict) else None
    if not isinstance(value, str) or not value:
        return None
    try:
        parse_server_name(value)
    except DiscoveryError:
        return None
    return value


def _bounded_put(cache: dict[str, Any], key: str, value: Any) -> None:
    cache.pop(key, None)
    cache[key] = value
    while len(cache) > MAX_CACHE_ENTRIES:
        cache.pop(next(iter(cache)))


async def srv_lookup_with_twisted_names(name: str) -> list[tuple[int, int, str, int]]:
    """The default SRV look-up, through ``twisted.names`` (the system's resolv.conf)."""
    from twisted.names import client, dns, error

    try:
        answers, _auth, _add = await client.lookupService(name)
    except (error.DNSNameError, error.DNSServerError, error.DNSQueryRefusedError):
        return []
    out = []
    for rr in answers:
        if rr.type == dns.SRV and rr.payload:
            p = rr.payload
            out.append((p.priority, p.weight, p.target.name.decode("ascii"), p.port))
    return out
