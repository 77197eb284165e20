"""Events: format checks, content and reference hashes, event IDs, redaction.

A PDU is a plain ``dict`` in federation form. :class:`Event` wraps one with
the room version needed to interpret it; the wrapped dict is never mutated.
Algorithms follow ``server-server-api.md`` ("Signing Events") and the room
version specs ("Redactions", "Event IDs", "Event format").
"""

from __future__ import annotations

import copy
import hashlib
import re
from typing import Any, Mapping

from canonicaljson import encode_canonical_json
from unpaddedbase64 import encode_base64

from homeserver.core.ids import (
    MAX_ID_BYTES,
    is_valid_event_id,
    is_valid_room_id,
    is_valid_user_id,
    server_name_is_valid,
)
from homeserver.core.room_versions import RoomVersion

MAX_EVENT_SIZE = 65536
MAX_PREV_EVENTS = 20
MAX_AUTH_EVENTS = 10
CANONICAL_INT_MAX = 2**53 - 1

_V12_ROOM_ID_RE = re.compile(r"![A-Za-z0-9_\-]{43}")


class EventFormatError(ValueError):
    """The PDU does not follow the room version's event format."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- hashing -----------------------------------------------------------------


def compute_content_hash(pdu: Mapping[str, Any]) -> str:
    """The unpadded-base64 SHA-256 content hash of a PDU.

    Covers the whole event except ``unsigned``, ``signatures`` and ``hashes``
    (other servers may change the first; the other two depend on the hash).
    """
    stripped = {k: v for k, v in pdu.items() if k not in ("unsigned", "signatures", "hashes")}
    return encode_base64(hashlib.sha256(encode_canonical_json(stripped)).digest())


def check_content_hash(pdu: Mapping[str, Any]) -> bool:
    """Whether ``pdu['hashes']['sha256']`` matches the recomputed content hash."""
    hashes = pdu.get("hashes")
    if not isinstance(hashes, dict):
        return False
    expected = hashes.get("sha256")
    if not isinstance(expected, str):
        return False
    # Senders may pad their base64; compare without the padding.
    return expected.rstrip("=") == compute_content_hash(pdu)


def compute_reference_hash(pdu: Mapping[str, Any], room_version: RoomVersion) -> bytes:
    """SHA-256 over the redacted event minus ``signatures`` and ``unsigned``."""
    redacted = redact_pdu(pdu, room_version)
    redacted.pop("signatures", None)
    redacted.pop("unsigned", None)
    return hashlib.sha256(encode_canonical_json(redacted)).digest()


def compute_event_id(pdu: Mapping[str, Any], room_version: RoomVersion) -> str:
    """The event ID of a PDU in a hash-ID room version (v3+).

    Raises:
        ValueError: for v1/v2 rooms, whose IDs are chosen by the origin server.
    """
    fmt = room_version.event_id_format
    if fmt == "v1":
        raise ValueError("room versions with v1 event IDs carry event_id in the PDU")
    return "$" + encode_base64(compute_reference_hash(pdu, room_version), urlsafe=(fmt == "v4"))


def room_id_from_create_event(pdu: Mapping[str, Any], room_version: RoomVersion) -> str:
    """The room ID implied by a v12+ ``m.room.create`` PDU: ``!`` + its hash."""
    if not room_version.room_id_from_create_event:
        raise ValueError(f"room version {room_version.identifier} has server-chosen room IDs")
    return "!" + compute_event_id(pdu, room_version)[1:]


# --- redaction ---------------------------------------------------------------

_KEEP_TOP_LEVEL_V1 = frozenset(
    (
        "event_id", "type", "room_id", "sender", "state_key", "content", "hashes",
        "signatures", "depth", "prev_events", "prev_state", "auth_events", "origin",
        "origin_server_ts", "membership",
    )
)
# v11 stops protecting the legacy top-level origin, membership and prev_state.
_KEEP_TOP_LEVEL_V11 = _KEEP_TOP_LEVEL_V1 - {"origin", "membership", "prev_state"}

_PL_KEYS = ("ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default")


def _kept_content(event_type: str, content: Mapping[str, Any], rv: RoomVersion) -> dict[str, Any]:
    """The part of ``content`` that survives redaction for this event type."""
    keys: tuple[str, ...]
    if event_type == "m.room.member":
        keys = ("membership", "join_authorised_via_users_server") if rv.redaction_keeps_authorising_user else ("membership",)
        kept = {k: content[k] for k in keys if k in content}
        if rv.updated_redaction_rules:
            tpi = content.get("third_party_invite")
            if isinstance(tpi, dict) and "signed" in tpi:
                kept["third_party_invite"] = {"signed": tpi["signed"]}
        return kept
    if event_type == "m.room.create":
        if rv.updated_redaction_rules:
            return dict(content)
        keys = ("creator",)
    elif event_type == "m.room.join_rules":
        keys = ("join_rule", "allow") if rv.restricted_join_rule else ("join_rule",)
    elif event_type == "m.room.power_levels":
        keys = _PL_KEYS + ("invite",) if rv.updated_redaction_rules else _PL_KEYS
    elif event_type == "m.room.history_visibility":
        keys = ("history_visibility",)
    elif event_type == "m.room.aliases" and rv.special_case_aliases_auth:
        keys = ("aliases",)
    elif event_type == "m.room.redaction" and rv.updated_redaction_rules:
        keys = ("redacts",)
    else:
        return {}
    return {k: content[k] for k in keys if k in content}


def redact_pdu(pdu: Mapping[str, Any], room_version: RoomVersion) -> dict[str, Any]:
    """Apply the room version's redaction algorithm, returning a new dict.

    Top-level keys outside the protected list (including ``unsigned``) are
    dropped; ``hashes`` and ``signatures`` are kept, as the spec lists them.
    Redacting an already redacted PDU returns an equal dict.
    """
    keep = _KEEP_TOP_LEVEL_V11 if room_version.updated_redaction_rules else _KEEP_TOP_LEVEL_V1
    redacted = {k: copy.deepcopy(v) for k, v in pdu.items() if k in keep and k != "content"}
    content = pdu.get("content")
    redacted["content"] = copy.deepcopy(
        _kept_content(pdu.get("type", ""), content if isinstance(content, dict) else {}, room_version)
    )
    return redacted


# --- format checks -----------------------------------------------------------


def _check_canonical_values(value: Any, path: str = "") -> None:
    """Reject floats and out-of-range integers, recursively (v6+ rooms)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if not -CANONICAL_INT_MAX <= value <= CANONICAL_INT_MAX:
            raise EventFormatError(f"integer at {path or '<root>'} is outside the canonical JSON range")
        return
    if isinstance(value, float):
        raise EventFormatError(f"float at {path or '<root>'} is not allowed in canonical JSON")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_canonical_values(v, f"{path}.{k}" if path else str(k))
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_canonical_values(v, f"{path}[{i}]")
        return
    raise EventFormatError(f"value at {path or '<root>'} is not JSON")


