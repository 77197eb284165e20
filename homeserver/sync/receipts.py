"""Read receipts: storing, fan-out and the ``m.receipt`` ephemeral event.

Local receipts come from ``POST /receipt`` and ``/read_markers``; remote ones
through :meth:`ReceiptService.on_remote_receipt` (the federation EDU handler).
``m.read.private`` is only ever shown to its owner and never federated.
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable, Container, Iterable

from homeserver.api.errors import MatrixError, forbidden
from homeserver.storage.receipts import Receipt, ReceiptStore
from homeserver.sync.membership import MembershipIndex
from homeserver.sync.notifier import Notifier
from homeserver.util.clock import Clock

RECEIPT_TYPES = ("m.read", "m.read.private")
PRIVATE = "m.read.private"

EventExists = Callable[[str, str], Awaitable[bool]]
OutboundReceipt = Callable[[str, str, str, str, dict], None]
ReceiptListener = Callable[[str, str, str, str], None]


class ReceiptService:
    def __init__(self, store: ReceiptStore, membership: MembershipIndex, notifier: Notifier,
                 clock: Clock) -> None:
        self._store = store
        self._membership = membership
        self._notifier = notifier
        self._clock = clock
        #: ``async (room_id, event_id) -> bool``; wired to the event store by server.py.
        self.event_exists: EventExists | None = None
        #: ``hook(room_id, receipt_type, user_id, event_id, data)`` for public local receipts.
        self.outbound: list[OutboundReceipt] = []
        #: ``fn(room_id, user_id, receipt_type, event_id)`` after a receipt is visible (unread counts).
        self.listeners: list[ReceiptListener] = []

    async def send(self, user_id: str, room_id: str, receipt_type: str, event_id: str,
                   thread_id: str | None = None) -> None:
        """A local user's receipt, from the client API."""
        if receipt_type not in RECEIPT_TYPES:
            raise MatrixError(400, "M_INVALID_PARAM", f"Unknown receipt type {receipt_type[:64]!r}")
        if thread_id is not None and (not isinstance(thread_id, str) or not thread_id):
            raise MatrixError(400, "M_INVALID_PARAM", "thread_id must be a non-empty string")
        if not self._membership.is_joined(room_id, user_id):
            raise forbidden("You are not a member of this room")
        if self.event_exists is not None and not await self.event_exists(room_id, event_id):
            raise MatrixError(404, "M_NOT_FOUND", "Unknown event")
        data: dict[str, Any] = {"ts": self._clock.time_msec()}
        if thread_id is not None:
            data["thread_id"] = thread_id
        await self._put(room_id, receipt_type, user_id, thread_id or "", event_id, data)
        if receipt_type != PRIVATE:
            for hook in self.outbound:
                hook(room_id, receipt_type, user_id, event_id, data)

    async def on_remote_receipt(self, room_id: str, receipt_type: str, user_id: str, event_id: str,
                                data: dict[str, Any]) -> None:
        """A receipt EDU from another server (origin already checked against the user)."""
        if receipt_type != "m.read" or not self._membership.is_joined(room_id, user_id):
            return
        thread_id = data.get("thread_id") if isinstance(data.get("thread_id"), str) else ""
        await self._put(room_id, receipt_type, user_id, thread_id or "", event_id, data)

    async def _put(self, room_id: str, receipt_type: str, user_id: str, thread_id: str, event_id: str,
                   data: dict[str, Any]) -> None:
        def visible(pos: int) -> None:
            for listener in self.listeners:
                listener(room_id, user_id, receipt_type, event_id)
            if receipt_type == PRIVATE:
                self._notifier.notify("receipts", pos, users=[user_id])
            else:
                self._notifier.notify("receipts", pos, rooms=[room_id])

        await self._store.put(room_id, receipt_type, user_id, thread_id, event_id, data, visible)

    def position(self) -> int:
        return self._store.stream.current()

    async def ephemeral_for(self, user_id: str, room_ids: Iterable[str], since: int, upto: int,
                            hidden: Container[str] = ()) -> dict[str, dict[str, Any]]:
        """``{room_id: m.receipt event}`` with receipts in (since, upto] visible to ``user_id``,
        leaving out those of the ``hidden`` users (the ones ``user_id`` ignores)."""
        receipts = await self._store.get_for_rooms(list(room_ids), since, upto)
        return receipt_events(receipts, user_id, hidden)


def receipt_events(receipts: list[Receipt], viewer: str, hidden: Container[str] = ()) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in receipts:
        if (r.receipt_type == PRIVATE and r.user_id != viewer) or r.user_id in hidden:
            continue
        content = out.setdefault(r.room_id, {"type": "m.receipt", "content": {}})["content"]
        data = dict(r.data)
        if r.thread_id:
            data["thread_id"] = r.thread_id
        content.setdefault(r.event_id, {}).setdefault(r.receipt_type, {})[r.user_id] = data
    return out
