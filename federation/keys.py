"""Signing keys: what we publish, the keyring that fetches others', and the notary.

* ``GET /_matrix/key/v2/server``: our verify keys, ``old_verify_keys`` and
  ``valid_until_ts``, signed by us.
* :class:`Keyring`: other servers' keys, from memory, then the database,
  then the server itself, then the configured notaries. Every fetched
  response must be self-signed by each key it lists; ``valid_until_ts`` is
  capped at fetch time + 7 days (server-server-api.md "Retrieving server
  keys"). A key is good for a request when it is valid until at least the
  ``minimum_valid_until_ts`` asked for; keys retired into
  ``old_verify_keys`` stay good for events sent before their ``expired_ts``.
* ``GET``/``POST /_matrix/key/v2/query``: the notary, serving cached
  responses of other servers (fetching them when missing or too old), each
  countersigned by us.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol

from signedjson.key import SigningKey, VerifyKey, decode_verify_key_bytes
from unpaddedbase64 import decode_base64

from federation.config import OldKey
from federation.storage import KeyStore, StoredKey
from homeserver.api.errors import MatrixError, bad_json
from homeserver.api.http import ApiRequest, Router
from homeserver.core.ids import server_name_is_valid
from homeserver.core.signing import SignatureError, encode_verify_key_base64, key_id, sign_json, verify_json
from homeserver.util.clock import Clock

logger = logging.getLogger(__name__)

SEVEN_DAYS_MS = 7 * 24 * 3600 * 1000
#: After a failed fetch, don't ask the same server again for this long.
FETCH_FAILURE_COOLDOWN_MS = 30_000
MAX_NOTARY_SERVERS = 100
MAX_NOTARY_KEYS_PER_SERVER = 20


class KeyFetchClient(Protocol):
    async def get_json(self, destination: str, path: str, args: Any = None, **kw: Any) -> Any: ...
    async def post_json(self, destination: str, path: str, body: Any, **kw: Any) -> Any: ...


@dataclass(frozen=True)
class _Key:
    verify_key: VerifyKey
    valid_until_ts: int
    expired_ts: int | None

    def good_for(self, minimum_valid_until_ts: int) -> bool:
        until = self.expired_ts if self.expired_ts is not None else self.valid_until_ts
        return until >= minimum_valid_until_ts


def decode_key(key_id_: str, b64: str) -> VerifyKey:
    """A verify key from its ID and unpadded base64; ValueError when malformed."""
    alg, _, version = key_id_.partition(":")
    if alg != "ed25519" or not version:
        raise ValueError(f"unsupported key {key_id_!r}")
    try:
        raw = decode_base64(b64)
    except Exception:
        raise ValueError(f"key {key_id_} is not base64") from None
    if len(raw) != 32:
        raise ValueError(f"key {key_id_} is not 32 bytes")
    return decode_verify_key_bytes(key_id_, raw)


def parse_key_response(response: Any, server_name: str, now_ms: int) -> tuple[list[StoredKey], int]:
    """Check a server's key response is well formed and self-signed.

    Returns:
        The keys to store and the response's effective ``valid_until_ts``.

    Raises:
        ValueError: naming what is wrong.
    """
    if not isinstance(response, dict) or response.get("server_name") != server_name:
        raise ValueError(f"key response is not for {server_name}")
    valid_until = response.get("valid_until_ts")
    if isinstance(valid_until, bool) or not isinstance(valid_until, int):
        raise ValueError("key response has no valid_until_ts")
    valid_until = min(valid_until, now_ms + SEVEN_DAYS_MS)
    verify_keys = response.get("verify_keys")
    if not isinstance(verify_keys, dict) or not verify_keys or len(verify_keys) > MAX_NOTARY_KEYS_PER_SERVER:
        raise ValueError("key response has no verify_keys")
    keys: list[StoredKey] = []
    for kid, entry in verify_keys.items():
        if not kid.startswith("ed25519:"):
            continue
        b64 = entry.get("key") if isinstance(entry, dict) else None
        if not isinstance(b64, str):
            raise ValueError(f"verify key {kid} has no key")
        vk = decode_key(kid, b64)
        try:
            verify_json(response, server_name, vk, kid)
        except SignatureError as e:
            raise ValueError(f"key response: {e.reason}") from None
        keys.append(StoredKey(server_name, kid, b64, valid_until, None))
    if not keys:
        raise ValueError("key response has no ed25519 key")
    old = response.get("old_verify_keys") or {}
    if isinstance(old, dict):
        for kid, entry in list(old.items())[:MAX_NOTARY_KEYS_PER_SERVER]:
            if not isinstance(entry, dict) or kid in verify_keys:
                continue
            b64, expired = entry.get("key"), entry.get("expired_ts")
            if not isinstance(b64, str) or isinstance(expired, bool) or not isinstance(expired, int):
                continue
            try:
                decode_key(kid, b64)
            except ValueError:
                continue
            keys.append(StoredKey(server_name, kid, b64, expired, expired))
    return keys, valid_until


class OwnKeys:
    """The key response we publish, re-signed when half its validity has passed."""

    def __init__(self, server_name: str, signing_key: SigningKey, old_keys: tuple[OldKey, ...],
                 clock: Clock, validity_ms: int) -> None:
        self.server_name = server_name
        self.signing_key = signing_key
        self.key_id = key_id(signing_key)
        self.verify_key = signing_key.verify_key
        self._old = old_keys
        self._clock = clock
        self._validity_ms = validity_ms
        self._cached: dict[str, Any] | None = None

    def response(self) -> dict[str, Any]:
        now = self._clock.time_msec()
        if self._cached is None or self._cached["valid_until_ts"] - now < self._validity_ms // 2:
            body = {
                "server_name": self.server_name,
                "valid_until_ts": now + self._validity_ms,
                "verify_keys": {self.key_id: {"key": encode_verify_key_base64(self.verify_key)}},
                "old_verify_keys": {k.key_id: {"key": k.key, "expired_ts": k.expired_ts} for k in self._old},
            }
            self._cached = sign_json(body, self.server_name, self.signing_key)
        return self._cached

    def lookup(self, kid: str) -> _Key | None:
        if kid == self.key_id:
            return _Key(self.verify_key, 2**62, None)
        for k in self._old:
            if k.key_id == kid:
                try:
                    return _Key(decode_key(kid, k.key), k.expired_ts, k.expired_ts)
                except ValueError:
                    return None
        return None


class Keyring:
    """Verify keys of other servers, cached in memory and in the database."""

    def __init__(self, own: OwnKeys, store: KeyStore, client: KeyFetchClient, clock: Clock,
                 notaries: tuple[str, ...] = ()) -> None:
        self._own = own
        self._store = store
        self._client = client
        self._clock = clock
        self._notaries = notaries
        self._memory: dict[tuple[str, str], _Key] = {}
        self._loaded: set[str] = set()
        self._in_flight: dict[str, Any] = {}
        self._failed_at: dict[str, int] = {}

    async def get_verify_key(self, server_name: str, kid: str, minimum_valid_until_ts: int = 0) -> VerifyKey | None:
        """The key, if it is known (or can be fetched) and valid until ``minimum_valid_until_ts``."""
        if server_name == self._own.server_name:
            own = self._own.lookup(kid)
            return own.verify_key if own and own.good_for(minimum_valid_until_ts) else None
        key = await self._cached(server_name, kid)
        if key is not None and key.good_for(minimum_valid_until_ts):
            return key.verify_key
        await self._fetch(server_name)
        key = self._memory.get((server_name, kid))
        return key.verify_key if key is not None and key.good_for(minimum_valid_until_ts) else None

    async def _cached(self, server_name: str, kid: str) -> _Key | None:
        if server_name not in self._loaded:
            for k in await self._store.get_keys(server_name):
                self._remember(k)
            self._loaded.add(server_name)
            if len(self._loaded) > 100_000:  # bounded: forget everything and reload on demand
                self._loaded.clear()
                self._memory.clear()
        return self._memory.get((server_name, kid))

    def _remember(self, k: StoredKey) -> None:
        try:
            vk = decode_key(k.key_id, k.verify_key)
        except ValueError:
            return
        self._memory[(k.server_name, k.key_id)] = _Key(vk, k.valid_until_ts, k.expired_ts)

    async def _fetch(self, server_name: str) -> None:
        """Fetch a server's keys (one fetch at a time per server; failures cool down)."""
        now = self._clock.time_msec()
        if now - self._failed_at.get(server_name, -FETCH_FAILURE_COOLDOWN_MS) < FETCH_FAILURE_COOLDOWN_MS:
            return
        pending = self._in_flight.get(server_name)
        if pending is not None:
            await pending
            return
        from twisted.internet import defer

        d: defer.Deferred[None] = defer.Deferred()
        self._in_flight[server_name] = d
        try:
            ok = await self._fetch_direct(server_name) or await self._fetch_from_notaries(server_name)
            if not ok:
                self._failed_at[server_name] = self._clock.time_msec()
                if len(self._failed_at) > 10_000:
                    self._failed_at.clear()
        finally:
            del self._in_flight[server_name]
            d.callback(None)

    async def _fetch_direct(self, server_name: str) -> bool:
        try:
            response = await self._client.get_json(server_name, "/_matrix/key/v2/server", timeout_s=20,
                                                   max_bytes=64 * 1024)
        except Exception as e:
            logger.info("fetching keys of %s failed: %s", server_name, e)
            return False
        return await self.process_response(server_name, response)

    async def _fetch_from_notaries(self, server_name: str) -> bool:
        for notary in self._notaries:
            if notary == server_name:
                continue
            try:
                result = await self._client.post_json(
                    notary, "/_matrix/key/v2/query", {"server_keys": {server_name: {}}}, timeout_s=20,
                    max_bytes=1 << 20)
            except Exception as e:
                logger.info("notary %s could not give keys of %s: %s", notary, server_name, e)
                continue
            responses = result.get("server_keys") if isinstance(result, dict) else None
            for response in responses if isinstance(responses, list) else []:
                if not isinstance(response, dict) or response.get("server_name") != server_name:
                    continue
                if not await self._signed_by_notary(response, notary):
                    continue
                if await self.process_response(server_name, response):
                    return True
        return False

    async def _signed_by_notary(self, response: dict[str, Any], notary: str) -> bool:
        sigs = (response.get("signatures") or {}).get(notary)
        if not isinstance(sigs, dict):
            return False
        for kid in sigs:
            vk = await self.get_verify_key(notary, kid)
            if vk is not None:
                try:
                    verify_json(response, notary, vk, kid)
                    return True
                except SignatureError:
                    return False
        return False

    async def process_response(self, server_name: str, response: Any) -> bool:
        """Verify and store a key response; False (logged) when it does not check out."""
        now = self._clock.time_msec()
        try:
            keys, valid_until = parse_key_response(response, server_name, now)
        except ValueError as e:
            logger.warning("bad key response for %s: %s", server_name, e)
            return False
        # Keep only the server's own signatures in what we store and serve on.
        clean = dict(response)
        clean["signatures"] = {server_name: response["signatures"][server_name]}
        await self._store.store_response(server_name, keys, clean, valid_until, now)
        for k in keys:
            self._remember(k)
        return True

    async def notary_response(self, server_name: str, minimum_valid_until_ts: int) -> dict[str, Any] | None:
        """A server's key response for the notary: ours, cached, or freshly fetched."""
        if server_name == self._own.server_name:
            return self._own.response()
        stored = await self._store.get_response(server_name)
        if stored is None or stored[0] < max(minimum_valid_until_ts, self._clock.time_msec()):
            await self._fetch(server_name)
            stored = await self._store.get_response(server_name)
        return None if stored is None else stored[1]


