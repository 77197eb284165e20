"""Device management (spec 'Device management'): list, get, rename, delete."""
from __future__ import annotations

from typing import Any

from homeserver.api.errors import MatrixError
from homeserver.api.http import ApiRequest, Router
from homeserver.api.validate import get_list, get_str
from homeserver.storage.users import Device
from homeserver.users.accounts import MAX_DEVICE_NAME_LEN, AccountService
from homeserver.users.uia import UiaManager

#: Most devices one /delete_devices call may name.
MAX_DELETE = 1000


def device_json(d: Device) -> dict[str, Any]:
    return {"device_id": d.device_id, "display_name": d.display_name,
            "last_seen_ip": d.last_seen_ip, "last_seen_ts": d.last_seen_ts}


class DeviceServlets:
    def __init__(self, accounts: AccountService, uia: UiaManager) -> None:
        self._accounts = accounts
        self._uia = uia

    def register(self, router: Router) -> None:
        router.add_client("GET", "/devices", self.list_devices)
        router.add_client("GET", "/devices/{device_id}", self.get_device)
        router.add_client("PUT", "/devices/{device_id}", self.update_device)
        router.add_client("DELETE", "/devices/{device_id}", self.delete_device)
        router.add_client("POST", "/delete_devices", self.delete_devices)

    async def list_devices(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/devices — the caller's devices."""
        devices = await self._accounts.get_devices(request.requester.user_id)
        return {"devices": [device_json(d) for d in devices]}

    async def get_device(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/devices/{deviceId} — one of the caller's devices, or 404."""
        d = await self._accounts.get_device(request.requester.user_id, request.path_params["device_id"])
        if d is None:
            raise MatrixError(404, "M_NOT_FOUND", "Device not found")
        return device_json(d)

    async def update_device(self, request: ApiRequest) -> Any:
        """PUT /_matrix/client/v3/devices/{deviceId} — rename a device (``display_name``);
        an application service creates it when it does not exist (201, spec v1.17)."""
        body = request.json()
        name = get_str(body, "display_name", None, max_len=MAX_DEVICE_NAME_LEN, allow_none=True)
        user_id, device_id = request.requester.user_id, request.path_params["device_id"]
        if request.requester.appservice is not None and await self._accounts.get_device(user_id, device_id) is None:
            if not device_id or len(device_id) > 255:
                raise MatrixError(400, "M_INVALID_PARAM", "Device IDs are 1 to 255 characters")
            await self._accounts.create_device(user_id, device_id, name)
            return 201, {}
        if "display_name" not in body:
            if await self._accounts.get_device(user_id, device_id) is None:
                raise MatrixError(404, "M_NOT_FOUND", "Device not found")
            return {}
        if not await self._accounts.set_device_display_name(user_id, device_id, name):
            raise MatrixError(404, "M_NOT_FOUND", "Device not found")
        return {}

    async def _check_uia(self, request: ApiRequest, body: dict[str, Any]) -> None:
        user_id = request.requester.user_id
        if request.requester.appservice is not None:
            return  # spec v1.17: application services skip UIA here
        await self._uia.check(body, [["m.login.password"]],
                              {"m.login.password": self._accounts.password_stage(user_id)},
                              context={"user_id": user_id, "path": request.path})

    async def delete_device(self, request: ApiRequest) -> dict[str, Any]:
        """DELETE /_matrix/client/v3/devices/{deviceId} — log a device out for good (UIA).

        Deleting a device that does not exist succeeds (the outcome is the same).
        """
        body = request.json()
        await self._check_uia(request, body)
        await self._accounts.delete_devices(request.requester.user_id, [request.path_params["device_id"]])
        return {}

    async def delete_devices(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/v3/delete_devices — delete several devices at once (UIA)."""
        body = request.json()
        devices = get_list(body, "devices", item_type=str, max_items=MAX_DELETE)
        await self._check_uia(request, body)
        await self._accounts.delete_devices(request.requester.user_id, list(dict.fromkeys(devices)))
        return {}
