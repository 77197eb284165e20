"""Ephemeral data between this server's sync services and other servers (EDUs).

Outbound: the sync services' ``outbound`` hooks (typing, public receipts,
presence, to-device) become EDUs for the servers concerned. Inbound: EDUs
received in ``/send`` transactions are checked (the user must belong to the
origin server, shapes are validated, sizes bounded by the transaction) and
handed to the same services' ``on_remote_*`` methods. EDUs are best effort,
as the spec allows: they are not persisted.
"""
from __future__ import annotations

import logging
import secrets
from typing import Any, Collection, Protocol

from federation.inbound import EduRegistry
from federation.sender import FederationSender
from homeserver.core.ids import InvalidIdError, get_domain_from_id

logger = logging.getLogger(__name__)


class Members(Protocol):
    def joined_members(self, room_id: str) -> Collection[str]: ...
    def co_members(self, user_id: str) -> set[str]: ...


def _domain(user_id: Any) -> str | None:
    if not isinstance(user_id, str):
        return None
    try:
        return get_domain_from_id(user_id)
    except InvalidIdError:
        return None


class EphemeralBridge:
    def __init__(self, server_name: str, sender: FederationSender, members: Members, typing: Any,
                 receipts: Any, presence: Any, to_device: Any) -> None:
        self._server_name = server_name
        self._sender = sender
        self._members = members
        self._typing = typing
        self._receipts = receipts
        self._presence = presence
        self._to_device = to_device

    def wire(self, edus: EduRegistry) -> None:
        self._typing.outbound.append(self._send_typing)
        self._receipts.outbound.append(self._send_receipt)
        self._presence.outbound.append(self._send_presence)
        self._to_device.outbound.append(self._send_to_device)
        edus.register_edu_handler("m.typing", self._on_typing)
        edus.register_edu_handler("m.receipt", self._on_receipt)
        edus.register_edu_handler("m.presence", self._on_presence)
        edus.register_edu_handler("m.direct_to_device", self._on_to_device)

    def _remote_servers(self, users: Collection[str]) -> set[str]:
        servers = {_domain(u) for u in users}
        servers.discard(self._server_name)
        servers.discard(None)
        return servers  # type: ignore[return-value]

    # --- outbound ---------------------------------------------------------

    def _send_typing(self, room_id: str, user_id: str, typing: bool, _timeout_ms: int) -> None:
        for dest in self._remote_servers(self._members.joined_members(room_id)):
            self._sender.send_edu(dest, "m.typing", {"room_id": room_id, "user_id": user_id, "typing": typing})

    def _send_receipt(self, room_id: str, receipt_type: str, user_id: str, event_id: str,
                      data: dict[str, Any]) -> None:
        content = {room_id: {receipt_type: {user_id: {"event_ids": [event_id], "data": data}}}}
        for dest in self._remote_servers(self._members.joined_members(room_id)):
            self._sender.send_edu(dest, "m.receipt", content)

    def _send_presence(self, event: dict[str, Any]) -> None:
        user_id = event["sender"]
        update = {"user_id": user_id, **event["content"]}
        for dest in self._remote_servers(self._members.co_members(user_id)):
            self._sender.send_edu(dest, "m.presence", {"push": [update]})

    def _send_to_device(self, sender: str, event_type: str, destination: str,
                        messages: dict[str, dict[str, Any]]) -> None:
        self._sender.send_edu(destination, "m.direct_to_device", {
            "sender": sender, "type": event_type, "message_id": secrets.token_hex(16), "messages": messages})

    # --- inbound ----------------------------------------------------------

    async def _on_typing(self, origin: str, content: Any) -> None:
        if not isinstance(content, dict):
            return
        room_id, user_id, typing = content.get("room_id"), content.get("user_id"), content.get("typing")
        if isinstance(room_id, str) and isinstance(typing, bool) and _domain(user_id) == origin:
            self._typing.on_remote_typing(room_id, user_id, typing)

    async def _on_receipt(self, origin: str, content: Any) -> None:
        if not isinstance(content, dict):
            return
        for room_id, by_type in content.items():
            if not isinstance(by_type, dict):
                continue
            for receipt_type, by_user in by_type.items():
                if not isinstance(by_user, dict):
                    continue
                for user_id, receipt in by_user.items():
                    if _domain(user_id) != origin or not isinstance(receipt, dict):
                        continue
                    event_ids, data = receipt.get("event_ids"), receipt.get("data", {})
                    if (isinstance(event_ids, list) and event_ids and isinstance(event_ids[0], str)
                            and isinstance(data, dict)):
                        await self._receipts.on_remote_receipt(room_id, receipt_type, user_id, event_ids[0], data)

    async def _on_presence(self, origin: str, content: Any) -> None:
        pushes = content.get("push") if isinstance(content, dict) else None
        if not isinstance(pushes, list):
            return
        for update in pushes[:1000]:
            if not isinstance(update, dict) or _domain(update.get("user_id")) != origin:
                continue
            state, msg = update.get("presence"), update.get("status_msg")
            ago, active = update.get("last_active_ago"), update.get("currently_active", False)
            if (isinstance(state, str) and (msg is None or isinstance(msg, str))
                    and (ago is None or (isinstance(ago, int) and not isinstance(ago, bool)))):
                self._presence.on_remote_presence(update["user_id"], state, msg, ago, bool(active))

    async def _on_to_device(self, origin: str, content: Any) -> None:
        if not isinstance(content, dict):
            return
        sender, event_type = content.get("sender"), content.get("type")
        message_id, messages = content.get("message_id"), content.get("messages")
        if (_domain(sender) != origin or not isinstance(event_type, str) or not isinstance(message_id, str)
                or not isinstance(messages, dict)):
            return
        local = {u: d for u, d in messages.items() if _domain(u) == self._server_name and isinstance(d, dict)}
        if local:
            await self._to_device.on_remote_messages(sender, event_type, message_id, local)
