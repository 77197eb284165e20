"""Receipts and read markers (client-server API modules "Receipts" and "Read markers")."""
from __future__ import annotations

from typing import Any

from homeserver.api.errors import MatrixError, forbidden
from homeserver.api.http import ApiRequest, Router
from homeserver.api.validate import get_str
from homeserver.sync.account_data import AccountDataService
from homeserver.sync.membership import MembershipIndex
from homeserver.sync.receipts import RECEIPT_TYPES, ReceiptService

MAX_ID = 255


class ReceiptServlets:
    def __init__(self, receipts: ReceiptService, account_data: AccountDataService,
                 membership: MembershipIndex) -> None:
        self._receipts = receipts
        self._account_data = account_data
        self._membership = membership

    def register(self, router: Router) -> None:
        router.add_client("POST", "/rooms/{room_id}/receipt/{receipt_type}/{event_id}", self.on_receipt)
        router.add_client("POST", "/rooms/{room_id}/read_markers", self.on_read_markers)

    async def on_receipt(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId} — send a receipt.

        ``m.fully_read`` here sets the read marker. Spec: module "Receipts".
        """
        room_id = request.path_params["room_id"]
        receipt_type = request.path_params["receipt_type"]
        event_id = request.path_params["event_id"]
        if len(event_id) > MAX_ID or len(room_id) > MAX_ID:
            raise MatrixError(400, "M_INVALID_PARAM", "Identifier too long")
        body = request.json() if request.content.strip() else {}
        thread_id = get_str(body, "thread_id", None, max_len=MAX_ID)
        if receipt_type == "m.fully_read":
            if thread_id is not None:
                raise MatrixError(400, "M_INVALID_PARAM", "m.fully_read cannot be threaded")
            await self._fully_read(request.requester.user_id, room_id, event_id)
            return {}
        if receipt_type not in RECEIPT_TYPES:
            raise MatrixError(400, "M_INVALID_PARAM", "Unknown receipt type")
        await self._receipts.send(request.requester.user_id, room_id, receipt_type, event_id, thread_id)
        return {}

    async def _fully_read(self, user_id: str, room_id: str, event_id: str) -> None:
        if not self._membership.is_joined(room_id, user_id):
            raise forbidden("You are not a member of this room")
        exists = self._receipts.event_exists
        if exists is not None and not await exists(room_id, event_id):
            raise MatrixError(404, "M_NOT_FOUND", "Unknown event")
        await self._account_data.put(user_id, room_id, "m.fully_read", {"event_id": event_id}, internal=True)

    async def on_read_markers(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/v3/rooms/{roomId}/read_markers — set the read marker and receipts.

        Spec: module "Read markers".
        """
        room_id = request.path_params["room_id"]
        body = request.json()
        user_id = request.requester.user_id
        fully_read = get_str(body, "m.fully_read", None, max_len=MAX_ID)
        read = get_str(body, "m.read", None, max_len=MAX_ID)
        private = get_str(body, "m.read.private", None, max_len=MAX_ID)
        if not self._membership.is_joined(room_id, user_id):
            raise forbidden("You are not a member of this room")
        if fully_read is not None:
            await self._fully_read(user_id, room_id, fully_read)
        if read is not None:
            await self._receipts.send(user_id, room_id, "m.read", read)
        if private is not None:
            await self._receipts.send(user_id, room_id, "m.read.private", private)
        return {}
