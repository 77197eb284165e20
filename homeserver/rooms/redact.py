"""Redact an event: PUT /rooms/{roomId}/redact/{eventId}/{txnId}.

Since room version 3 the auth rules no longer check who may redact what
("handling redactions" moved to the server): a user may redact their own
events, or anyone's with the room's ``redact`` power level. We check that
here, before the event is built. Local policy (the groups' recall window)
plugs in as :class:`RedactionCheck` callables.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from homeserver.api.errors import forbidden
from homeserver.rooms.send import EventSender
from homeserver.rooms.state_cache import RoomState
from homeserver.storage.events import StoredEvent

#: ``check(room, redacter, target)`` for a redaction of an event of the room; raise a MatrixError to refuse.
RedactionCheck = Callable[[RoomState, str, StoredEvent], None]


class Redactor:
    def __init__(self, sender: EventSender, checks: Sequence[RedactionCheck] = ()) -> None:
        self.sender = sender
        self.checks = list(checks)

    async def redact(self, user_id: str, room_id: str, event_id: str, reason: str | None,
                     txn_key: tuple[str, str, str] | None) -> str:
        room = await self.sender.room_or_forbidden(room_id)
        target = await self.sender.events.get_event(event_id)
        own = target is not None and target.room_id == room_id and target.event.sender == user_id
        if not own:
            pl = room.power_levels
            if pl.user_level(user_id) < pl.redact:
                raise forbidden("You need a higher power level to redact other people's events.")
        if target is not None and target.room_id == room_id and target.event.type == "m.room.create":
            raise forbidden("The create event cannot be redacted.")
        if target is not None and target.room_id == room_id:
            for check in self.checks:
                check(room, user_id, target)
        content: dict[str, Any] = {}
        if reason is not None:
            content["reason"] = reason
        return await self.sender.send(user_id, room_id, "m.room.redaction", content, redacts=event_id,
                                      txn_key=txn_key)
