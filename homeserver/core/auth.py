"""Event authorization rules for every room version.

The rules are in ``content/rooms/`` (``fragments/v1-auth-rules.md``,
``v3-auth-rules.md``, ``v8-auth-rules.md`` and the v6, v7, v10, v11 and v12
pages). Rule numbers in comments follow the v11 text; where a version
differs, the flag on :class:`RoomVersion` says so.

Two entry points:

* :func:`check_state_independent_auth` checks an event against the events
  it cites in ``auth_events`` (duplicates, selection, rejection, room IDs).
* :func:`check_auth` checks an event against a state map keyed by
  ``(type, state_key)``: the state before the event, the current state, or
  the event's own auth events, depending on which of the receipt checks the
  caller is doing.

Signature checks (including the ``join_authorised_via_users_server``
server's signature) belong to :mod:`homeserver.core.signing`; callers run
them first.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import nacl.exceptions
from canonicaljson import encode_canonical_json
from signedjson.key import decode_verify_key_bytes
from unpaddedbase64 import decode_base64

from homeserver.core.events import Event
from homeserver.core.ids import InvalidIdError, get_domain_from_id, is_valid_user_id
from homeserver.core.power_levels import SCALAR_KEYS, PowerLevels, parse_power_level, room_creators
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion

StateKey = tuple[str, str]

CREATE = "m.room.create"
MEMBER = "m.room.member"
POWER_LEVELS = "m.room.power_levels"
JOIN_RULES = "m.room.join_rules"
THIRD_PARTY_INVITE = "m.room.third_party_invite"
ALIASES = "m.room.aliases"
REDACTION = "m.room.redaction"

AUTH_EVENT_TYPES = frozenset((CREATE, MEMBER, POWER_LEVELS, JOIN_RULES, THIRD_PARTY_INVITE))


class AuthError(Exception):
    """The event is not allowed by the authorization rules.

    Attributes:
        reason: A human-readable explanation, fit to show a client.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _domain(user_or_event_id: str) -> str:
    try:
        return get_domain_from_id(user_or_event_id)
    except InvalidIdError:
        raise AuthError(f"{user_or_event_id!r} has no server name") from None


# --- auth events selection ---------------------------------------------------


def auth_types_for_event(
    event_type: str,
    sender: str,
    state_key: str | None,
    content: Mapping[str, Any],
    room_version: RoomVersion,
) -> list[StateKey]:
    """The state an event must cite in ``auth_events`` ("Auth events selection").

    Returns the ``(type, state_key)`` pairs in a fixed order without
    duplicates; the caller includes those present in the room state.
    """
    if event_type == CREATE:
        return []
    keys: list[StateKey] = []
    if room_version.create_event_in_auth_events:
        keys.append((CREATE, ""))
    keys.append((POWER_LEVELS, ""))
    keys.append((MEMBER, sender))
    if event_type == MEMBER and state_key is not None:
        membership = content.get("membership")
        if (MEMBER, state_key) not in keys:
            keys.append((MEMBER, state_key))
        if membership in ("join", "invite", "knock"):
            keys.append((JOIN_RULES, ""))
        if membership == "invite":
            tpi = content.get("third_party_invite")
            if isinstance(tpi, dict) and isinstance(tpi.get("signed"), dict):
                token = tpi["signed"].get("token")
                if isinstance(token, str):
                    keys.append((THIRD_PARTY_INVITE, token))
        if membership == "join" and room_version.restricted_join_rule:
            authoriser = content.get("join_authorised_via_users_server")
            if isinstance(authoriser, str) and (MEMBER, authoriser) not in keys:
                keys.append((MEMBER, authoriser))
    return keys


def state_map(events: Iterable[Event]) -> dict[StateKey, Event]:
    """Key state events by ``(type, state_key)`` (later ones win)."""
    return {(e.type, e.state_key): e for e in events if e.state_key is not None}


# --- state independent checks ----------------------------------------------------


