"""Served queries and invites: directory, profile, publicRooms, v2 invite, state, event_auth."""
from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

from federation.inbound import GetKey, PduDropped, verify_pdu_signatures
from federation.rooms import RoomsBridge, domain
from federation.transport.server import FederationRoutes
from homeserver.api.errors import MatrixError, bad_json, forbidden, not_found
from homeserver.api.http import ApiRequest
from homeserver.core.events import Event, EventFormatError, check_content_hash, check_event_format
from homeserver.core.ids import is_valid_room_alias, is_valid_user_id
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.core.signing import sign_event
from homeserver.storage.rooms import RoomStore

logger = logging.getLogger(__name__)

#: on_invite(event): store a verified, countersigned invite of a local user (rooms/sync show it).
OnInvite = Callable[[Event, list[Any]], Awaitable[None]]


class QueryServlets:
    """Queries other servers make about this one's users, aliases and rooms."""

    def __init__(self, server_name: str, signing_key: Any, bridge: RoomsBridge, rooms: RoomStore,
                 users: Any, directory: Any, get_key: GetKey, on_invite: OnInvite | None = None) -> None:
        self._server_name = server_name
        self._key = signing_key
        self._bridge = bridge
        self._rooms = rooms
        self._users = users
        self._directory = directory
        self._get_key = get_key
        self.on_invite = on_invite

    def register(self, routes: FederationRoutes) -> None:
        routes.add("GET", "/_matrix/federation/v1/query/directory", self.query_directory)
        routes.add("GET", "/_matrix/federation/v1/query/profile", self.query_profile)
        routes.add("GET", "/_matrix/federation/v1/publicRooms", self.public_rooms)
        routes.add("POST", "/_matrix/federation/v1/publicRooms", self.public_rooms)
        routes.add("PUT", "/_matrix/federation/v2/invite/{room_id}/{event_id}", self.invite)
        routes.add("GET", "/_matrix/federation/v1/state/{room_id}", self.state)
        routes.add("GET", "/_matrix/federation/v1/event_auth/{room_id}/{event_id}", self.event_auth)

    async def query_directory(self, request: ApiRequest, origin: str) -> dict[str, Any]:
        """GET /_matrix/federation/v1/query/directory: the room ID and servers of a local alias ("Room Aliases")."""
        alias = request.query("room_alias")
        if not alias or not is_valid_room_alias(alias):
            raise MatrixError(400, "M_INVALID_PARAM", "room_alias is required")
        info = await self._rooms.get_alias(alias)
        if info is None:
            raise not_found("Room alias not found")
        room = await self._bridge.cache.get(info.room_id)
        servers = sorted({d for d in (domain(u) for u in (room.joined if room else ())) if d} | {self._server_name})
        return {"room_id": info.room_id, "servers": [self._server_name] + [s for s in servers if s != self._server_name]}

    async def query_profile(self, request: ApiRequest, origin: str) -> dict[str, Any]:
        """GET /_matrix/federation/v1/query/profile: a local user's display name and avatar ("Profiles")."""
        user_id = request.query("user_id")
        if not user_id or not is_valid_user_id(user_id) or domain(user_id) != self._server_name:
            raise MatrixError(400, "M_INVALID_PARAM", "user_id must be a user of this server")
        profile = await self._users.get_profile(user_id)  # 404 M_NOT_FOUND for unknown/deactivated users
        field = request.query("field")
        return {k: v for k, v in profile.items() if field is None or k == field}

    async def public_rooms(self, request: ApiRequest, origin: str) -> dict[str, Any]:
        """GET|POST /_matrix/federation/v1/publicRooms: this server's published rooms ("Public Room Directory")."""
        if request.method == "POST":
            body = request.json()
            limit, since = body.get("limit"), body.get("since")
            flt = body.get("filter") or {}
            search = flt.get("generic_search_term") if isinstance(flt, dict) else None
        else:
            limit, since, search = request.query_int("limit", None, minimum=1, maximum=500), request.query("since"), None
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
            raise bad_json("limit must be an integer")
        return await self._directory.public_rooms(min(limit, 500) if limit else None,
                                                  since if isinstance(since, str) else None,
                                                  search if isinstance(search, str) else None)

    async def invite(self, request: ApiRequest, origin: str) -> dict[str, Any]:
        """PUT /_matrix/federation/v2/invite/{roomId}/{eventId}: countersign an invite of a local user ("Inviting to a room")."""
        body = request.json()
        version = body.get("room_version")
        if not isinstance(version, str) or version not in KNOWN_ROOM_VERSIONS:
            raise MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION", "Unsupported room version",
                              room_version=version if isinstance(version, str) else None)
        rv = KNOWN_ROOM_VERSIONS[version]
        pdu = body.get("event")
        try:
            check_event_format(pdu, rv)
            event = Event(pdu, rv)
        except (EventFormatError, KeyError, TypeError, ValueError) as e:
            raise bad_json(f"Malformed invite: {e}") from None
        if (event.event_id != request.path_params["event_id"] or event.room_id != request.path_params["room_id"]
                or event.type != "m.room.member" or event.membership != "invite"):
            raise bad_json("Not an invite event for this path")
        if domain(event.state_key or "") != self._server_name:
            raise forbidden("The invitee is not a user of this server")
        if domain(event.sender) != origin:
            raise forbidden("The inviter is not on the requesting server")
        if not check_content_hash(pdu):
            raise forbidden("The invite's content hash is wrong")
        try:
            await verify_pdu_signatures(pdu, rv, self._get_key)
        except PduDropped as e:
            raise forbidden(f"Bad signature: {e}") from None
        signed = sign_event(pdu, rv, self._server_name, self._key)
        stripped = body.get("invite_room_state")
        if self.on_invite is not None:
            await self.on_invite(Event(signed, rv), stripped if isinstance(stripped, list) else [])
        return {"event": signed}

    async def state(self, request: ApiRequest, origin: str) -> dict[str, Any]:
        """GET /_matrix/federation/v1/state/{roomId}: the state (PDUs) at an event and its auth chain ("Retrieving events")."""
        room = await self._bridge.cache.get(request.path_params["room_id"])
        if room is None:
            raise not_found("Unknown room")
        if not any(domain(u) == origin for u in room.joined):
            raise forbidden(f"{origin} has no member in this room")
        eid = request.query("event_id")
        if not eid:
            raise MatrixError(400, "M_MISSING_PARAM", "event_id is required")
        ids = await self._bridge.state.get_state_ids_at(eid, before=True)
        if ids is None:
            raise not_found("Unknown event")
        events = await self._bridge.get_events(list(ids.values()))
        chain = await self._bridge.auth_chain(ids.values())
        return {"pdus": [_pdu(e) for e in events.values()], "auth_chain": [_pdu(e) for e in chain.values()]}

    async def event_auth(self, request: ApiRequest, origin: str) -> dict[str, Any]:
        """GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}: an event's full auth chain ("Retrieving events")."""
        room = await self._bridge.cache.get(request.path_params["room_id"])
        if room is None:
            raise not_found("Unknown room")
        if not any(domain(u) == origin for u in room.joined | room.invited):
            raise forbidden(f"{origin} has no member in this room")
        eid = request.path_params["event_id"]
        if not (await self._bridge.get_events([eid])):
            raise not_found("Unknown event")
        chain = await self._bridge.auth_chain([eid])
        return {"auth_chain": [_pdu(e) for e in chain.values()]}


def _pdu(event: Event) -> dict[str, Any]:
    pdu = event.get_pdu_json()
    pdu.pop("unsigned", None)
    return pdu


async def remote_profile_lookup(client: Any, user_id: str) -> dict[str, Any] | None:
    """``ProfileService.remote_lookup``: ask the user's server (query/profile); None when it can't say."""
    server = domain(user_id)
    if server is None:
        return None
    try:
        resp = await client.get_json(server, "/_matrix/federation/v1/query/profile", {"user_id": user_id},
                                     timeout_s=10, max_bytes=64 * 1024)
    except Exception as e:
        logger.info("profile of %s from %s: %s", user_id, server, e)
        return None
    return resp if isinstance(resp, dict) else None
