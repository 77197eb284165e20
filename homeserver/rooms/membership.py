"""Membership changes: join, invite, leave, kick, ban, unban, knock, forget.

Every change is an ``m.room.member`` event built and authorised like any
other (the auth rules decide; their reason becomes the M_FORBIDDEN message).

Joins to restricted rooms (room versions 8+) without an invite name a local
user who may invite in ``join_authorised_via_users_server`` once
:class:`~homeserver.rooms.restricted.RestrictedJoins` has found the joiner
in one of the allowed rooms.

Rooms this server is not in, and invites of users on other servers, need
another server: that is federation's job. It plugs in through the
:class:`RemoteMembership` protocol passed in by ``server.py`` (None when
federation is off, in which case such requests fail with a clear error).
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable, Protocol, Sequence

from homeserver.api.errors import MatrixError, forbidden, not_found
from homeserver.core.events import Event
from homeserver.core.ids import get_domain_from_id, is_valid_room_alias, is_valid_room_id, is_valid_user_id
from homeserver.rooms.restricted import RestrictedJoins
from homeserver.rooms.send import EventSender, not_in_room
from homeserver.rooms.state_cache import RoomState
from homeserver.storage.rooms import RoomStore
from homeserver.storage.state import StateStore

#: State copied (stripped) into unsigned.invite_room_state / knock_room_state.
STRIPPED_STATE_TYPES = ("m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
                        "m.room.canonical_alias", "m.room.encryption", "m.room.topic")


class RemoteMembership(Protocol):
    """What federation provides for membership changes needing another server."""

    async def join(self, user_id: str, room_id: str, servers: Sequence[str], content: dict[str, Any]) -> str:
        """make_join/send_join through one of ``servers``; returns the join event ID."""

    async def leave(self, user_id: str, room_id: str, servers: Sequence[str], content: dict[str, Any]) -> str:
        """Reject a remote invite / leave a room we only know through an invite."""

    async def knock(self, user_id: str, room_id: str, servers: Sequence[str], content: dict[str, Any]) -> str:
        """make_knock/send_knock through one of ``servers``."""

    async def invite(self, event: Event) -> Event:
        """Send an invite of a remote user to its server; returns the event with its signature."""

    async def resolve_alias(self, alias: str) -> tuple[str, list[str]] | None:
        """Query the alias's server: ``(room_id, servers)`` or None."""


class Profiles(Protocol):
    async def get_profile(self, user_id: str) -> tuple[str | None, str | None] | None: ...


def stripped_state(room: RoomState, extra: Sequence[Event] = ()) -> list[dict[str, Any]]:
    out = []
    for etype in STRIPPED_STATE_TYPES:
        ev = room.tip_get(etype)
        if ev is not None:
            out.append({"type": ev.type, "state_key": ev.state_key, "content": ev.content, "sender": ev.sender})
    for ev in extra:
        out.append({"type": ev.type, "state_key": ev.state_key, "content": ev.content, "sender": ev.sender})
    return out


