"""Relations: bundled aggregations, /relations and /threads.

Bundled aggregations (client-server-api "Aggregations of child events") go
into ``unsigned["m.relations"]`` of each served event:

* ``m.replace``: the most recent edit (greatest origin_server_ts, then
  event ID) from the original sender, as a full client event;
* ``m.thread``: ``latest_event``, ``count`` and ``current_user_participated``;
* ``m.reference``: ``{"chunk": [{"event_id": ...}]}``.

Annotations (reactions) are not bundled, as the spec says since v1.7.
"""
from __future__ import annotations

from typing import Any, Sequence

from homeserver.rooms.format import client_event
from homeserver.storage.events import EventStore, StoredEvent

BUNDLED = ("m.replace", "m.thread", "m.reference")


class Relations:
    def __init__(self, events: EventStore) -> None:
        self.events = events

    async def bundle(self, user_id: str | None, room_id: str, events: Sequence[StoredEvent],
                     now_ms: int, child_rows: Sequence[tuple[str, str]] | None = None
                     ) -> dict[str, dict[str, Any]]:
        """``event_id -> m.relations`` for the events that have children.

        Args:
            child_rows: ``EventStore.relation_children_txn`` rows (types :data:`BUNDLED`)
                covering at least ``events``, when the caller read them already.
        """
        ids = [e.event_id for e in events if e.redacted_because is None and not e.event.is_state()]
        if child_rows is None:
            children = await self.events.get_relation_children(room_id, ids, BUNDLED)
        else:
            wanted = set(ids)
            children = await self.events.relation_children_from_rows([r for r in child_rows if r[0] in wanted])
        by_id = {e.event_id: e for e in events}
        out: dict[str, dict[str, Any]] = {}
        for parent_id, kids in children.items():
            parent = by_id[parent_id]
            agg: dict[str, Any] = {}
            edits = [k for k in kids if _rel_type(k) == "m.replace" and k.event.sender == parent.event.sender
                     and k.event.type == parent.event.type]
            if edits:
                latest = max(edits, key=lambda k: (k.event.origin_server_ts, k.event_id))
                agg["m.replace"] = client_event(latest, now_ms)
            thread = [k for k in kids if _rel_type(k) == "m.thread"]
            if thread:
                agg["m.thread"] = {
                    "latest_event": client_event(thread[-1], now_ms),
                    "count": len(thread),
                    "current_user_participated": user_id is not None and (
                        parent.event.sender == user_id or any(k.event.sender == user_id for k in thread)),
                }
            refs = [k for k in kids if _rel_type(k) == "m.reference"]
            if refs:
                agg["m.reference"] = {"chunk": [{"event_id": k.event_id} for k in refs]}
            if agg:
                out[parent_id] = agg
        return out


def _rel_type(stored: StoredEvent) -> str | None:
    rel = stored.event.content.get("m.relates_to")
    return rel.get("rel_type") if isinstance(rel, dict) else None
