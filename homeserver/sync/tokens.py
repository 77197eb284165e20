"""Sync tokens: one integer position per stream.

``s<events>_<typing>_<receipts>_<account_data>_<to_device>_<presence>_<device_lists>``
(provisional copy; the rooms branch owns this module and its pagination token).
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from homeserver.api.errors import MatrixError

STREAMS = ("events", "typing", "receipts", "account_data", "to_device", "presence", "device_lists")


@dataclass(frozen=True)
class StreamToken:
    events: int = 0
    typing: int = 0
    receipts: int = 0
    account_data: int = 0
    to_device: int = 0
    presence: int = 0
    device_lists: int = 0

    def to_string(self) -> str:
        return "s" + "_".join(str(getattr(self, f.name)) for f in fields(self))

    __str__ = to_string

    @classmethod
    def parse(cls, value: str) -> "StreamToken":
        try:
            if not value.startswith("s"):
                raise ValueError(value)
            parts = [int(p) for p in value[1:].split("_")]
            if len(parts) != len(STREAMS) or any(p < 0 for p in parts):
                raise ValueError(value)
        except ValueError:
            raise MatrixError(400, "M_INVALID_PARAM", f"Invalid sync token {value[:64]!r}") from None
        return cls(*parts)

    def copy_and_replace(self, stream: str, position: int) -> "StreamToken":
        return replace(self, **{stream: position})
