"""The event as sync delivers it: formatted once, shared by every receiver."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class SyncEvent:
    """One persisted event, with its client-format dict precomputed.

    ``client`` is shared by every /sync response and WebSocket frame that
    carries the event; per-viewer differences (``unsigned.transaction_id``
    for the sending device) are applied on a copy by :meth:`for_viewer`.
    """

    room_id: str
    event_id: str
    type: str
    state_key: str | None
    sender: str
    stream_ordering: int
    topological_ordering: int
    client: dict[str, Any]
    federation: dict[str, Any] | None = None
    #: (user_id, device_id, txn_id) when a local client sent it.
    txn_key: tuple[str, str, str] | None = None
    #: The persisted Event it was made from (for the federation format), when there is one.
    #: Not the StoredEvent, which holds this object (``sync_cache``): no reference cycle.
    pdu_event: Any = None
    #: Whether ``client`` shows the event redacted (``to_sync_event`` makes a new one when that changes).
    redacted: bool = False

    @property
    def membership(self) -> str | None:
        if self.type != "m.room.member":
            return None
        value = self.client.get("content", {}).get("membership")
        return value if isinstance(value, str) else None

    @property
    def is_state(self) -> bool:
        return self.state_key is not None

    def for_viewer(self, user_id: str, device_id: str | None, event_format: str = "client") -> dict[str, Any]:
        if event_format == "federation":
            if self.federation is None and self.pdu_event is not None:
                self.federation = self.pdu_event.get_pdu_json()
            if self.federation is not None:
                return self.federation
        key = self.txn_key
        if key is not None and key[0] == user_id and key[1] == device_id:
            unsigned = dict(self.client.get("unsigned") or {})
            unsigned["transaction_id"] = key[2]
            return {**self.client, "unsigned": unsigned}
        return self.client
