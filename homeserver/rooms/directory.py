"""Room aliases, the public room directory and room summaries.

Who may do what (decisions, see docs/rooms.md):

* create an alias: a joined member of the room, for an alias on this server;
* delete an alias: its creator, a server admin, or a member whose power
  level allows ``m.room.canonical_alias``;
* publish a room in the directory: a member with power to send
  ``m.room.canonical_alias``;
* a room summary is shown to members and invitees, and to anyone when the
  room is world-readable or can be joined or knocked on; otherwise 404.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from homeserver.api.errors import MatrixError, forbidden, not_found
from homeserver.core.ids import get_domain_from_id, is_valid_room_alias, is_valid_room_id
from homeserver.rooms.membership import MembershipService
from homeserver.rooms.state_cache import RoomState, StateCache
from homeserver.storage.rooms import RoomStore

MAX_PUBLIC_LIMIT = 500


def published_chunk(room: RoomState) -> dict[str, Any]:
    """A PublishedRoomsChunk for the room, from its in-memory state."""
    out: dict[str, Any] = {
        "room_id": room.room_id,
        "num_joined_members": len(room.joined),
        "world_readable": room.history_visibility == "world_readable",
        "guest_can_join": room.content("m.room.guest_access").get("guest_access") == "can_join",
        "join_rule": room.join_rule,
    }
    name = room.content("m.room.name").get("name")
    if isinstance(name, str) and name:
        out["name"] = name
    topic = room.content("m.room.topic").get("topic")
    if isinstance(topic, str) and topic:
        out["topic"] = topic
    avatar = room.content("m.room.avatar").get("url")
    if isinstance(avatar, str) and avatar.startswith("mxc://"):
        out["avatar_url"] = avatar
    alias = room.content("m.room.canonical_alias").get("alias")
    if isinstance(alias, str) and alias.startswith("#"):
        out["canonical_alias"] = alias
    room_type = room.content("m.room.create").get("type")
    if isinstance(room_type, str):
        out["room_type"] = room_type
    return out


class Directory:
    def __init__(self, server_name: str, rooms: RoomStore, cache: StateCache,
                 membership: MembershipService) -> None:
        self.server_name = server_name
        self.rooms = rooms
        self.cache = cache
        self.membership = membership
        #: ``check(alias, appservice)`` before an alias is created or deleted; raises
        #: ``M_EXCLUSIVE`` for aliases reserved by an application service.
        self.alias_checks: list[Callable[[str, Any], None]] = []
        #: ``listener(alias, room_id)`` after an alias is created, ``listener(alias, None)`` after
        #: it is deleted (the application-service interest index follows aliases this way).
        self.alias_listeners: list[Callable[[str, str | None], None]] = []

    def _check_alias(self, alias: str) -> None:
        if not is_valid_room_alias(alias):
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid room alias")

    async def create_alias(self, user_id: str, alias: str, room_id: str, appservice: Any = None) -> None:
        self._check_alias(alias)
        if get_domain_from_id(alias) != self.server_name:
            raise MatrixError(400, "M_INVALID_PARAM", "Aliases must be on this server")
        for check in self.alias_checks:
            check(alias, appservice)
        if not is_valid_room_id(room_id):
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid room ID")
        room = await self.cache.get(room_id)
        if room is None:
            raise not_found("Unknown room")
        if room.membership(user_id) != "join":
            raise forbidden("You must be in the room to give it an alias.")
        if not await self.rooms.create_alias(alias, room_id, user_id, [self.server_name]):
            raise MatrixError(409, "M_UNKNOWN", "Room alias already exists")
        for listener in self.alias_listeners:
            listener(alias, room_id)

    async def get_alias(self, alias: str) -> dict[str, Any]:
        self._check_alias(alias)
        room_id, servers = await self.membership.resolve_room(alias)
        return {"room_id": room_id, "servers": servers or [self.server_name]}

    async def delete_alias(self, user_id: str, alias: str, is_admin: bool, appservice: Any = None) -> None:
        self._check_alias(alias)
        for check in self.alias_checks:
            check(alias, appservice)
        info = await self.rooms.get_alias(alias)
        if info is None:
            raise not_found("Room alias not found")
        # An application service manages every alias of its namespace (spec "Server admin style permissions").
        owns = appservice is not None and appservice.is_interested_in_alias(alias)
        if info.creator != user_id and not is_admin and not owns:
            room = await self.cache.get(info.room_id)
            if room is None or not self._may_edit_directory(room, user_id):
                raise forbidden("You may not delete this alias.")
        await self.rooms.delete_alias(alias)
        for listener in self.alias_listeners:
            listener(alias, None)

    def _may_edit_directory(self, room: RoomState, user_id: str) -> bool:
        pl = room.power_levels
        return room.membership(user_id) == "join" and \
            pl.user_level(user_id) >= pl.event_level("m.room.canonical_alias", True)

    async def room_aliases(self, user_id: str, room_id: str) -> list[str]:
        room = await self.cache.get(room_id)
        if room is None or (room.membership(user_id) != "join" and room.history_visibility != "world_readable"):
            raise forbidden("You are not a member of this room.")
        return await self.rooms.aliases_for_room(room_id)

    async def get_visibility(self, room_id: str) -> str:
        info = await self.rooms.get_room(room_id)
        if info is None:
            raise not_found("Unknown room")
        return "public" if info.is_public else "private"

    async def set_visibility(self, user_id: str, room_id: str, visibility: str) -> None:
        if visibility not in ("public", "private"):
            raise MatrixError(400, "M_INVALID_PARAM", "visibility must be 'public' or 'private'")
        room = await self.cache.get(room_id)
        if room is None:
            raise not_found("Unknown room")
        if not self._may_edit_directory(room, user_id):
            raise forbidden("You need a higher power level to publish this room.")
        await self.rooms.set_public(room_id, visibility == "public")

    async def public_rooms(self, limit: int | None, since: str | None, search: str | None) -> dict[str, Any]:
        """The public directory, biggest rooms first; ``since`` tokens are offsets."""
        offset = 0
        if since is not None:
            if not since.startswith("o") or not since[1:].isdigit() or len(since) > 12:
                raise MatrixError(400, "M_INVALID_PARAM", "Invalid 'since' token")
            offset = int(since[1:])
        chunks = []
        for room_id in await self.rooms.public_room_ids():
            room = await self.cache.get(room_id)
            if room is None:
                continue
            chunk = published_chunk(room)
            if search:
                term = search.lower()
                hay = " ".join(str(chunk.get(k, "")) for k in ("name", "topic", "canonical_alias")).lower()
                if term not in hay:
                    continue
            chunks.append(chunk)
        chunks.sort(key=lambda c: (-c["num_joined_members"], c["room_id"]))
        limit = max(1, min(limit or MAX_PUBLIC_LIMIT, MAX_PUBLIC_LIMIT))
        page = chunks[offset:offset + limit]
        body: dict[str, Any] = {"chunk": page, "total_room_count_estimate": len(chunks)}
        if offset + limit < len(chunks):
            body["next_batch"] = f"o{offset + limit}"
        if offset > 0:
            body["prev_batch"] = f"o{max(0, offset - limit)}"
        return body

    async def summary(self, user_id: str | None, room_id_or_alias: str, via: Sequence[str]) -> dict[str, Any]:
        """GET /_matrix/client/v1/room_summary/{roomIdOrAlias}."""
        try:
            room_id, _ = await self.membership.resolve_room(room_id_or_alias, via)
        except MatrixError as e:
            if e.errcode == "M_INVALID_PARAM":
                raise
            raise not_found("Room not found") from None
        room = await self.cache.get(room_id)
        if room is None:
            raise not_found("Room not found")
        membership = room.membership(user_id) if user_id else None
        if membership not in ("join", "invite", "knock") and room.history_visibility != "world_readable" \
                and room.join_rule not in ("public", "knock", "knock_restricted"):
            raise not_found("Room not found")
        out = published_chunk(room)
        out["room_version"] = room.room_version.identifier
        enc = room.content("m.room.encryption").get("algorithm")
        if enc == "m.megolm.v1.aes-sha2":
            out["encryption"] = enc
        if membership is not None:
            out["membership"] = membership
        return out