class KeyServlets:
    """The key endpoints (no request signing: anyone may ask)."""

    def __init__(self, own: OwnKeys, keyring: Keyring, clock: Clock) -> None:
        self._own = own
        self._keyring = keyring
        self._clock = clock

    def register(self, router: Router) -> None:
        router.add("GET", "/_matrix/key/v2/server", self.server_keys, auth="none")
        router.add("GET", "/_matrix/key/v2/server/{key_id}", self.server_keys, auth="none")
        router.add("GET", "/_matrix/key/v2/query/{server_name}", self.query_one, auth="none")
        router.add("POST", "/_matrix/key/v2/query", self.query_many, auth="none")

    async def server_keys(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/key/v2/server: this server's signing keys, self-signed ("Publishing Keys")."""
        return self._own.response()

    async def query_one(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/key/v2/query/{serverName}: another server's keys via this notary ("Querying Keys Through Another Server")."""
        server = request.path_params["server_name"]
        minimum = request.query_int("minimum_valid_until_ts", 0, minimum=0)
        return {"server_keys": await self._collect({server: minimum})}

    async def query_many(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/key/v2/query: keys of several servers via this notary ("Querying Keys Through Another Server")."""
        body = request.json()
        wanted = body.get("server_keys")
        if not isinstance(wanted, dict):
            raise bad_json("server_keys must be an object")
        if len(wanted) > MAX_NOTARY_SERVERS:
            raise MatrixError(400, "M_LIMIT_EXCEEDED", f"At most {MAX_NOTARY_SERVERS} servers per query")
        asks: dict[str, int] = {}
        for server, keys in wanted.items():
            if not isinstance(keys, dict):
                raise bad_json("server_keys values must be objects")
            minimum = 0
            for criteria in list(keys.values())[:MAX_NOTARY_KEYS_PER_SERVER]:
                m = criteria.get("minimum_valid_until_ts") if isinstance(criteria, dict) else None
                if isinstance(m, int) and not isinstance(m, bool):
                    minimum = max(minimum, m)
            asks[server] = minimum
        return {"server_keys": await self._collect(asks)}

    async def _collect(self, asks: dict[str, int]) -> list[dict[str, Any]]:
        out = []
        for server, minimum in asks.items():
            if not server_name_is_valid(server):
                continue
            response = await self._keyring.notary_response(server, minimum)
            if response is not None:
                out.append(sign_json(response, self._own.server_name, self._own.signing_key))
        return out


GetVerifyKey = Callable[[str, str, int], Awaitable["VerifyKey | None"]]