def check_state_independent_auth(
    event: Event,
    auth_events: Mapping[str, Event],
    create_event: Event | None = None,
) -> None:
    """Checks that need only the event and the events it cites.

    Args:
        event: The event to check.
        auth_events: The events listed in ``event.auth_event_ids``, by ID.
            A missing entry means the caller could not fetch it.
        create_event: For v12+ rooms, the create event named by the room ID
            (it is never listed in ``auth_events``). Ignored before v12.

    Raises:
        AuthError: if a rule rejects the event.
    """
    rv = event.room_version
    if event.type == CREATE:
        _check_create(event)
        return
    seen: set[StateKey] = set()
    allowed = set(auth_types_for_event(event.type, event.sender, event.state_key, event.content, rv))
    found_create = False
    for eid in event.auth_event_ids:
        ae = auth_events.get(eid)
        if ae is None:
            raise AuthError(f"auth event {eid} is not known")
        key = (ae.type, ae.state_key or "")
        if ae.state_key is None or key in seen:
            raise AuthError(f"auth events list {key} more than once or cite a non-state event")
        seen.add(key)
        if key not in allowed:
            raise AuthError(f"auth event {eid} ({key}) is not one this event may cite")
        if ae.rejected:
            raise AuthError(f"auth event {eid} was rejected")
        if ae.room_id != event.room_id:
            raise AuthError(f"auth event {eid} belongs to another room")
        found_create = found_create or ae.type == CREATE
    if rv.room_id_from_create_event:
        _check_room_id_names_create(event, create_event)
    elif not found_create:
        raise AuthError("auth events do not include the room's create event")


def _check_room_id_names_create(event: Event, create_event: Event | None) -> None:
    # v12 rule 2: the room ID is the create event's ID with a "!" sigil.
    if create_event is None or create_event.type != CREATE or create_event.rejected:
        raise AuthError("the room's create event is unknown or was rejected")
    if event.room_id != "!" + create_event.event_id[1:]:
        raise AuthError("the room ID does not match the create event")


def _check_create(event: Event) -> None:
    """Rule 1: the create event."""
    rv = event.room_version
    if event.prev_event_ids:
        raise AuthError("the create event must be the first event in the room")
    if rv.room_id_from_create_event:
        if "room_id" in event.pdu:
            raise AuthError("the create event must not carry a room ID in this room version")
    elif _domain(event.room_id) != _domain(event.sender):
        raise AuthError("the room ID's server must be the creator's server")
    content = event.content
    if "room_version" in content and content["room_version"] not in KNOWN_ROOM_VERSIONS:
        raise AuthError(f"unknown room version {content['room_version']!r}")
    if not rv.implicit_room_creator and "creator" not in content:
        raise AuthError("the create event must name its creator")
    if rv.creators_have_infinite_power and "additional_creators" in content:
        extra = content["additional_creators"]
        if not isinstance(extra, list) or not all(isinstance(u, str) and is_valid_user_id(u) for u in extra):
            raise AuthError("additional_creators must be a list of user IDs")


# --- the main rules ------------------------------------------------------------


