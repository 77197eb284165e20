"""Create a room (a group): POST /createRoom.

All the initial events (create, the creator's join, power levels, canonical
alias, preset state, initial_state, name, topic, local invites) are built
in order on a fresh in-memory room and persisted in ONE transaction.

Default power levels (docs/rooms.md): the creator is the owner at 100;
admins are 50. ``invite`` is 0 in every preset, because WeChat lets any
group member invite; kick, ban, redact, state_default and
notifications.room are 50; events_default 0. Sensitive state
(power levels, history visibility, encryption, server ACL, tombstone)
needs 100. In v12+ rooms the creator has unbounded power by the room
version and must not appear in ``users``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from homeserver.api.errors import MatrixError
from homeserver.core.events import Event
from homeserver.core.ids import is_valid_room_alias, is_valid_user_id
from homeserver.core.room_versions import UnsupportedRoomVersion, get_room_version
from homeserver.rooms.membership import MembershipService, stripped_state
from homeserver.rooms.persist import EventContext
from homeserver.rooms.send import EventSender
from homeserver.rooms.state_cache import RoomState
from homeserver.storage.rooms import RoomStore
from homeserver.util.clock import Clock
from homeserver.util.ids import new_room_id

PRESETS = {
    "private_chat": {"join_rule": "invite", "history_visibility": "shared", "guest_access": "can_join"},
    "trusted_private_chat": {"join_rule": "invite", "history_visibility": "shared", "guest_access": "can_join"},
    "public_chat": {"join_rule": "public", "history_visibility": "shared", "guest_access": "forbidden"},
}
MAX_INITIAL_STATE = 100
MAX_INVITES = 500


def default_power_levels(creator: str, creator_in_users: bool) -> dict[str, Any]:
    return {
        "users": {creator: 100} if creator_in_users else {},
        "users_default": 0,
        "events": {
            "m.room.name": 50, "m.room.avatar": 50, "m.room.topic": 50, "m.room.canonical_alias": 50,
            "m.room.pinned_events": 50,
            "m.room.power_levels": 100, "m.room.history_visibility": 100, "m.room.encryption": 100,
            "m.room.server_acl": 100, "m.room.tombstone": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
        "notifications": {"room": 50},
    }


@dataclass
class CreateRoomRequest:
    """The parsed body of POST /createRoom."""

    preset: str | None = None
    visibility: str = "private"
    room_alias_name: str | None = None
    name: str | None = None
    topic: str | None = None
    invite: list[str] = field(default_factory=list)
    is_direct: bool = False
    initial_state: list[dict[str, Any]] = field(default_factory=list)
    power_level_content_override: dict[str, Any] | None = None
    creation_content: dict[str, Any] = field(default_factory=dict)
    room_version: str | None = None


class RoomCreator:
    def __init__(self, server_name: str, default_room_version: str, sender: EventSender,
                 membership: MembershipService, rooms: RoomStore, clock: Clock) -> None:
        self.server_name = server_name
        self.default_room_version = default_room_version
        self.sender = sender
        self.membership = membership
        self.rooms = rooms
        self.clock = clock
        #: The same hooks as :class:`~homeserver.rooms.directory.Directory` has, for ``room_alias_name``.
        self.alias_checks: list[Callable[[str, Any], None]] = []
        self.alias_listeners: list[Callable[[str, str | None], None]] = []

    async def create(self, creator: str, req: CreateRoomRequest, appservice: Any = None) -> tuple[str, str | None]:
        """Create the room; returns ``(room_id, alias or None)``.

        Args:
            appservice: The application service creating it (for alias namespace checks).
        """
        try:
            rv = get_room_version(req.room_version or self.default_room_version)
        except UnsupportedRoomVersion:
            raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION",
                              f"Room version {req.room_version!r} is not supported") from None
        preset = req.preset or ("public_chat" if req.visibility == "public" else "private_chat")
        if preset not in PRESETS:
            raise MatrixError(400, "M_INVALID_PARAM", f"Unknown preset {preset!r}")
        for user in req.invite:
            if not is_valid_user_id(user):
                raise MatrixError(400, "M_INVALID_PARAM", f"Invalid user ID in invite: {user!r}")
        alias = None
        if req.room_alias_name is not None:
            if not req.room_alias_name or any(c in req.room_alias_name for c in ":# \t\n") \
                    or len(req.room_alias_name) > 200:
                raise MatrixError(400, "M_INVALID_PARAM", "Invalid room_alias_name")
            alias = f"#{req.room_alias_name}:{self.server_name}"
            if not is_valid_room_alias(alias):
                raise MatrixError(400, "M_INVALID_PARAM", "Invalid room_alias_name")
            for check in self.alias_checks:
                check(alias, appservice)
            if await self.rooms.get_alias(alias) is not None:
                raise MatrixError(400, "M_ROOM_IN_USE", "Room alias already taken")

        # m.room.create
        content = dict(req.creation_content)
        content["room_version"] = rv.identifier
        if not rv.implicit_room_creator:
            content["creator"] = creator
        else:
            content.pop("creator", None)
        builder = self.sender.builder
        create = builder.build_create(rv, None if rv.room_id_from_create_event else new_room_id(self.server_name),
                                      creator, content)
        room = RoomState(create.room_id, rv)
        room.reserve(create)
        events: list[Event] = [create]

        def add(etype: str, content: dict[str, Any], state_key: str = "") -> Event:
            ev = builder.build(room, etype, creator, content, state_key)
            room.reserve(ev)
            events.append(ev)
            return ev

        add("m.room.member", {"membership": "join", **await self.membership.profile_content(creator)},
            creator)
        pl = default_power_levels(creator, not rv.creators_have_infinite_power)
        if preset == "trusted_private_chat":
            for user in req.invite:
                pl["users"][user] = 100
        if req.power_level_content_override:
            pl.update(req.power_level_content_override)
        add("m.room.power_levels", pl)
        if alias is not None:
            add("m.room.canonical_alias", {"alias": alias})
        initial = {(e["type"], e.get("state_key", "")): e.get("content", {}) for e in req.initial_state}
        p = PRESETS[preset]
        for etype, key, value in (("m.room.join_rules", "join_rule", p["join_rule"]),
                                  ("m.room.history_visibility", "history_visibility", p["history_visibility"]),
                                  ("m.room.guest_access", "guest_access", p["guest_access"])):
            if (etype, "") not in initial:
                add(etype, {key: value})
        for (etype, key), c in initial.items():
            add(etype, c, key)
        if req.name is not None:
            add("m.room.name", {"name": req.name})
        if req.topic is not None:
            add("m.room.topic", {"topic": req.topic, "m.topic": [{"mimetype": "text/plain", "body": req.topic}]})
        local_invites = [u for u in req.invite if self.membership.is_mine(u)]
        for user in local_invites:
            invite: dict[str, Any] = {"membership": "invite", **await self.membership.profile_content(user)}
            if req.is_direct:
                invite["is_direct"] = True
            ev = add("m.room.member", invite, user)
            ev.unsigned["invite_room_state"] = stripped_state(room, [events[1]])
        self.sender.cache.put(room)
        try:
            await self.sender.persister.persist([EventContext(e, local=True) for e in events])
        except Exception:
            self.sender.cache.forget([room.room_id])
            raise
        if req.visibility == "public":
            await self.rooms.set_public(room.room_id, True)
        if alias is not None:
            if await self.rooms.create_alias(alias, room.room_id, creator, [self.server_name]):
                for listener in self.alias_listeners:
                    listener(alias, room.room_id)
        for user in req.invite:
            if not self.membership.is_mine(user):
                await self.membership.invite(creator, room.room_id, user, is_direct=req.is_direct)
        return room.room_id, alias
