"""Room versions as data.

Each room version is a frozen record of rule flags. Code elsewhere in the
core branches on these flags, never on the version string, so that a new
room version is a one-line ``replace`` here plus whatever new flag it needs.

The flags and the version they first appear in come from the room version
specifications (``content/rooms/v1.md`` .. ``v12.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

EventIdFormat = Literal["v1", "v3", "v4"]
StateResAlgorithm = Literal["v1", "v2", "v2.1"]


class UnsupportedRoomVersion(KeyError):
    """Raised by :func:`get_room_version` for an identifier we do not know."""

    def __init__(self, identifier: str) -> None:
        super().__init__(identifier)
        self.identifier = identifier

    def __str__(self) -> str:
        return f"Unsupported room version: {self.identifier!r}"


@dataclass(frozen=True)
class RoomVersion:
    """The rules that differ between room versions.

    Attributes:
        identifier: The version string used in ``m.room.create`` content.
        stable: Whether the spec lists the version as stable.
        event_id_format: ``"v1"``: the PDU carries ``event_id`` as
            ``$opaque:server`` and prev/auth events are ``[id, hashes]``
            pairs (v1, v2). ``"v3"``: the ID is ``$`` plus the standard
            unpadded base64 reference hash (v3). ``"v4"``: the same hash
            in URL-safe unpadded base64 (v4+).
        state_res: ``"v1"`` (room v1), ``"v2"`` (v2-v11) or ``"v2.1"``
            (v12: iterative auth checks start from an empty state and the
            full conflicted set includes the conflicted state subgraph).
        enforce_key_validity: v5+: a signing key's ``valid_until_ts`` must
            cover the event's ``origin_server_ts``. The core only reports
            the flag; the keyring enforces it.
        special_case_aliases_auth: v1-v5: auth rule 4 for ``m.room.aliases``
            (state_key must be the sender's domain) and the redaction
            algorithm keeps ``content.aliases``. Both dropped in v6.
        strict_canonical_json: v6+: events must be valid canonical JSON
            (integers within +-(2**53-1), no floats); depth is capped at
            2**53-1. Before v6 floats/strings in power levels are tolerated.
        limit_notifications_power_levels: v6+: the power levels auth rule
            also checks changes to ``notifications``.
        knock_join_rule: v7+: the ``knock`` join rule and ``knock``
            membership exist.
        restricted_join_rule: v8+: the ``restricted`` join rule and
            ``join_authorised_via_users_server`` exist; redaction keeps
            ``allow`` in ``m.room.join_rules``.
        redaction_keeps_authorising_user: v9+: redaction keeps
            ``join_authorised_via_users_server`` in ``m.room.member``.
        knock_restricted_join_rule: v10+: the ``knock_restricted`` join rule.
        integer_power_levels: v10+: power level values must be integers
            (no string or float values).
        implicit_room_creator: v11+: ``m.room.create`` has no ``creator``;
            the creator is the create event's ``sender``.
        updated_redaction_rules: v11+: the v11 redaction algorithm (top-level
            ``origin``/``membership``/``prev_state`` no longer kept; create
            keeps all content; power levels keep ``invite``; redaction keeps
            ``redacts``; member keeps ``third_party_invite.signed``).
        redacts_in_content: v11+: ``m.room.redaction`` carries ``redacts``
            in ``content`` rather than at the top level.
        redaction_checked_by_auth_rules: v1, v2: auth rule 11 checks
            ``m.room.redaction`` (redact level or same event-ID domain). In
            v3+ the check moved to "handling redactions", outside auth.
        room_id_from_create_event: v12+: the room ID is ``!`` plus the
            create event's reference hash; create events carry no
            ``room_id`` and are never listed in ``auth_events``.
        creators_have_infinite_power: v12+: the create event's sender and
            ``content.additional_creators`` outrank every power level and
            may not appear in ``m.room.power_levels`` ``users``.
    """

    identifier: str
    stable: bool = True
    event_id_format: EventIdFormat = "v1"
    state_res: StateResAlgorithm = "v1"
    enforce_key_validity: bool = False
    special_case_aliases_auth: bool = True
    strict_canonical_json: bool = False
    limit_notifications_power_levels: bool = False
    knock_join_rule: bool = False
    restricted_join_rule: bool = False
    redaction_keeps_authorising_user: bool = False
    knock_restricted_join_rule: bool = False
    integer_power_levels: bool = False
    implicit_room_creator: bool = False
    updated_redaction_rules: bool = False
    redacts_in_content: bool = False
    redaction_checked_by_auth_rules: bool = True
    room_id_from_create_event: bool = False
    creators_have_infinite_power: bool = False

    @property
    def msc2176_redaction_rules(self) -> bool:
        """Alias of :attr:`updated_redaction_rules` (the MSC's name)."""
        return self.updated_redaction_rules

    @property
    def max_depth(self) -> int:
        """Largest allowed ``depth``: 2**53-1 with canonical JSON, else 2**63-1."""
        return 2**53 - 1 if self.strict_canonical_json else 2**63 - 1

    @property
    def create_event_in_auth_events(self) -> bool:
        """Whether events cite ``m.room.create`` in ``auth_events``."""
        return not self.room_id_from_create_event


V1 = RoomVersion("1")
V2 = replace(V1, identifier="2", state_res="v2")
V3 = replace(V2, identifier="3", event_id_format="v3", redaction_checked_by_auth_rules=False)
V4 = replace(V3, identifier="4", event_id_format="v4")
V5 = replace(V4, identifier="5", enforce_key_validity=True)
V6 = replace(
    V5,
    identifier="6",
    special_case_aliases_auth=False,
    strict_canonical_json=True,
    limit_notifications_power_levels=True,
)
V7 = replace(V6, identifier="7", knock_join_rule=True)
V8 = replace(V7, identifier="8", restricted_join_rule=True)
V9 = replace(V8, identifier="9", redaction_keeps_authorising_user=True)
V10 = replace(V9, identifier="10", knock_restricted_join_rule=True, integer_power_levels=True)
V11 = replace(
    V10,
    identifier="11",
    implicit_room_creator=True,
    updated_redaction_rules=True,
    redacts_in_content=True,
)
V12 = replace(
    V11,
    identifier="12",
    state_res="v2.1",
    room_id_from_create_event=True,
    creators_have_infinite_power=True,
)

KNOWN_ROOM_VERSIONS: dict[str, RoomVersion] = {
    v.identifier: v for v in (V1, V2, V3, V4, V5, V6, V7, V8, V9, V10, V11, V12)
}

DEFAULT_ROOM_VERSION = "10"


def get_room_version(identifier: str) -> RoomVersion:
    """Look up a room version by its identifier.

    Raises:
        UnsupportedRoomVersion: if the identifier is not one we implement.
    """
    try:
        return KNOWN_ROOM_VERSIONS[identifier]
    except (KeyError, TypeError):
        raise UnsupportedRoomVersion(identifier) from None