def check_auth(event: Event, auth_events: Mapping[StateKey, Event]) -> None:
    """Apply the authorization rules of ``event``'s room version.

    Args:
        event: The event to authorise.
        auth_events: Room state keyed by ``(type, state_key)``; only the
            keys from :func:`auth_types_for_event` are read, so passing the
            whole room state is fine (and cheap). For v12+ rooms it must
            include the create event even though events do not cite it.

    Raises:
        AuthError: if the event is not allowed.
    """
    rv = event.room_version
    if event.type == CREATE:
        _check_create(event)
        return

    create = auth_events.get((CREATE, ""))
    if create is None:
        raise AuthError("the room has no create event")
    if rv.room_id_from_create_event:
        _check_room_id_names_create(event, create)
    elif create.room_id != event.room_id:
        raise AuthError("the create event belongs to another room")

    sender = event.sender
    # Rule 3: m.federate = false keeps other servers out.
    if create.content.get("m.federate", True) is False and _domain(sender) != _domain(create.sender):
        raise AuthError("this room does not federate with your server")

    # Rule 4 (v1-v5 only): aliases are authorised by server, not by power.
    if event.type == ALIASES and rv.special_case_aliases_auth:
        if event.state_key is None:
            raise AuthError("m.room.aliases must be a state event")
        if event.state_key != _domain(sender):
            raise AuthError("m.room.aliases may only be set for your own server")
        return

    pl_event = auth_events.get((POWER_LEVELS, ""))
    levels = PowerLevels(
        pl_event.content if pl_event is not None else None, rv, room_creators(create, rv)
    )

    if event.type == MEMBER:
        _check_membership(event, auth_events, create, levels)
        return

    # Rule 6: everything else needs the sender to be in the room.
    sender_member = auth_events.get((MEMBER, sender))
    if sender_member is None or sender_member.content.get("membership") != "join":
        raise AuthError(f"{sender} is not in the room")

    sender_level = levels.user_level(sender)

    # Rule 7: third-party invites need the invite level.
    if event.type == THIRD_PARTY_INVITE:
        if sender_level < levels.invite:
            raise AuthError("you need a higher power level to invite users")
        return

    # Rule 8: the event type's required level.
    if levels.event_level(event.type, event.state_key is not None) > sender_level:
        raise AuthError(f"you need a higher power level to send {event.type} events")

    # Rule 9: state keyed by a user ID belongs to that user.
    if event.state_key is not None and event.state_key.startswith("@") and event.state_key != sender:
        raise AuthError("you cannot set state keyed by another user's ID")

    # Rule 10
    if event.type == POWER_LEVELS:
        _check_power_levels(event, pl_event, levels, sender_level, create)
        return

    # v1/v2 rule 11: redactions are checked here; later versions check them
    # when applying the redaction ("Handling redactions").
    if event.type == REDACTION and rv.redaction_checked_by_auth_rules:
        if sender_level >= levels.redact:
            return
        if event.redacts is not None and _domain(event.redacts) == _domain(event.event_id):
            return
        raise AuthError("you need a higher power level to redact other people's events")


# --- membership ------------------------------------------------------------------


def _membership_of(auth_events: Mapping[StateKey, Event], user_id: str) -> str:
    ev = auth_events.get((MEMBER, user_id))
    if ev is None:
        return "leave"
    m = ev.content.get("membership")
    return m if isinstance(m, str) else "leave"


def _check_membership(
    event: Event, auth_events: Mapping[StateKey, Event], create: Event, levels: PowerLevels
) -> None:
    """Rule 5: ``m.room.member`` events."""
    rv = event.room_version
    target = event.state_key
    membership = event.content.get("membership")
    if target is None or not isinstance(membership, str):
        raise AuthError("membership events need a state_key and content.membership")
    sender = event.sender
    target_membership = _membership_of(auth_events, target)

    if membership == "join":
        _check_join(event, auth_events, create, levels, target_membership)
        return

    sender_membership = _membership_of(auth_events, sender)
    sender_level = levels.user_level(sender)

    if membership == "invite":
        if "third_party_invite" in event.content:
            _check_third_party_invite(event, auth_events, target_membership)
            return
        if sender_membership != "join":
            raise AuthError("you must be in the room to invite")
        if target_membership in ("join", "ban"):
            raise AuthError(f"{target} is already in the room or banned")
        if sender_level < levels.invite:
            raise AuthError("you need a higher power level to invite users")
        return

    if membership == "leave":
        if sender == target:
            allowed = ("invite", "join", "knock") if rv.knock_join_rule else ("invite", "join")
            if target_membership not in allowed:
                raise AuthError("you cannot leave a room you are not in")
            return
        if sender_membership != "join":
            raise AuthError("you must be in the room to kick or unban")
        if target_membership == "ban" and sender_level < levels.ban:
            raise AuthError("you need a higher power level to unban users")
        if sender_level >= levels.kick and levels.user_level(target) < sender_level:
            return
        raise AuthError("you need a higher power level than the user to kick them")

    if membership == "ban":
        if sender_membership != "join":
            raise AuthError("you must be in the room to ban")
        if sender_level >= levels.ban and levels.user_level(target) < sender_level:
            return
        raise AuthError("you need a higher power level than the user to ban them")

    if membership == "knock" and rv.knock_join_rule:
        join_rule = _join_rule(auth_events)
        knockable = ("knock", "knock_restricted") if rv.knock_restricted_join_rule else ("knock",)
        if join_rule not in knockable:
            raise AuthError("this room does not accept knocks")
        if sender != target:
            raise AuthError("you cannot knock on behalf of another user")
        if sender_membership in ("ban", "invite", "join"):
            raise AuthError("you cannot knock while banned, invited or joined")
        return

    raise AuthError(f"unknown membership {membership!r}")


