"""Unit tests: X-Matrix headers, discovery order and caching, the keyring, key responses."""
from __future__ import annotations

import pytest
import pytest_twisted
from signedjson.key import generate_signing_key
from twisted.internet.task import Clock as TaskClock

from federation.config import OldKey
from federation.discovery import DiscoveryError, ServerResolver, parse_server_name
from federation.keys import Keyring, OwnKeys, parse_key_response
from federation.transport.auth import RequestVerifier, parse_x_matrix, sign_request
from federation.transport.client import ip_is_blocked
from homeserver.api.errors import MatrixError
from homeserver.core.signing import encode_verify_key_base64, sign_json
from homeserver.util.clock import Clock

# --- X-Matrix -----------------------------------------------------------------


def test_parse_x_matrix_forms():
    assert parse_x_matrix('X-Matrix origin="a.org",destination="b.org",key="ed25519:1",sig="AbC"') == {
        "origin": "a.org", "destination": "b.org", "key": "ed25519:1", "sig": "AbC"}
    # tokens unquoted, spaces around commas, names case-insensitive, escapes, colons unquoted
    assert parse_x_matrix('x-matrix  Origin=a.org:8448 , key="ed25519:1",sig="a\\"b"') == {
        "origin": "a.org:8448", "key": "ed25519:1", "sig": 'a"b'}
    for bad in ("Bearer x", "X-Matrix", 'X-Matrix origin="unterminated', "X-Matrix " + "a=b," * 2000):
        with pytest.raises(ValueError):
            parse_x_matrix(bad)


@pytest_twisted.ensureDeferred
async def test_request_verifier():
    key = generate_signing_key("k1")
    other = generate_signing_key("k1")

    async def get_key(server, kid):
        return key.verify_key if (server, kid) == ("a.org", "ed25519:k1") else None

    verifier = RequestVerifier("b.org", get_key)
    body = {"x": 1}
    header = sign_request("a.org", key, "b.org", "PUT", "/_matrix/federation/v1/send/1?a=b", body)
    assert await verifier.verify("PUT", "/_matrix/federation/v1/send/1?a=b", {"authorization": header}, body) == "a.org"
    cases = [
        ("PUT", "/_matrix/federation/v1/send/1?a=c", header, body),  # other URI
        ("POST", "/_matrix/federation/v1/send/1?a=b", header, body),  # other method
        ("PUT", "/_matrix/federation/v1/send/1?a=b", header, {"x": 2}),  # other body
        ("PUT", "/p", sign_request("a.org", key, "c.org", "PUT", "/p"), None),  # other destination
        ("PUT", "/p", sign_request("a.org", other, "b.org", "PUT", "/p"), None),  # forged key
        ("PUT", "/p", sign_request("z.org", key, "b.org", "PUT", "/p"), None),  # unknown server
        ("PUT", "/p", None, None),
    ]
    for method, uri, hdr, content in cases:
        with pytest.raises(MatrixError) as e:
            await verifier.verify(method, uri, {"authorization": hdr} if hdr else {}, content)
        assert (e.value.status, e.value.errcode) == (401, "M_UNAUTHORIZED")


# --- discovery ----------------------------------------------------------------


class FakeNet:
    def __init__(self, well_known=None, srv=None):
        self.well_known = well_known or {}
        self.srv = srv or {}
        self.calls: list[str] = []

    async def fetch(self, host):
        self.calls.append("wk:" + host)
        return self.well_known.get(host)

    async def lookup(self, name):
        self.calls.append("srv:" + name)
        return self.srv.get(name, [])


def _resolver(net, clock=None):
    return ServerResolver(Clock(clock or TaskClock()), net.fetch, net.lookup)


@pytest_twisted.ensureDeferred
async def test_discovery_order():
    net = FakeNet(
        well_known={"deleg.org": (200, {}, b'{"m.server": "matrix.deleg.org"}'),
                    "port.org": (200, {}, b'{"m.server": "m.port.org:1234"}'),
                    "ip.org": (200, {}, b'{"m.server": "10.0.0.1"}'),
                    "bad.org": (200, {}, b'{"m.server": 5}')},
        srv={"_matrix-fed._tcp.matrix.deleg.org": [(10, 5, "srv.deleg.org.", 8000)],
             "_matrix._tcp.legacy.org": [(10, 0, "old.legacy.org.", 9000)],
             "_matrix-fed._tcp.srv.org": [(20, 0, "b.srv.org", 2), (10, 0, "a.srv.org", 1)]})
    r = _resolver(net)
    got = await r.resolve("1.2.3.4")
    assert (got.targets, got.host_header) == ((("1.2.3.4", 8448),), "1.2.3.4")
    got = await r.resolve("[::1]:99")
    assert (got.targets, got.host_header) == ((("::1", 99),), "[::1]:99")
    got = await r.resolve("explicit.org:8443")
    assert (got.targets, got.tls_name, got.host_header) == ((("explicit.org", 8443),), "explicit.org", "explicit.org:8443")
    assert net.calls == []  # neither well-known nor SRV for IPs and explicit ports
    got = await r.resolve("deleg.org")
    assert (got.targets, got.tls_name, got.host_header) == ((("srv.deleg.org", 8000),), "matrix.deleg.org", "matrix.deleg.org")
    got = await r.resolve("port.org")
    assert (got.targets, got.tls_name, got.host_header) == ((("m.port.org", 1234),), "m.port.org", "m.port.org:1234")
    got = await r.resolve("ip.org")
    assert got.targets == (("10.0.0.1", 8448),)
    got = await r.resolve("legacy.org")
    assert (got.targets, got.tls_name) == ((("old.legacy.org", 9000),), "legacy.org")
    got = await r.resolve("srv.org")
    assert got.targets == (("a.srv.org", 1), ("b.srv.org", 2))
    got = await r.resolve("bad.org")
    assert got.targets == (("bad.org", 8448),)
    with pytest.raises(DiscoveryError):
        parse_server_name("bad name")


