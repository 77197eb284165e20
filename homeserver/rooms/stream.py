"""The in-process event stream: persisted events, published once, in order.

The persister calls :meth:`EventStream.publish` after each commit, once per
batch, in stream order. Consumers (sync long-polls, WebSocket push, the
federation sender, the appservice scheduler, pushers) :meth:`subscribe`;
nothing upstream knows who listens.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from homeserver.core.events import Event
from homeserver.storage.events import StoredEvent

logger = logging.getLogger(__name__)


@dataclass
class PersistedEvent:
    """One durable event as consumers see it.

    Attributes:
        event: The event (unredacted PDU).
        stream_ordering: Its global stream position (the /sync position).
        topological_ordering: Its depth (the /messages position).
        joined_members: The room's joined users right after the event, for
            fan-out (shared between consecutive events of a batch).
        membership: For m.room.member events: ``(user_id, old, new)``
            membership, old being None when there was none.
        txn_key: ``(user_id, device_id, txn_id)`` of the client send, so
            sync can echo ``unsigned.transaction_id`` to the sending device.
        stored: The storage record (see :class:`homeserver.storage.events.StoredEvent`).
    """

    event: Event
    stream_ordering: int
    topological_ordering: int
    joined_members: frozenset[str] = frozenset()
    membership: tuple[str, str | None, str] | None = None
    txn_key: tuple[str, str, str] | None = None
    stored: StoredEvent | None = field(default=None, repr=False)

    @property
    def room_id(self) -> str:
        return self.event.room_id

    @property
    def event_id(self) -> str:
        return self.event.event_id


Callback = Callable[[Sequence[PersistedEvent]], Any]


class EventStream:
    """Publish/subscribe of persisted events, plus the current stream position."""

    def __init__(self, position: int = 0) -> None:
        self._position = position
        self._subscribers: list[Callback] = []

    def current_position(self) -> int:
        """The highest stream ordering such that every event up to it is published."""
        return self._position

    def reset(self, position: int) -> None:
        """Set the position at start-up (from the highest stored stream ordering)."""
        self._position = position

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        """Call ``callback(events)`` for each published batch. Returns an unsubscribe function."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)
        return unsubscribe

    def publish(self, events: Sequence[PersistedEvent], position: int) -> None:
        """Advance the position to ``position`` and hand ``events`` to every subscriber.

        A subscriber that raises is logged and does not stop the others.
        """
        self._position = max(self._position, position)
        if not events:
            return
        for cb in list(self._subscribers):
            try:
                cb(events)
            except Exception:
                logger.exception("event stream subscriber %r failed", cb)