def _join_rule(auth_events: Mapping[StateKey, Event]) -> str:
    ev = auth_events.get((JOIN_RULES, ""))
    # Without a join rules event nobody may join uninvited.
    rule = ev.content.get("join_rule") if ev is not None else "invite"
    return rule if isinstance(rule, str) else "invite"


def _check_join(
    event: Event,
    auth_events: Mapping[StateKey, Event],
    create: Event,
    levels: PowerLevels,
    membership_now: str,
) -> None:
    rv = event.room_version
    sender = event.sender
    # 5.3.1: the creator's own join straight after the create event.
    if len(event.prev_event_ids) == 1 and event.prev_event_ids[0] == create.event_id:
        creator = create.sender if rv.implicit_room_creator else create.content.get("creator")
        if event.state_key == creator:
            return
    if sender != event.state_key:
        raise AuthError("you cannot join on behalf of another user")
    if membership_now == "ban":
        raise AuthError("you are banned from this room")
    join_rule = _join_rule(auth_events)
    if join_rule == "invite" or (join_rule == "knock" and rv.knock_join_rule):
        if membership_now in ("invite", "join"):
            return
        raise AuthError("you need an invite to join this room")
    if (join_rule == "restricted" and rv.restricted_join_rule) or (
        join_rule == "knock_restricted" and rv.knock_restricted_join_rule
    ):
        if membership_now in ("invite", "join"):
            return
        authoriser = event.content.get("join_authorised_via_users_server")
        if (
            not isinstance(authoriser, str)
            or _membership_of(auth_events, authoriser) != "join"
            or levels.user_level(authoriser) < levels.invite
        ):
            raise AuthError("the join must be authorised by a member who can invite")
        return
    if join_rule == "public":
        return
    raise AuthError(f"cannot join a room whose join rule is {join_rule!r}")


def _check_third_party_invite(
    event: Event, auth_events: Mapping[StateKey, Event], target_membership: str
) -> None:
    """Rule 5.4.1: an invite that redeems an ``m.room.third_party_invite``."""
    if target_membership == "ban":
        raise AuthError("the invited user is banned")
    tpi = event.content["third_party_invite"]
    signed = tpi.get("signed") if isinstance(tpi, dict) else None
    if not isinstance(signed, dict):
        raise AuthError("third_party_invite has no signed block")
    mxid, token = signed.get("mxid"), signed.get("token")
    if not isinstance(mxid, str) or not isinstance(token, str):
        raise AuthError("third_party_invite.signed needs mxid and token")
    if mxid != event.state_key:
        raise AuthError("third_party_invite.signed.mxid is not the invited user")
    invite_event = auth_events.get((THIRD_PARTY_INVITE, token))
    if invite_event is None:
        raise AuthError("no third-party invite matches the token")
    if invite_event.sender != event.sender:
        raise AuthError("only the user who made the third-party invite may complete it")
    if not _signed_by_any(signed, _public_keys(invite_event.content)):
        raise AuthError("third_party_invite.signed is not signed by the identity server")


def _public_keys(content: Mapping[str, Any]) -> list[str]:
    keys = []
    if isinstance(content.get("public_key"), str):
        keys.append(content["public_key"])
    for entry in content.get("public_keys") or []:
        if isinstance(entry, dict) and isinstance(entry.get("public_key"), str):
            keys.append(entry["public_key"])
    return keys


