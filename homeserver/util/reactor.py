"""The daemon's reactor: Twisted's epoll reactor, dispatching I/O events without a log context.

For every ready descriptor, Twisted's ``EPollReactor.doPoll`` calls the
handler through ``log.callWithLogger``: it asks the connection for its log
prefix, copies the legacy log context dictionary, pushes it on a
thread-local stack, and pops it again. That "system" prefix only matters to
Twisted's legacy log observers; this server logs through the standard
``logging`` module. With 500 long-polls re-polling after every message it
was 13 % of the server's CPU (docs/performance.md, "Realtime").

:class:`LeanEPollReactor` polls and dispatches the same way, minus that
wrapper. A handler that raises is logged and the loop goes on, as before.
Only ``python -m homeserver`` installs it (``cli.import_reactor``); an
embedding application keeps whichever reactor it installed.
"""
from __future__ import annotations

import logging
from typing import Any

from twisted.internet.epollreactor import EPollReactor

logger = logging.getLogger(__name__)


class LeanEPollReactor(EPollReactor):
    def doPoll(self, timeout: float | None) -> None:  # noqa: N802 - Twisted's name
        try:
            events = self._poller.poll(-1 if timeout is None else timeout, len(self._selectables))
        except InterruptedError:
            return
        selectables = self._selectables
        dispatch = self._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            try:
                dispatch(selectable, fd, event)
            except Exception:
                logger.exception("I/O handler of %r failed", selectable)

    doIteration = doPoll


def install() -> Any:
    """Install :class:`LeanEPollReactor` as ``twisted.internet.reactor`` and return it."""
    from twisted.internet.main import installReactor

    reactor = LeanEPollReactor()
    installReactor(reactor)
    return reactor
