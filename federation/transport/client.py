"""The outbound federation HTTP client: discovery, TLS, X-Matrix signing, bounds.

Requests go to ``matrix-federation://<server name>/<path>`` through a Twisted
``Agent`` whose endpoint factory resolves the server name
(:mod:`federation.discovery`) when a connection is needed, checks every IP
address against the block list (loopback, private, link-local, ... unless
insecure mode is on), and wraps the TCP connection in TLS verified against
the discovered name. treq is the HTTP layer on top.

treq, Twisted's HTTP client and the TLS stack (pyOpenSSL, cryptography: about
14 MB resident together) are imported by the first outbound request, not with
this module: a server with federation off never makes one (docs/performance.md,
"On memory").
"""
from __future__ import annotations

import ipaddress
import json
import logging
from typing import Any, Mapping
from urllib.parse import quote, urlencode

from signedjson.key import SigningKey
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IResolutionReceiver, IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from federation.discovery import DiscoveryError, ServerResolver, is_ip_literal
from federation.transport.auth import sign_request
from homeserver.util import json as jsonutil

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10.0
#: Largest response body read from another server (state of big rooms can be large).
MAX_RESPONSE_BYTES = 64 << 20


class FederationRequestError(Exception):
    """The request could not be made or answered (network, TLS, discovery, timeout, size)."""


class HttpResponseError(FederationRequestError):
    """The remote server answered with a non-2xx status."""

    def __init__(self, code: int, body: Any) -> None:
        errcode = body.get("errcode") if isinstance(body, dict) else None
        super().__init__(f"HTTP {code} {errcode or ''}".strip())
        self.code = code
        self.body = body
        self.errcode = errcode


def encode_path(template: str, *params: str) -> str:
    """Fill ``%s`` placeholders with percent-encoded path parameters."""
    return template % tuple(quote(p, safe="") for p in params)


def ip_is_blocked(ip: str) -> bool:
    """Addresses outbound federation never connects to outside insecure mode."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return (addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_multicast
            or addr.is_reserved or addr.is_unspecified or not addr.is_global)


@implementer(IResolutionReceiver)
class _Collect:
    def __init__(self) -> None:
        self.addresses: list[str] = []
        self.done: defer.Deferred[list[str]] = defer.Deferred()

    def resolutionBegan(self, resolution: Any) -> None:  # noqa: N802 - Twisted's names
        pass

    def addressResolved(self, address: Any) -> None:  # noqa: N802
        if isinstance(address, (IPv4Address, IPv6Address)):
            self.addresses.append(address.host)

    def resolutionComplete(self) -> None:  # noqa: N802
        self.done.callback(self.addresses)


class Connector:
    """Opens TLS connections to (host, port) targets, honouring the IP block list."""

    def __init__(self, reactor: Any, insecure: bool) -> None:
        self._reactor = reactor
        self.insecure = insecure

    async def _addresses(self, host: str, port: int) -> list[str]:
        if is_ip_literal(host):
            ips = [host]
        else:
            collect = _Collect()
            self._reactor.nameResolver.resolveHostName(collect, host, port)
            ips = await collect.done
        allowed = [ip for ip in ips if self.insecure or not ip_is_blocked(ip)]
        if ips and not allowed:
            logger.warning("refusing to connect to %s: it resolves only to blocked addresses %s", host, ips)
        return allowed

    async def connect(self, factory: Any, targets: tuple[tuple[str, int], ...], tls_name: str) -> Any:
        from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS

        from federation.tls import client_tls_creator

        errors: list[str] = []
        for host, port in targets:
            for ip in await self._addresses(host, port):
                cls = TCP6ClientEndpoint if ":" in ip else TCP4ClientEndpoint
                tcp = cls(self._reactor, ip, port, timeout=CONNECT_TIMEOUT_S)
                endpoint = wrapClientTLS(client_tls_creator(tls_name, self.insecure), tcp)
                try:
                    return await endpoint.connect(factory)
                except Exception as e:
                    errors.append(f"{ip}:{port}: {e}")
        raise FederationRequestError(f"cannot connect to {tls_name}: {'; '.join(errors) or 'no usable address'}")


@implementer(IStreamClientEndpoint)
class _LazyEndpoint:
    def __init__(self, connector: Connector, resolver: ServerResolver | None, netloc: str,
                 direct: tuple[str, int] | None = None) -> None:
        self._connector = connector
        self._resolver = resolver
        self._netloc = netloc
        self._direct = direct

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        return defer.ensureDeferred(self._connect(factory))

    async def _connect(self, factory: Any) -> Any:
        if self._direct is not None:
            return await self._connector.connect(factory, (self._direct,), self._direct[0])
        assert self._resolver is not None
        resolved = await self._resolver.resolve(self._netloc)
        return await self._connector.connect(factory, resolved.targets, resolved.tls_name)


@implementer(IAgentEndpointFactory)
class _FederationEndpointFactory:
    def __init__(self, connector: Connector, resolver: ServerResolver) -> None:
        self._connector = connector
        self._resolver = resolver

    def endpointForURI(self, uri: Any) -> _LazyEndpoint:  # noqa: N802 - Twisted's name
        return _LazyEndpoint(self._connector, self._resolver, uri.netloc.decode("ascii"))


@implementer(IAgentEndpointFactory)
class _HttpsEndpointFactory:
    """Plain https:// URLs (well-known look-ups), through the same block list and TLS policy."""

    def __init__(self, connector: Connector) -> None:
        self._connector = connector

    def endpointForURI(self, uri: Any) -> _LazyEndpoint:  # noqa: N802
        if uri.scheme != b"https":
            raise FederationRequestError("only https is used for well-known look-ups")
        host = uri.host.decode("ascii").strip("[]")
        return _LazyEndpoint(self._connector, None, "", direct=(host, uri.port))


