"""Build and authorise local events against a room's in-memory tip.

:meth:`EventBuilder.build` picks prev_events (the tip's forward
extremities), depth, and auth_events (chosen by
``core.auth.auth_types_for_event`` from the in-memory state), adds hashes
and our signature with the core, computes the event ID, and runs
``core.auth.check_auth``. No database access.

Local policy (e.g. the groups' member cap and @room rule) plugs in as
:class:`EventCheck` callables, run after the auth rules on the same tip and
before the event is queued: nothing awaits in between, so a check sees every
event queued before it (racing joins are counted).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from homeserver.api.errors import MatrixError, forbidden
from homeserver.core.auth import AuthError, auth_types_for_event, check_auth
from homeserver.core.events import Event, EventFormatError, check_event_format
from homeserver.core.room_versions import RoomVersion
from homeserver.core.signing import add_hashes_and_signatures
from homeserver.rooms.state_cache import RoomState
from homeserver.util.clock import Clock
from homeserver.util.ids import random_string

#: At most this many prev_events are cited (the spec allows 20).
MAX_PREV = 10

#: ``check(room, event)``: raise a MatrixError to refuse a local event that passed the auth rules.
EventCheck = Callable[[RoomState, Event], None]


class EventBuilder:
    def __init__(self, server_name: str, signing_key: Any, clock: Clock,
                 checks: Sequence[EventCheck] = ()) -> None:
        self.server_name = server_name
        self._key = signing_key
        self._clock = clock
        self.checks = list(checks)

    def _finish(self, pdu: dict[str, Any], rv: RoomVersion, unsigned: dict[str, Any]) -> Event:
        if rv.event_id_format == "v1":
            pdu["event_id"] = f"${random_string(18)}:{self.server_name}"
        pdu = add_hashes_and_signatures(pdu, rv, self.server_name, self._key)
        try:
            check_event_format(pdu, rv)
        except EventFormatError as e:
            if "larger than" in str(e):
                raise MatrixError(413, "M_TOO_LARGE", str(e)) from None
            raise MatrixError(400, "M_BAD_JSON", str(e)) from None
        if unsigned:
            pdu["unsigned"] = unsigned
        return Event(pdu, rv)

    def build_create(self, room_version: RoomVersion, room_id: str | None, sender: str,
                     content: dict[str, Any]) -> Event:
        """The m.room.create event (room_id None for v12+, where the event names the room)."""
        pdu: dict[str, Any] = {
            "type": "m.room.create", "state_key": "", "sender": sender, "content": content,
            "depth": 1, "origin_server_ts": self._clock.time_msec(), "prev_events": [], "auth_events": [],
        }
        if not room_version.room_id_from_create_event:
            pdu["room_id"] = room_id
        event = self._finish(pdu, room_version, {})
        try:
            check_auth(event, {})
        except AuthError as e:
            raise MatrixError(400, "M_BAD_JSON", f"Invalid m.room.create content: {e.reason}") from None
        return event

    def build(self, room: RoomState, event_type: str, sender: str, content: dict[str, Any],
              state_key: str | None = None, redacts: str | None = None,
              origin_server_ts: int | None = None) -> Event:
        """Build, sign and authorise an event on top of the room's tip.

        Raises:
            MatrixError: M_FORBIDDEN with the auth rule's reason, or
                M_BAD_JSON / M_TOO_LARGE for a malformed event.
        """
        rv = room.room_version
        prev_ids = room.tip_extremities()[-MAX_PREV:]
        auth_keys = auth_types_for_event(event_type, sender, state_key, content, rv)
        auth_map: dict[tuple[str, str], Event] = {}
        for key in auth_keys:
            ev = room.tip_get(*key)
            if ev is not None:
                auth_map[key] = ev
        create = room.tip_get("m.room.create")
        if create is not None:
            auth_map[("m.room.create", "")] = create
        auth_ids = [e.event_id for k, e in auth_map.items()
                    if k in auth_keys and (k != ("m.room.create", "") or rv.create_event_in_auth_events)]
        if redacts is not None and rv.redacts_in_content:
            content = {**content, "redacts": redacts}
        pdu: dict[str, Any] = {
            "room_id": room.room_id, "type": event_type, "sender": sender, "content": content,
            "depth": room.tip_depth() + 1,
            # application services may set the timestamp (spec "Timestamp massaging")
            "origin_server_ts": self._clock.time_msec() if origin_server_ts is None else origin_server_ts,
            "prev_events": _refs(prev_ids, rv), "auth_events": _refs(auth_ids, rv),
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        if redacts is not None and not rv.redacts_in_content:
            pdu["redacts"] = redacts
        unsigned: dict[str, Any] = {}
        if state_key is not None:
            replaced = room.tip_get(event_type, state_key)
            if replaced is not None:
                unsigned = {"replaces_state": replaced.event_id, "prev_content": replaced.content,
                            "prev_sender": replaced.sender}
        event = self._finish(pdu, rv, unsigned)
        try:
            check_auth(event, auth_map)
        except AuthError as e:
            raise forbidden(e.reason) from None
        for check in self.checks:
            check(room, event)
        return event


def _refs(ids: list[str], rv: RoomVersion) -> list[Any]:
    if rv.event_id_format == "v1":
        return [[i, {}] for i in ids]
    return list(ids)
