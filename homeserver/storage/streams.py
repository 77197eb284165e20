"""Stream positions for the per-user streams (receipts, account data, to-device, ...).

:class:`StreamWriter` hands out positions on the reactor thread and reports
as *current* only the highest position below which every write has finished
(committed or failed). With a PostgreSQL pool, transactions can commit out of
order; a reader that saw position 7 before 6 committed would skip 6 forever.

:class:`ChangeCache` remembers, per key (a user, a room, a device), the last
position at which that key changed. It answers "has anything changed for this
key since position P?" from memory, so an incremental sync for a user with
nothing new costs no query.
"""
from __future__ import annotations

import heapq
from typing import Any, Callable, Hashable

from homeserver.storage.database import Database, Txn


class StreamWriter:
    """Positions for one stream, with out-of-order completion handled."""

    def __init__(self, start: int) -> None:
        self._next = start
        self._current = start
        self._pending: list[int] = []
        self._done: dict[int, Callable[[], None] | None] = {}

    def allocate(self) -> int:
        self._next += 1
        heapq.heappush(self._pending, self._next)
        return self._next

    def finish(self, position: int, on_visible: Callable[[], None] | None = None) -> None:
        """Mark ``position`` written (or abandoned); advance current if it can.

        ``on_visible`` runs once current has reached ``position`` (at once, or
        when the earlier writes still in flight finish): that is when readers
        can see the write, so that is when waiters are woken.
        """
        self._done[position] = on_visible
        while self._pending and self._pending[0] in self._done:
            pos = heapq.heappop(self._pending)
            cb = self._done.pop(pos)
            self._current = pos
            if cb is not None:
                cb()

    def current(self) -> int:
        return self._current


class ChangeCache:
    """Last change position per key, for positions after ``earliest``.

    A key absent from the cache has not changed since ``earliest`` (the stream
    position when the process started); a ``since`` older than that is
    answered "maybe changed" so the caller asks the database.
    """

    def __init__(self, earliest: int, max_size: int = 1_000_000) -> None:
        self.earliest = earliest
        self._last: dict[Hashable, int] = {}
        self._max_size = max_size

    def changed(self, key: Hashable, position: int) -> None:
        if position > self._last.get(key, -1):
            self._last[key] = position
        if len(self._last) > self._max_size:
            # Forget the oldest half; earliest moves up so answers stay correct.
            cutoff = sorted(self._last.values())[len(self._last) // 2]
            self._last = {k: p for k, p in self._last.items() if p > cutoff}
            self.earliest = max(self.earliest, cutoff)

    def has_changed(self, key: Hashable, since: int) -> bool:
        if since < self.earliest:
            return True
        return self._last.get(key, -1) > since

    def last(self, key: Hashable) -> int | None:
        return self._last.get(key)


async def write_keyed(db: Database, stream: StreamWriter, changes: ChangeCache, key: Hashable,
                      write: Callable[[Txn, int], Any],
                      on_visible: Callable[[int], None] | None = None) -> int:
    """Allocate a position, run ``write(txn, position)`` in one transaction, and,
    once readers can see it, mark ``key`` changed and call ``on_visible(position)``.

    A failed write still releases its position, so later writes become visible.
    """
    pos = stream.allocate()
    written = False
    try:
        await db.run(write, pos)
        written = True
    finally:
        def visible() -> None:
            if written:
                changes.changed(key, pos)
                if on_visible is not None:
                    on_visible(pos)
        stream.finish(pos, visible)
    return pos