def _signed_by_any(signed: Mapping[str, Any], public_keys: list[str]) -> bool:
    signatures = signed.get("signatures")
    if not isinstance(signatures, dict) or not public_keys:
        return False
    message = encode_canonical_json({k: v for k, v in signed.items() if k not in ("signatures", "unsigned")})
    verify_keys = []
    for pk in public_keys:
        try:
            verify_keys.append(decode_verify_key_bytes("ed25519:0", decode_base64(pk)))
        except Exception:  # malformed key material: not a match
            continue
    for server_sigs in signatures.values():
        if not isinstance(server_sigs, dict):
            continue
        for key_name, sig in server_sigs.items():
            if not key_name.startswith("ed25519:") or not isinstance(sig, str):
                continue
            for vk in verify_keys:
                try:
                    vk.verify(message, decode_base64(sig))
                    return True
                except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
                    continue
    return False


# --- power levels ------------------------------------------------------------------


def _levels_map(value: Any, rv: RoomVersion, what: str) -> dict[str, int]:
    """Parse an ``events``/``notifications``/``users`` map, rejecting bad values."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise AuthError(f"power levels {what} must be an object")
    out = {}
    for k, v in value.items():
        level = parse_power_level(v, rv)
        if level is None:
            raise AuthError(f"power levels {what}[{k!r}] must be an integer")
        out[k] = level
    return out


def _check_power_levels(
    event: Event,
    old_event: Event | None,
    levels: PowerLevels,
    sender_level: int | float,
    create: Event,
) -> None:
    """Rule 10: changes to ``m.room.power_levels``."""
    rv = event.room_version
    new = event.content

    # 10.1 - 10.3: shape of the new content.
    new_scalars: dict[str, int] = {}
    for key in SCALAR_KEYS:
        if key in new:
            level = parse_power_level(new[key], rv)
            if level is None:
                raise AuthError(f"power levels {key} must be an integer")
            new_scalars[key] = level
    new_events = _levels_map(new.get("events"), rv, "events")
    new_notifs = _levels_map(new.get("notifications"), rv, "notifications") if rv.limit_notifications_power_levels else {}
    new_users = _levels_map(new.get("users"), rv, "users")
    for user in new_users:
        if not is_valid_user_id(user):
            raise AuthError(f"power levels users key {user!r} is not a user ID")

    # 10.4 (v12): creators are outside the power levels event.
    if rv.creators_have_infinite_power:
        creators = room_creators(create, rv)
        if any(u in creators for u in new_users):
            raise AuthError("room creators cannot be listed in power levels")

    # 10.5: the first power levels event is always allowed.
    if old_event is None:
        return
    old = old_event.content

    # Values in an already-accepted event are trusted to parse; drop any that don't.
    def old_map(key: str) -> dict[str, int]:
        raw = old.get(key)
        if not isinstance(raw, dict):
            return {}
        return {k: lv for k, v in raw.items() if (lv := parse_power_level(v, rv)) is not None}

    # 10.6: the scalar levels.
    for key in SCALAR_KEYS:
        old_v = parse_power_level(old[key], rv) if key in old else None
        new_v = new_scalars.get(key)
        if old_v == new_v:
            continue
        if old_v is not None and old_v > sender_level:
            raise AuthError(f"you cannot change {key} from a level above your own")
        if new_v is not None and new_v > sender_level:
            raise AuthError(f"you cannot set {key} above your own level")

    # 10.7 / 10.8: events and notifications.
    maps = [("events", old_map("events"), new_events)]
    if rv.limit_notifications_power_levels:
        maps.append(("notifications", old_map("notifications"), new_notifs))
    for what, old_m, new_m in maps:
        for k in old_m.keys() | new_m.keys():
            old_v, new_v = old_m.get(k), new_m.get(k)
            if old_v == new_v:
                continue
            if old_v is not None and old_v > sender_level:
                raise AuthError(f"you cannot change {what}[{k!r}] from a level above your own")
            if new_v is not None and new_v > sender_level:
                raise AuthError(f"you cannot set {what}[{k!r}] above your own level")

    # 10.9 / 10.10: users.
    old_users = old_map("users")
    for user in old_users.keys() | new_users.keys():
        old_v, new_v = old_users.get(user), new_users.get(user)
        if old_v == new_v:
            continue
        if old_v is not None and user != event.sender and old_v >= sender_level:
            raise AuthError(f"you cannot change the level of {user}, who is not below you")
        if new_v is not None and new_v > sender_level:
            raise AuthError(f"you cannot give {user} a level above your own")
