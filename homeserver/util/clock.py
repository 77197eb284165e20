"""The clock every piece of logic reads time from.

Logic never calls ``time.time()`` or the reactor directly: it is handed a
:class:`Clock`, which wraps a Twisted reactor. Tests pass a
``twisted.internet.task.Clock`` and advance it by hand.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Hashable

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


class CoarseTimers:
    """Many timers that may fire a little late, sharing one reactor timer per time slot.

    A parked /sync long-poll holds a timeout it seldom reaches: woken by a
    message, it cancels it, and re-parks a moment later. With hundreds of
    members that is hundreds of reactor timers made and cancelled per
    message, each an entry in the reactor's heap. Here a timer is an entry in
    its slot's dict: the slot of ``slot_s`` seconds its deadline falls in,
    fired at that slot's end, so never early and at most ``slot_s`` late.
    """

    def __init__(self, clock: Clock, slot_s: float = 0.1) -> None:
        self._clock = clock
        self._slot_s = slot_s
        self._slots: dict[int, dict[Hashable, Callable[[Any], Any]]] = {}

    def add(self, delay_s: float, key: Hashable, fn: Callable[[Any], Any]) -> int:
        """Call ``fn(key)`` once ``delay_s`` seconds have passed; returns the slot, for :meth:`cancel`.

        (``fn(key)``, not a bound method: a waiter's timer then costs no object of its own.)
        """
        now = self._clock.time()
        n = math.ceil((now + delay_s) / self._slot_s)
        timers = self._slots.get(n)
        if timers is None:
            timers = self._slots[n] = {}
            self._clock.call_later(max(0.0, n * self._slot_s - now), self._fire, n)
        timers[key] = fn
        return n

    def cancel(self, slot: int, key: Hashable) -> None:
        timers = self._slots.get(slot)
        if timers is not None:
            timers.pop(key, None)

    def _fire(self, slot: int) -> None:
        for key, fn in self._slots.pop(slot, {}).items():
            fn(key)

    def pending(self) -> int:
        return sum(len(timers) for timers in self._slots.values())