def _byte_len(s: str) -> int:
    return len(s.encode("utf-8"))


def _check_event_refs(pdu: Mapping[str, Any], key: str, limit: int, rv: RoomVersion) -> None:
    refs = pdu[key]
    if not isinstance(refs, list):
        raise EventFormatError(f"{key} must be a list")
    if len(refs) > limit:
        raise EventFormatError(f"{key} has {len(refs)} entries; at most {limit} are allowed")
    for ref in refs:
        if rv.event_id_format == "v1":
            # v1/v2: [event_id, {"sha256": ...}] pairs.
            if not (isinstance(ref, list) and len(ref) == 2 and isinstance(ref[0], str) and isinstance(ref[1], dict)):
                raise EventFormatError(f"{key} entries must be [event_id, hashes] pairs")
            if not is_valid_event_id(ref[0]):
                raise EventFormatError(f"{key} contains an invalid event ID")
        elif not is_valid_event_id(ref):
            raise EventFormatError(f"{key} contains an invalid event ID")


def check_event_format(pdu: Mapping[str, Any], room_version: RoomVersion) -> None:
    """Check a PDU against the room version's event format.

    Raises:
        EventFormatError: describing the first problem found.
    """
    if not isinstance(pdu, dict):
        raise EventFormatError("event is not a JSON object")
    rv = room_version
    required = ["sender", "origin_server_ts", "type", "content", "depth", "hashes", "signatures", "auth_events", "prev_events"]
    is_create = pdu.get("type") == "m.room.create" and pdu.get("state_key") == ""
    if rv.event_id_format == "v1":
        required.append("event_id")
    if rv.room_id_from_create_event and is_create:
        if "room_id" in pdu:
            raise EventFormatError("m.room.create events must not have a room_id in this room version")
    else:
        required.append("room_id")
    for key in required:
        if key not in pdu:
            raise EventFormatError(f"missing required key {key!r}")

    for key in ("type", "sender"):
        if not isinstance(pdu[key], str):
            raise EventFormatError(f"{key} must be a string")
    if _byte_len(pdu["type"]) > MAX_ID_BYTES:
        raise EventFormatError("type is longer than 255 bytes")
    if not is_valid_user_id(pdu["sender"]):
        raise EventFormatError("sender is not a valid user ID")
    if "state_key" in pdu:
        if not isinstance(pdu["state_key"], str):
            raise EventFormatError("state_key must be a string")
        if _byte_len(pdu["state_key"]) > MAX_ID_BYTES:
            raise EventFormatError("state_key is longer than 255 bytes")
    if "room_id" in pdu:
        room_id = pdu["room_id"]
        if not isinstance(room_id, str) or not is_valid_room_id(room_id):
            raise EventFormatError("room_id is not a valid room ID")
        if rv.room_id_from_create_event and not _V12_ROOM_ID_RE.fullmatch(room_id):
            raise EventFormatError("room_id must be '!' and a create event reference hash")
    if rv.event_id_format == "v1":
        event_id = pdu["event_id"]
        if not isinstance(event_id, str) or not is_valid_event_id(event_id) or ":" not in event_id:
            raise EventFormatError("event_id must look like $opaque:server")
        if not server_name_is_valid(event_id.split(":", 1)[1]):
            raise EventFormatError("event_id has an invalid server name")
    for key in ("content", "hashes", "signatures"):
        if not isinstance(pdu[key], dict):
            raise EventFormatError(f"{key} must be an object")
    if "unsigned" in pdu and not isinstance(pdu["unsigned"], dict):
        raise EventFormatError("unsigned must be an object")
    ts = pdu["origin_server_ts"]
    if not isinstance(ts, int) or isinstance(ts, bool):
        raise EventFormatError("origin_server_ts must be an integer")
    depth = pdu["depth"]
    if not isinstance(depth, int) or isinstance(depth, bool) or not 0 <= depth <= rv.max_depth:
        raise EventFormatError(f"depth must be an integer between 0 and {rv.max_depth}")
    _check_event_refs(pdu, "prev_events", MAX_PREV_EVENTS, rv)
    _check_event_refs(pdu, "auth_events", MAX_AUTH_EVENTS, rv)
    if pdu["type"] == "m.room.redaction":
        redacts = pdu["content"].get("redacts") if rv.redacts_in_content else pdu.get("redacts")
        if redacts is not None and not isinstance(redacts, str):
            raise EventFormatError("redacts must be an event ID")

    if rv.strict_canonical_json:
        _check_canonical_values(pdu)
    # The limit covers the federation form including signatures; unsigned is
    # excluded because relaying servers may add to it (e.g. age).
    measured = {k: v for k, v in pdu.items() if k != "unsigned"}
    if len(encode_canonical_json(measured)) > MAX_EVENT_SIZE:
        raise EventFormatError(f"event is larger than {MAX_EVENT_SIZE} bytes")


