"""Send-to-device messaging (client-server API module "Send-to-Device messaging")."""
from __future__ import annotations

from typing import Any

from homeserver.api.errors import MatrixError
from homeserver.api.http import ApiRequest, Router
from homeserver.api.validate import get_dict
from homeserver.sync.to_device import ToDeviceService

MAX_ID = 255


class ToDeviceServlets:
    def __init__(self, to_device: ToDeviceService) -> None:
        self._to_device = to_device

    def register(self, router: Router) -> None:
        router.add_client("PUT", "/sendToDevice/{event_type}/{txn_id}", self.on_send)

    async def on_send(self, request: ApiRequest) -> dict[str, Any]:
        """PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId} — queue messages for devices.

        Idempotent per (device, txnId). Spec: module "Send-to-Device messaging".
        """
        event_type = request.path_params["event_type"]
        txn_id = request.path_params["txn_id"]
        if not event_type or len(event_type) > MAX_ID or len(txn_id) > MAX_ID:
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid event type or transaction ID")
        messages = get_dict(request.json(), "messages")
        requester = request.requester
        await self._to_device.send(requester.user_id, requester.device_id, event_type, txn_id, messages)
        return {}