@pytest_twisted.ensureDeferred
async def test_well_known_cache_follows_headers():
    task_clock = TaskClock()
    net = FakeNet(well_known={"a.org": (200, {"cache-control": "max-age=60"}, b'{"m.server": "b.org:1"}')})
    r = _resolver(net, task_clock)
    await r.resolve("a.org")
    await r.resolve("a.org")
    assert net.calls.count("wk:a.org") == 1
    task_clock.advance(61)
    await r.resolve("a.org")
    assert net.calls.count("wk:a.org") == 2
    # failures are cached for an hour
    await r.resolve("down.org")
    await r.resolve("down.org")
    assert net.calls.count("wk:down.org") == 1


def test_ip_block_list():
    for ip in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.1.1", "::1", "fe80::1", "::ffff:127.0.0.1", "0.0.0.0"):
        assert ip_is_blocked(ip), ip
    assert not ip_is_blocked("8.8.8.8")


# --- keys -----------------------------------------------------------------------


class MemoryKeyStore:
    def __init__(self):
        self.keys = {}
        self.responses = {}

    async def get_keys(self, server):
        return [k for (s, _), k in self.keys.items() if s == server]

    async def store_response(self, server, keys, response, valid_until, now):
        for k in keys:
            self.keys[(server, k.key_id)] = k
        self.responses[server] = (valid_until, response)

    async def get_response(self, server):
        return self.responses.get(server)


class FakeKeyClient:
    def __init__(self, responses):
        self.responses = responses
        self.fetches = 0

    async def get_json(self, destination, path, args=None, **kw):
        self.fetches += 1
        if destination not in self.responses:
            raise ConnectionError("down")
        return self.responses[destination]()

    async def post_json(self, destination, path, body, **kw):
        raise ConnectionError("no notary")


def _own(name, key, clock, old=()):
    return OwnKeys(name, key, tuple(old), clock, 3600_000)


@pytest_twisted.ensureDeferred
async def test_keyring_caches_and_survives_rotation():
    task_clock = TaskClock()
    task_clock.advance(1_000_000)
    clock = Clock(task_clock)
    k1 = generate_signing_key("one")
    remote = {"own": _own("remote.org", k1, clock)}
    client = FakeKeyClient({"remote.org": lambda: remote["own"].response()})
    store = MemoryKeyStore()
    ring = Keyring(_own("me.org", generate_signing_key("me"), clock), store, client, clock)
    assert (await ring.get_verify_key("remote.org", "ed25519:one")).encode() == k1.verify_key.encode()
    await ring.get_verify_key("remote.org", "ed25519:one")
    assert client.fetches == 1  # cached in memory
    ring2 = Keyring(_own("me.org", generate_signing_key("me"), clock), store, client, clock)
    assert await ring2.get_verify_key("remote.org", "ed25519:one") is not None
    assert client.fetches == 1  # cached in the database
    # Asking for validity beyond valid_until_ts refetches.
    far = clock.time_msec() + 10 * 3600_000
    assert await ring2.get_verify_key("remote.org", "ed25519:one", far) is None
    assert client.fetches == 2
    # Rotation: k1 moves to old_verify_keys and stays good for events before its expiry.
    k2 = generate_signing_key("two")
    expired = clock.time_msec()
    remote["own"] = _own("remote.org", k2, clock, [OldKey("ed25519:one", encode_verify_key_base64(k1.verify_key), expired)])
    task_clock.advance(60)
    assert await ring2.get_verify_key("remote.org", "ed25519:two") is not None
    assert await ring2.get_verify_key("remote.org", "ed25519:one", expired - 1) is not None
    assert await ring2.get_verify_key("remote.org", "ed25519:one", expired + 10**7) is None


def test_key_response_checks():
    key = generate_signing_key("a")
    now = 1000
    body = {"server_name": "a.org", "valid_until_ts": now + 10**12,
            "verify_keys": {"ed25519:a": {"key": encode_verify_key_base64(key.verify_key)}}}
    signed = sign_json(body, "a.org", key)
    keys, until = parse_key_response(signed, "a.org", now)
    assert until == now + 7 * 24 * 3600 * 1000  # capped at 7 days
    assert [k.key_id for k in keys] == ["ed25519:a"]
    with pytest.raises(ValueError):
        parse_key_response(signed, "b.org", now)
    with pytest.raises(ValueError):
        parse_key_response(sign_json(body, "a.org", generate_signing_key("a")), "a.org", now)
    with pytest.raises(ValueError):
        parse_key_response({**signed, "valid_until_ts": "soon"}, "a.org", now)