async def _read_bounded(response: Any, limit: int) -> bytes:
    length = response.length
    if isinstance(length, int) and length > limit:
        response.deliverBody(Protocol())  # read and drop; the timeout bounds it
        raise FederationRequestError(f"response of {length} bytes is over the {limit} byte limit")
    chunks: list[bytes] = []
    size = [0]

    def collect(data: bytes) -> None:
        size[0] += len(data)
        if size[0] > limit:
            raise FederationRequestError(f"response is over the {limit} byte limit")
        chunks.append(data)

    import treq

    await treq.collect(response, collect)
    return b"".join(chunks)


class FederationClient:
    """Signed JSON requests to other homeservers."""

    def __init__(self, reactor: Any, server_name: str, signing_key: SigningKey, resolver: ServerResolver,
                 connector: Connector) -> None:
        self._reactor = reactor
        self.server_name = server_name
        self._signing_key = signing_key
        self._resolver = resolver
        self._connector = connector
        self._pool: Any = None
        self._http: Any = None

    def _client(self) -> Any:
        """The treq client over our endpoint factory, made by the first request."""
        if self._http is None:
            from treq.client import HTTPClient
            from twisted.web.client import Agent, HTTPConnectionPool

            pool = HTTPConnectionPool(self._reactor)
            pool.maxPersistentPerHost = 5
            pool.cachedConnectionTimeout = 120
            self._pool = pool
            self._http = HTTPClient(Agent.usingEndpointFactory(
                self._reactor, _FederationEndpointFactory(self._connector, self._resolver), pool=pool))
        return self._http

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.closeCachedConnections()

    async def request(self, method: str, destination: str, path: str, args: Mapping[str, Any] | None = None,
                      body: Any = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                      max_bytes: int = MAX_RESPONSE_BYTES) -> Any:
        """Send a signed request and return the parsed JSON response.

        Args:
            path: Already percent-encoded (see :func:`encode_path`).
            args: Query parameters; list values repeat the parameter.

        Raises:
            HttpResponseError: for a non-2xx answer.
            FederationRequestError: for anything else that went wrong.
        """
        target = path + ("?" + urlencode(args, doseq=True) if args else "")
        try:
            resolved = await self._resolver.resolve(destination)
        except DiscoveryError as e:
            raise FederationRequestError(str(e)) from None
        headers = Headers({
            b"Host": [resolved.host_header.encode("ascii")],
            b"Authorization": [sign_request(self.server_name, self._signing_key, destination, method,
                                            target, body).encode("ascii")],
            b"User-Agent": [b"qun-homeserver"],
        })
        data = None
        if body is not None:
            data = jsonutil.dumps_bytes(body)
            headers.addRawHeader(b"Content-Type", b"application/json")
        url = f"matrix-federation://{destination}{target}".encode("ascii")
        d = defer.ensureDeferred(self._send(method, url, headers, data, max_bytes))
        d.addTimeout(timeout_s, self._reactor)
        try:
            code, raw = await d
        except (FederationRequestError, defer.CancelledError):
            raise
        except defer.TimeoutError:
            raise FederationRequestError(f"{method} {destination}{path} timed out") from None
        except Exception as e:
            raise FederationRequestError(f"{method} {destination}{path} failed: {e!r}") from None
        try:
            parsed = json.loads(raw) if raw else {}
        except (ValueError, UnicodeDecodeError):
            parsed = None
        if not 200 <= code < 300:
            raise HttpResponseError(code, parsed)
        if parsed is None:
            raise FederationRequestError(f"{method} {destination}{path}: response is not JSON")
        return parsed

    async def _send(self, method: str, url: bytes, headers: Headers, data: bytes | None,
                    max_bytes: int) -> tuple[int, bytes]:
        response = await self._client().request(method, url, headers=headers, data=data)
        return response.code, await _read_bounded(response, max_bytes)

    async def get_json(self, destination: str, path: str, args: Mapping[str, Any] | None = None,
                       **kw: Any) -> Any:
        return await self.request("GET", destination, path, args=args, **kw)

    async def put_json(self, destination: str, path: str, body: Any, **kw: Any) -> Any:
        return await self.request("PUT", destination, path, body=body, **kw)

    async def post_json(self, destination: str, path: str, body: Any, **kw: Any) -> Any:
        return await self.request("POST", destination, path, body=body, **kw)


