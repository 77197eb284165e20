"""Access-token authentication: who is making a request.

Tokens resolve through a small in-memory cache in front of the database, so
an authenticated request costs a dict lookup. Anything that deletes tokens
(logout, device deletion, password change, deactivation) calls
:meth:`Authenticator.invalidate` with the deleted token hashes.

Other components (application services) plug in a *token resolver* that is
asked first: it can answer for tokens that are not user access tokens.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable

from homeserver.api.errors import MatrixError
from homeserver.api.http import ApiRequest
from homeserver.storage.users import TokenInfo, UserStore, hash_token
from homeserver.util.clock import Clock


@dataclass(frozen=True)
class Requester:
    """The authenticated caller of a request."""

    user_id: str
    device_id: str | None
    access_token: str
    is_guest: bool = False
    #: The application service acting, if any (see ``appservice/``).
    appservice: Any = None


TokenResolver = Callable[[str, ApiRequest], Awaitable["Requester | None"]]

_CACHE_SIZE = 50_000


class Authenticator:
    def __init__(self, users: UserStore, clock: Clock) -> None:
        self._users = users
        self._clock = clock
        self._cache: OrderedDict[str, TokenInfo] = OrderedDict()
        #: :meth:`cached`'s answers by token, with the token's expiry; emptied by :meth:`invalidate`.
        self._requesters: dict[str, tuple[Requester, int | None]] = {}
        self.resolvers: list[TokenResolver] = []
        #: Whether a resolver answers for a token (no I/O): :meth:`cached` leaves those to :meth:`authenticate`.
        self.claimed: list[Callable[[str], bool]] = []
        #: Called with the hashes of deleted tokens (the WebSocket channel closes their sockets).
        self.on_invalidate: list[Callable[[list[str]], None]] = []

    async def authenticate(self, request: ApiRequest, allow_guest: bool = False) -> Requester:
        token = request.access_token()
        if token is None:
            raise MatrixError(401, "M_MISSING_TOKEN", "Missing access token")
        for resolver in self.resolvers:
            requester = await resolver(token, request)
            if requester is not None:
                return requester
        info = await self.lookup(token)
        if info is None:
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Unknown access token", soft_logout=False)
        if info.valid_until_ms is not None and info.valid_until_ms < self._clock.time_msec():
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Access token has expired", soft_logout=True)
        return Requester(info.user_id, info.device_id, token)

    def cached(self, token: str) -> Requester | None:
        """The requester for a user access token already in the cache, without I/O.

        None when :meth:`authenticate` must decide: a token not cached, expired,
        or one a resolver claims. The lean /sync path (api/client/sync.py) asks
        this for every long-poll, so the answer is kept by token (until the next
        :meth:`invalidate`) rather than hashing the token each time.
        """
        known = self._requesters.get(token)
        if known is None:
            info = self._cache.get(hash_token(token))
            if info is None or any(claims(token) for claims in self.claimed):
                return None
            if len(self._requesters) >= _CACHE_SIZE:
                self._requesters.clear()
            known = self._requesters[token] = (Requester(info.user_id, info.device_id, token), info.valid_until_ms)
        requester, valid_until_ms = known
        if valid_until_ms is not None and valid_until_ms < self._clock.time_msec():
            return None
        return requester

    async def lookup(self, token: str) -> TokenInfo | None:
        key = hash_token(token)
        info = self._cache.get(key)
        if info is not None:
            self._cache.move_to_end(key)
            return info
        info = await self._users.get_token(token)
        if info is not None:
            self._cache[key] = info
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return info

    def invalidate(self, token_hashes: Iterable[str]) -> None:
        hashes = list(token_hashes)
        self._requesters.clear()
        for h in hashes:
            self._cache.pop(h, None)
        for observer in self.on_invalidate:
            observer(hashes)
