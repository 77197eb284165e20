"""Send-to-device messaging: queued per device, delivered by /sync at least once.

Local recipients get the message in their device inbox; messages for remote
users are handed to ``outbound`` hooks (the federation sender's EDU queue).
Remote messages arrive through :meth:`ToDeviceService.on_remote_messages`.
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable

from homeserver.api.errors import MatrixError
from homeserver.storage.to_device import ToDeviceStore
from homeserver.sync.notifier import Notifier
from homeserver.util.clock import Clock

#: Bounds on one sendToDevice request.
MAX_RECIPIENTS = 10_000
DeviceLister = Callable[[str], Awaitable[list[str]]]
OutboundToDevice = Callable[[str, str, str, dict[str, dict[str, Any]]], None]


class ToDeviceService:
    def __init__(self, store: ToDeviceStore, notifier: Notifier, clock: Clock, server_name: str,
                 list_devices: DeviceLister) -> None:
        self._store = store
        self._notifier = notifier
        self._clock = clock
        self._server_name = server_name
        self._list_devices = list_devices
        #: ``hook(sender, event_type, destination_server, {user: {device: content}})``.
        self.outbound: list[OutboundToDevice] = []

    def position(self) -> int:
        return self._store.stream.current()

    def _is_local(self, user_id: str) -> bool:
        return user_id.partition(":")[2] == self._server_name

    async def send(self, sender: str, sender_device: str | None, event_type: str, txn_id: str,
                   messages: dict[str, Any]) -> None:
        """``PUT /sendToDevice``: ``messages`` is ``{user_id: {device_id or "*": content}}``."""
        rows: list[tuple[str, str, dict[str, Any]]] = []
        remote: dict[str, dict[str, dict[str, Any]]] = {}
        count = 0
        for user_id, by_device in messages.items():
            if not isinstance(by_device, dict) or not user_id.startswith("@") or ":" not in user_id:
                raise MatrixError(400, "M_INVALID_PARAM", "messages must map user IDs to device maps")
            for device_id, content in by_device.items():
                if not isinstance(content, dict):
                    raise MatrixError(400, "M_BAD_JSON", "Each message must be a JSON object")
                count += 1
                if count > MAX_RECIPIENTS:
                    raise MatrixError(400, "M_TOO_LARGE", "Too many recipients")
                if not self._is_local(user_id):
                    remote.setdefault(user_id.partition(":")[2], {}).setdefault(user_id, {})[device_id] = content
                    continue
                message = {"type": event_type, "sender": sender, "content": content}
                targets = await self._list_devices(user_id) if device_id == "*" else [device_id]
                rows.extend((user_id, d, message) for d in targets)
        key = (sender, sender_device or "", txn_id)
        stored = await self._store.add_messages(rows, key, self._clock.time_msec(), self._visible)
        if stored:
            for destination, by_user in remote.items():
                for hook in self.outbound:
                    hook(sender, event_type, destination, by_user)

    async def on_remote_messages(self, sender: str, event_type: str, message_id: str,
                                 messages: dict[str, dict[str, Any]]) -> None:
        """An ``m.direct_to_device`` EDU; ``message_id`` deduplicates retries."""
        rows: list[tuple[str, str, dict[str, Any]]] = []
        for user_id, by_device in messages.items():
            if not self._is_local(user_id) or not isinstance(by_device, dict):
                continue
            for device_id, content in by_device.items():
                if not isinstance(content, dict):
                    continue
                message = {"type": event_type, "sender": sender, "content": content}
                targets = await self._list_devices(user_id) if device_id == "*" else [device_id]
                rows.extend((user_id, d, message) for d in targets)
        await self._store.add_messages(rows, (sender, "", "edu:" + message_id), self._clock.time_msec(),
                                       self._visible)

    def _visible(self, pos: int, users: set[str]) -> None:
        self._notifier.notify("to_device", pos, users=users)

    def acknowledges(self, user_id: str, device_id: str | None, since: int) -> bool:
        """Whether a sync of this device from ``since`` must delete delivered messages (see :meth:`for_sync`)."""
        return device_id is not None and self._store.acknowledges(user_id, device_id, since)

    async def for_sync(self, user_id: str, device_id: str | None, since: int, upto: int
                       ) -> tuple[list[dict[str, Any]], int]:
        """Messages after ``since`` (deleting those up to it) and the next position."""
        if device_id is None:
            return [], upto
        return await self._store.get_messages(user_id, device_id, since, upto)
