"""The ``push`` config section."""
from __future__ import annotations

from dataclasses import dataclass

from homeserver.config import Section
from homeserver.push.pushers import PusherConfig


@dataclass(frozen=True)
class PushConfig:
    #: Seconds between evaluating an event and writing its notification rows (a batch).
    flush_delay_s: float = 0.5
    pushers: PusherConfig = PusherConfig()

    @classmethod
    def parse(cls, s: Section) -> "PushConfig":
        return cls(
            flush_delay_s=s.float("flush_delay", 0.5, minimum=0.0),
            pushers=PusherConfig(
                initial_backoff_s=s.float("initial_backoff", 1.0, minimum=0.001),
                max_backoff_s=s.float("max_backoff", 600.0, minimum=0.001),
                give_up_after_s=s.float("give_up_after", 86400.0, minimum=1.0),
                request_timeout_s=s.float("request_timeout", 30.0, minimum=0.1),
            ),
        )
