"""Token-bucket rate limiting per action and key (user ID or IP address).

The server builds one limiter per action (``hs.login_limiter``,
``hs.register_limiter``, ``hs.message_limiter``) from ``rate_limiting`` in the
config. Sending a message costs one token of the sender's bucket::

    hs.message_limiter.check(requester.user_id)   # raises 429 M_LIMIT_EXCEEDED

Pass the requester (``check(key, requester=request.requester)``) and
application services are exempted as their registration says, in one place:
:func:`is_exempt`.
"""
from __future__ import annotations

from typing import Any

from homeserver.api.errors import limit_exceeded
from homeserver.config import RateLimit
from homeserver.util.clock import Clock

_MAX_KEYS = 100_000


def is_exempt(requester: Any) -> bool:
    """The one place rate-limit exemptions are decided.

    An application service acting as its sender is never limited; acting as
    one of its users it is limited only when its registration says
    ``rate_limited: true`` (spec: registration ``rate_limited``).
    """
    service = getattr(requester, "appservice", None)
    if service is None:
        return False
    return requester.user_id == service.sender or not service.rate_limited


class RateLimiter:
    """One bucket per key: ``burst`` tokens, refilled at ``per_second``."""

    def __init__(self, clock: Clock, limit: RateLimit, enabled: bool = True) -> None:
        self._clock = clock
        self._rate = limit.per_second
        self._burst = float(limit.burst)
        self.enabled = enabled
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last_time)

    def check(self, key: str, update: bool = True, requester: Any = None) -> None:
        """Take one token for ``key`` or raise 429 ``M_LIMIT_EXCEEDED`` with ``retry_after_ms``.

        With ``update=False`` only check that a token is there, without taking
        it (to refuse early a request whose success will be counted later).

        Args:
            requester: The authenticated caller, when there is one; application
                services are exempt as :func:`is_exempt` says.
        """
        if not self.enabled or (requester is not None and is_exempt(requester)):
            return
        now = self._clock.time()
        tokens, last = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens < 1.0:
            wait_s = (1.0 - tokens) / self._rate if self._rate > 0 else 3600.0
            self._buckets[key] = (tokens, now)
            raise limit_exceeded(int(wait_s * 1000) + 1)
        if not update:
            return
        if len(self._buckets) >= _MAX_KEYS and key not in self._buckets:
            self._evict(now)
        self._buckets[key] = (tokens - 1.0, now)

    def record(self, key: str) -> None:
        """Take a token for an action that already happened; never raises."""
        try:
            self.check(key)
        except Exception:  # the bucket was empty: it stays empty
            pass

    def _evict(self, now: float) -> None:
        """Drop buckets that have refilled completely; they carry no information."""
        full_after = self._burst / self._rate if self._rate > 0 else float("inf")
        for key, (_tokens, last) in list(self._buckets.items()):
            if now - last >= full_after:
                del self._buckets[key]
        if len(self._buckets) >= _MAX_KEYS:  # still full: forget the oldest half
            for key in list(self._buckets)[: _MAX_KEYS // 2]:
                del self._buckets[key]
