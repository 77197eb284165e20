"""JSON encoding used on the wire: compact, UTF-8, no NaN."""
from __future__ import annotations

import json
from typing import Any

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def dumps(value: Any) -> str:
    return _encoder.encode(value)


def dumps_bytes(value: Any) -> bytes:
    return _encoder.encode(value).encode("utf-8")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(data: bytes | str) -> Any:
    """Parse JSON strictly: NaN and Infinity are rejected, as canonical JSON requires."""
    return json.loads(data, parse_constant=_reject_constant)