# --- the Event class ---------------------------------------------------------


def _ref_ids(refs: Any, rv: RoomVersion) -> list[str]:
    if not refs:
        return []
    if rv.event_id_format == "v1":
        return [r[0] for r in refs]
    # The PDU's own list, not a copy (one list less per event held in memory):
    # events are immutable, nothing appends to either.
    return refs if type(refs) is list else list(refs)


class Event:
    """A PDU with its room version, event ID and parsed common fields.

    The fields are plain attributes (set once, read many times: auth reads
    them on every send). Treat instances as immutable; ``unsigned`` is a
    separate, mutable dict because it is not covered by hashes or signatures.

    Args:
        pdu: The event in federation form; it is kept as is, never mutated.
        room_version: The version of the room the event belongs to.
        event_id: The ID, when already known (e.g. loaded from storage). For
            v3+ rooms it is computed from the reference hash when omitted;
            for v1/v2 rooms it defaults to ``pdu["event_id"]``.
        rejected_reason: Set when the event was rejected by auth; state
            resolution skips rejected auth events.
    """

    __slots__ = (
        "pdu", "room_version", "event_id", "room_id", "type", "state_key", "sender",
        "content", "depth", "origin_server_ts", "prev_event_ids", "auth_event_ids",
        "redacts", "unsigned", "rejected_reason",
    )

    pdu: dict[str, Any]
    room_version: RoomVersion
    event_id: str
    room_id: str
    type: str
    state_key: str | None
    sender: str
    content: dict[str, Any]
    depth: int
    origin_server_ts: int
    prev_event_ids: list[str]
    auth_event_ids: list[str]
    redacts: str | None
    unsigned: dict[str, Any]
    rejected_reason: str | None

    def __init__(
        self,
        pdu: dict[str, Any],
        room_version: RoomVersion,
        event_id: str | None = None,
        *,
        rejected_reason: str | None = None,
    ) -> None:
        self.pdu = pdu
        self.room_version = room_version
        if event_id is None:
            if room_version.event_id_format == "v1":
                event_id = pdu["event_id"]
            else:
                event_id = compute_event_id(pdu, room_version)
        self.event_id = event_id
        self.type = pdu["type"]
        self.state_key = pdu.get("state_key")
        self.sender = pdu["sender"]
        self.content = pdu.get("content") or {}
        room_id = pdu.get("room_id")
        if room_id is None and room_version.room_id_from_create_event and self.type == "m.room.create":
            room_id = "!" + event_id[1:]
        # check_event_format guarantees a room ID; "" only for malformed input.
        self.room_id = room_id if isinstance(room_id, str) else ""
        self.depth = pdu.get("depth", 0)
        self.origin_server_ts = pdu.get("origin_server_ts", 0)
        self.prev_event_ids = _ref_ids(pdu.get("prev_events"), room_version)
        self.auth_event_ids = _ref_ids(pdu.get("auth_events"), room_version)
        if self.type == "m.room.redaction":
            r = self.content.get("redacts") if room_version.redacts_in_content else pdu.get("redacts")
            self.redacts = r if isinstance(r, str) else None
        else:
            self.redacts = None
        self.unsigned = dict(pdu.get("unsigned") or {})
        self.rejected_reason = rejected_reason

    def is_state(self) -> bool:
        return self.state_key is not None

    @property
    def membership(self) -> str | None:
        """``content.membership`` for member events, else None."""
        m = self.content.get("membership")
        return m if isinstance(m, str) else None

    @property
    def signatures(self) -> dict[str, dict[str, str]]:
        return self.pdu.get("signatures") or {}

    @property
    def hashes(self) -> dict[str, str]:
        return self.pdu.get("hashes") or {}

    @property
    def rejected(self) -> bool:
        return self.rejected_reason is not None

    def get_pdu_json(self) -> dict[str, Any]:
        """A fresh copy of the federation form, with the current ``unsigned``."""
        out = {k: copy.deepcopy(v) for k, v in self.pdu.items() if k != "unsigned"}
        if self.room_version.event_id_format == "v1":
            out["event_id"] = self.event_id
        if self.unsigned:
            out["unsigned"] = copy.deepcopy(self.unsigned)
        return out

    def redacted(self) -> "Event":
        """A new Event holding the redacted PDU (same event ID)."""
        return Event(redact_pdu(self.pdu, self.room_version), self.room_version, self.event_id,
                     rejected_reason=self.rejected_reason)

    def __repr__(self) -> str:
        sk = f", state_key={self.state_key!r}" if self.state_key is not None else ""
        return f"<Event {self.event_id} {self.type}{sk} from {self.sender}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and other.event_id == self.event_id

    def __hash__(self) -> int:
        return hash(self.event_id)
