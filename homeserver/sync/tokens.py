"""Token formats shared by /sync and /messages, so the two interoperate.

* :class:`StreamToken` is /sync's ``next_batch``: one integer per stream,
  ``s<events>_<typing>_<receipts>_<account_data>_<to_device>_<presence>_<device_lists>``.
  A bare ``s<events>`` parses too (the other positions are 0).
* :class:`RoomPaginationToken` is a position in one room's timeline:
  ``t<topological>-<stream>`` (a position between events in /messages order;
  the stream part is negative among history backfilled from other servers)
  or ``s<stream>`` (a /sync position; /messages turns it into a topological
  position with the room's events).

/messages ``from`` and ``to`` accept both kinds, including a full /sync
token (only its events position matters there).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace

from homeserver.api.errors import MatrixError

_INT = re.compile(r"^(0|[1-9][0-9]{0,18})$")


def _bad(token: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", f"Invalid pagination token {token[:64]!r}")


def _int(part: str, token: str, signed: bool = False) -> int:
    digits = part[1:] if signed and part.startswith("-") and part != "-0" else part
    if not _INT.match(digits):
        raise _bad(token)
    return int(part)


@dataclass(frozen=True)
class StreamToken:
    """A /sync position: one integer per stream."""

    events: int = 0
    typing: int = 0
    receipts: int = 0
    account_data: int = 0
    to_device: int = 0
    presence: int = 0
    device_lists: int = 0

    @classmethod
    def parse(cls, token: str) -> "StreamToken":
        # Every member of a busy group comes back with the same since: parse it once.
        parsed = _PARSED.get(token) if isinstance(token, str) else None
        if parsed is not None:
            return parsed
        if not isinstance(token, str) or not token.startswith("s") or len(token) > 200:
            raise _bad(str(token))
        parts = token[1:].split("_")
        if len(parts) > len(fields(cls)):
            raise _bad(token)
        parsed = cls(*(_int(p, token) for p in parts))
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[token] = parsed
        return parsed

    def __str__(self) -> str:
        # Every woken connection formats the same token: remember the string.
        text: str | None = self.__dict__.get("_text")
        if text is None:
            text = "s" + "_".join(str(getattr(self, name)) for name in STREAMS)
            object.__setattr__(self, "_text", text)
        return text

    def copy_and_replace(self, **positions: int) -> "StreamToken":
        return replace(self, **positions)


_PARSED: dict[str, StreamToken] = {}
_PARSED_MAX = 4096

#: The stream names of a :class:`StreamToken`, in token order.
STREAMS = tuple(f.name for f in fields(StreamToken))


@dataclass(frozen=True)
class RoomPaginationToken:
    """A position in a room timeline: topological (``t``) or stream-only (``s``).

    ``topological`` is None for an ``s`` token. Positions are *between*
    events: paging backwards from ``(t, s)`` returns events at or before it,
    forwards returns events after it.
    """

    topological: int | None
    stream: int

    @classmethod
    def parse(cls, token: str) -> "RoomPaginationToken":
        if not isinstance(token, str) or len(token) > 200:
            raise _bad(str(token))
        if token.startswith("t"):
            topo, sep, stream = token[1:].partition("-")
            if not sep:
                raise _bad(token)
            # Backfilled events have negative stream orderings: "t12--40".
            return cls(_int(topo, token), _int(stream, token, signed=True))
        if token.startswith("s"):
            return cls(None, StreamToken.parse(token).events)
        raise _bad(token)

    def __str__(self) -> str:
        if self.topological is None:
            return f"s{self.stream}"
        return f"t{self.topological}-{self.stream}"