class MembershipService:
    def __init__(self, server_name: str, sender: EventSender, state: StateStore, rooms: RoomStore,
                 profiles: Profiles, restricted: RestrictedJoins, remote: RemoteMembership | None = None) -> None:
        self.server_name = server_name
        self.sender = sender
        self.state = state
        self.rooms = rooms
        self.profiles = profiles
        self.remote = remote
        self.restricted = restricted
        #: ``async (alias) -> bool`` asked when a local alias is unknown; True means "look again"
        #: (application services create rooms on demand).
        self.alias_queries: list[Callable[[str], Awaitable[bool]]] = []
        #: ``async (user_id) -> None`` called before inviting a user, so an application service
        #: can create an unknown user of its namespace first.
        self.user_queries: list[Callable[[str], Awaitable[None]]] = []

    def is_mine(self, user_id: str) -> bool:
        return get_domain_from_id(user_id) == self.server_name

    async def profile_content(self, user_id: str) -> dict[str, Any]:
        if not self.is_mine(user_id):
            return {}
        profile = await self.profiles.get_profile(user_id)
        out: dict[str, Any] = {}
        if profile:
            if profile[0] is not None:
                out["displayname"] = profile[0]
            if profile[1] is not None:
                out["avatar_url"] = profile[1]
        return out

    async def resolve_room(self, room_id_or_alias: str, servers: Sequence[str] = ()) -> tuple[str, list[str]]:
        """A room ID (and servers to try) from a room ID or alias."""
        if is_valid_room_id(room_id_or_alias):
            return room_id_or_alias, list(servers)
        if not is_valid_room_alias(room_id_or_alias):
            raise MatrixError(400, "M_INVALID_PARAM", "Expected a room ID or a room alias")
        info = await self.rooms.get_alias(room_id_or_alias)
        if info is None and get_domain_from_id(room_id_or_alias) == self.server_name:
            for query in self.alias_queries:
                if await query(room_id_or_alias):
                    info = await self.rooms.get_alias(room_id_or_alias)
                    break
        if info is not None:
            return info.room_id, info.servers
        if get_domain_from_id(room_id_or_alias) != self.server_name and self.remote is not None:
            found = await self.remote.resolve_alias(room_id_or_alias)
            if found is not None:
                return found
        raise not_found(f"Room alias {room_id_or_alias} not found")

    async def join(self, user_id: str, room_id_or_alias: str, servers: Sequence[str] = (),
                   reason: str | None = None, extra: dict[str, Any] | None = None) -> str:
        """Join by room ID or alias; returns the room ID."""
        room_id, servers = await self.resolve_room(room_id_or_alias, servers)
        content: dict[str, Any] = {**(extra or {}), "membership": "join", **await self.profile_content(user_id)}
        if reason is not None:
            content["reason"] = reason
        room = await self.sender.cache.get(room_id)
        local_joined = room is not None and any(self.is_mine(u) for u in room.joined)
        if room is None or (not local_joined and self.remote is not None):
            if self.remote is None:
                raise not_found("No known servers for this room (federation is off).")
            await self.remote.join(user_id, room_id, self._remote_servers(room, servers)
                                   or [get_domain_from_id(room_id)], content)
            return room_id
        try:
            authoriser = await self.restricted.authorise(room, user_id)
        except MatrixError as e:
            others = self._remote_servers(room, servers)
            if e.errcode != "M_UNABLE_TO_GRANT_JOIN" or self.remote is None or not others:
                raise
            # None of our users may let them in; a resident server of the room may.
            await self.remote.join(user_id, room_id, others, content)
            return room_id
        if authoriser is not None:
            content["join_authorised_via_users_server"] = authoriser
        await self.sender.send(user_id, room_id, "m.room.member", content, state_key=user_id)
        return room_id

    def _remote_servers(self, room: RoomState | None, servers: Sequence[str]) -> list[str]:
        out = [s for s in servers if s != self.server_name]
        if room is not None:
            out += sorted({get_domain_from_id(u) for u in room.joined} - {self.server_name} - set(out))
        return out

    async def invite(self, sender: str, room_id: str, target: str, reason: str | None = None,
                     is_direct: bool = False) -> str:
        if not is_valid_user_id(target):
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid user ID")
        room = await self.sender.room_or_forbidden(room_id)
        for query in self.user_queries:
            await query(target)
        content: dict[str, Any] = {"membership": "invite", **await self.profile_content(target)}
        if reason is not None:
            content["reason"] = reason
        if is_direct:
            content["is_direct"] = True
        if room.membership(target) == "ban":
            raise forbidden(f"{target} is banned from the room.")
        if room.membership(target) == "join":
            raise forbidden(f"{target} is already in the room.")
        event = self.sender.builder.build(room, "m.room.member", sender, content, target)
        inviter = room.tip_get("m.room.member", sender)
        event.unsigned["invite_room_state"] = stripped_state(room, [inviter] if inviter is not None else [])
        if not self.is_mine(target):
            if self.remote is None:
                raise forbidden("Cannot invite users on other servers: federation is off.")
            event = await self.remote.invite(event)
            room = await self.sender.room_or_forbidden(room_id)
        return (await self.sender.persist_local(room, event)).event_id

    async def leave(self, user_id: str, room_id: str, reason: str | None = None) -> str | None:
        room = await self.sender.cache.get(room_id)
        membership = room.membership(user_id) if room is not None else None
        content: dict[str, Any] = {"membership": "leave"}
        if reason is not None:
            content["reason"] = reason
        if room is None or (membership == "invite" and not any(self.is_mine(u) for u in room.joined)):
            m = await self.state.get_membership(room_id, user_id)
            if m is None or m.membership not in ("invite", "knock"):
                raise not_in_room()
            if self.remote is None:
                raise forbidden("Cannot reject a remote invite: federation is off.")
            return await self.remote.leave(user_id, room_id, [get_domain_from_id(room_id)], content)
        if membership in (None, "leave") :
            raise not_in_room()
        if membership == "ban":
            raise forbidden("You are banned from this room.")
        return await self.sender.send(user_id, room_id, "m.room.member", content, state_key=user_id)

    async def set_membership(self, sender: str, room_id: str, target: str, membership: str,
                             reason: str | None = None) -> str:
        """kick (leave of another user), ban, unban (leave of a banned user)."""
        if not is_valid_user_id(target):
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid user ID")
        room = await self.sender.room_or_forbidden(room_id)
        current = room.membership(target)
        if membership == "leave" and sender != target and current not in ("join", "invite", "knock", "ban"):
            raise forbidden(f"{target} is not in the room.")
        content: dict[str, Any] = {"membership": membership}
        if reason is not None:
            content["reason"] = reason
        prev = room.tip_get("m.room.member", target)
        for key in ("displayname", "avatar_url"):
            if membership == "ban" and prev is not None and key in prev.content:
                content[key] = prev.content[key]
        return await self.sender.send(sender, room_id, "m.room.member", content, state_key=target)

    async def knock(self, user_id: str, room_id_or_alias: str, servers: Sequence[str] = (),
                    reason: str | None = None) -> str:
        room_id, servers = await self.resolve_room(room_id_or_alias, servers)
        content: dict[str, Any] = {"membership": "knock", **await self.profile_content(user_id)}
        if reason is not None:
            content["reason"] = reason
        room = await self.sender.cache.get(room_id)
        if room is None:
            if self.remote is None:
                raise not_found("No known servers for this room (federation is off).")
            await self.remote.knock(user_id, room_id, servers or [get_domain_from_id(room_id)], content)
            return room_id
        if not room.room_version.knock_join_rule:
            raise forbidden("This room version does not support knocking.")
        event = self.sender.builder.build(room, "m.room.member", user_id, content, user_id)
        event.unsigned["knock_room_state"] = stripped_state(room)
        await self.sender.persist_local(room, event)
        return room_id

    async def forget(self, user_id: str, room_id: str) -> None:
        m = await self.state.get_membership(room_id, user_id)
        if m is None:
            raise MatrixError(400, "M_UNKNOWN", "You have never been in this room.")
        if m.membership in ("join", "invite", "knock"):
            raise MatrixError(400, "M_UNKNOWN", "Leave the room before forgetting it.")
        await self.state.forget(room_id, user_id)