class WellKnownFetcher:
    """GET https://<host>/.well-known/matrix/server, following up to 5 redirects."""

    def __init__(self, reactor: Any, connector: Connector) -> None:
        self._reactor = reactor
        self._connector = connector
        self._http: Any = None

    def _client(self) -> Any:
        if self._http is None:
            from treq.client import HTTPClient
            from twisted.web.client import Agent, HTTPConnectionPool, RedirectAgent

            agent = Agent.usingEndpointFactory(self._reactor, _HttpsEndpointFactory(self._connector),
                                               pool=HTTPConnectionPool(self._reactor, persistent=False))
            self._http = HTTPClient(RedirectAgent(agent, redirectLimit=5))
        return self._http

    async def __call__(self, host: str) -> tuple[int, dict[str, str], bytes] | None:
        from federation.discovery import WELL_KNOWN_MAX_BYTES

        async def fetch() -> tuple[int, dict[str, str], bytes]:
            url = f"https://{host}/.well-known/matrix/server".encode("idna")
            response = await self._client().get(url)
            headers = {k.decode("latin-1").lower(): v[-1].decode("latin-1")
                       for k, v in response.headers.getAllRawHeaders()}
            return response.code, headers, await _read_bounded(response, WELL_KNOWN_MAX_BYTES)

        d = defer.ensureDeferred(fetch())
        d.addTimeout(30, self._reactor)
        try:
            return await d
        except Exception as e:
            logger.info("well-known for %s: %s", host, e)
            return None
