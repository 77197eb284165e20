"""The ``sync`` config section: WebSocket channel and in-memory caches."""
from __future__ import annotations

from dataclasses import dataclass

from homeserver.config import Section


@dataclass(frozen=True)
class SyncConfig:
    websocket_enabled: bool = True
    #: Seconds between WebSocket pings; a pong must come back within ping_timeout.
    ping_interval_s: float = 30.0
    ping_timeout_s: float = 20.0
    #: Bytes a slow reader may have queued before it is closed with 4008.
    max_buffer_bytes: int = 1 << 20
    #: Seconds a connection may stay unable to take a pending update before 4008.
    slow_reader_timeout_s: float = 30.0
    #: Concurrent client requests one socket may have in flight.
    max_requests_in_flight: int = 32
    #: Recent events kept in memory per room (served to woken syncs without a query).
    recent_events_per_room: int = 64

    @classmethod
    def parse(cls, s: Section) -> "SyncConfig":
        ws = s.section("websocket")
        return cls(
            websocket_enabled=ws.bool("enabled", True),
            ping_interval_s=ws.float("ping_interval", 30.0, minimum=0.0),
            ping_timeout_s=ws.float("ping_timeout", 20.0, minimum=0.0),
            max_buffer_bytes=ws.size("max_buffer_size", 1 << 20),
            slow_reader_timeout_s=ws.float("slow_reader_timeout", 30.0, minimum=0.0),
            max_requests_in_flight=ws.int("max_requests_in_flight", 32, minimum=1, maximum=10_000),
            recent_events_per_room=s.int("recent_events_per_room", 64, minimum=1, maximum=10_000),
        )
