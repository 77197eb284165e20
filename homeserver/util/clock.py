"""The clock every piece of logic reads time from.

Logic never calls ``time.time()`` or the reactor directly: it is handed a
:class:`Clock`, which wraps a Twisted reactor. Tests pass a
``twisted.internet.task.Clock`` and advance it by hand.
"""
from __future__ import annotations

from typing import Any, Callable

from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall


class Clock:
    """Time and timers, backed by a reactor (real or ``task.Clock``)."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    @property
    def reactor(self) -> Any:
        return self._reactor

    def time(self) -> float:
        """Seconds since the epoch."""
        return float(self._reactor.seconds())

    def time_msec(self) -> int:
        """Milliseconds since the epoch, as Matrix timestamps are."""
        return int(self._reactor.seconds() * 1000)

    def call_later(self, delay_s: float, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> IDelayedCall:
        return self._reactor.callLater(delay_s, fn, *args, **kwargs)

    def looping_call(self, fn: Callable[[], Any], interval_s: float, now: bool = False) -> task.LoopingCall:
        call = task.LoopingCall(fn)
        call.clock = self._reactor
        call.start(interval_s, now=now).addErrback(lambda f: None)
        return call

    def sleep(self, seconds: float) -> "defer.Deferred[None]":
        d: defer.Deferred[None] = defer.Deferred()
        self._reactor.callLater(seconds, d.callback, None)
        return d
