"""Events in client format (ClientEvent / ClientEventWithoutRoomID).

The per-event part is computed once and kept on the
:class:`~homeserver.storage.events.StoredEvent` (``client_cache``); each
serve only adds what depends on the reader or the time: ``unsigned.age``,
``unsigned.transaction_id`` (for the sending device) and bundled
aggregations.
"""
from __future__ import annotations

from typing import Any

from homeserver.storage.events import StoredEvent

#: unsigned keys carried over from the stored PDU.
_UNSIGNED_KEYS = ("prev_content", "replaces_state", "prev_sender", "invite_room_state", "knock_room_state")


def client_base(stored: StoredEvent) -> dict[str, Any]:
    """The reader-independent client dict (with ``room_id``, without ``unsigned.age``), computed once.

    Shared: callers must not change it (:func:`client_event` gives a copy to change).
    """
    cached = stored.client_cache
    if cached is not None:
        return cached
    ev = stored.visible_event
    out: dict[str, Any] = {
        "content": ev.content,
        "event_id": ev.event_id,
        "origin_server_ts": ev.origin_server_ts,
        "room_id": ev.room_id,
        "sender": ev.sender,
        "type": ev.type,
    }
    if ev.state_key is not None:
        out["state_key"] = ev.state_key
    if ev.redacts is not None and stored.event.type == "m.room.redaction":
        out["redacts"] = ev.redacts
    unsigned = {k: stored.event.unsigned[k] for k in _UNSIGNED_KEYS if k in stored.event.unsigned}
    if stored.redacted_because is not None:
        unsigned.pop("prev_content", None)
        unsigned["redacted_because"] = client_event_of(stored.redacted_because)
    out["unsigned"] = unsigned
    stored.client_cache = out
    return out


def client_event_of(event: Any) -> dict[str, Any]:
    """A bare event (no storage record) in client format, e.g. a redaction."""
    out: dict[str, Any] = {
        "content": event.content, "event_id": event.event_id, "origin_server_ts": event.origin_server_ts,
        "room_id": event.room_id, "sender": event.sender, "type": event.type, "unsigned": {},
    }
    if event.state_key is not None:
        out["state_key"] = event.state_key
    if event.redacts is not None:
        out["redacts"] = event.redacts
    return out


def client_event(stored: StoredEvent, now_ms: int, *, include_room_id: bool = True,
                 txn_id: str | None = None, relations: dict[str, Any] | None = None) -> dict[str, Any]:
    """The event as a client sees it (redacted if it was redacted).

    Args:
        now_ms: The current time, for ``unsigned.age``.
        include_room_id: False for the /sync timeline form.
        txn_id: The client's transaction ID, given only to the sending device.
        relations: Bundled aggregations for ``unsigned["m.relations"]``.
    """
    base = client_base(stored)
    out = dict(base)
    if not include_room_id:
        del out["room_id"]
    unsigned = dict(base["unsigned"])
    unsigned["age"] = max(0, now_ms - stored.event.origin_server_ts)
    if txn_id is not None:
        unsigned["transaction_id"] = txn_id
    if relations:
        unsigned["m.relations"] = relations
    out["unsigned"] = unsigned
    return out


def strip_state_event(stored: StoredEvent) -> dict[str, Any]:
    """A stripped state event (invite_room_state, knock_room_state, room summaries)."""
    ev = stored.visible_event
    return {"content": ev.content, "sender": ev.sender, "state_key": ev.state_key, "type": ev.type}
