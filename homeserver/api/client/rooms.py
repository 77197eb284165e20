"""Room endpoints (client-server-api "Rooms", "Room membership", "Events",
"Relationships", "Threading").

Each handler parses and validates at the edge, then calls one service in
``homeserver/rooms/``.
"""
from __future__ import annotations

from typing import Any

from homeserver.api.errors import MatrixError, bad_json, missing_param
from homeserver.api.http import ApiRequest, Router
from homeserver.api.ratelimit import RateLimiter
from homeserver.api.validate import get_bool, get_dict, get_list, get_str
from homeserver.core.ids import is_valid_event_id, is_valid_room_id, is_valid_user_id
from homeserver.rooms.create import MAX_INITIAL_STATE, MAX_INVITES, CreateRoomRequest, RoomCreator
from homeserver.rooms.format import client_event
from homeserver.rooms.history import EventFilter, RoomHistory
from homeserver.rooms.membership import MembershipService
from homeserver.rooms.redact import Redactor
from homeserver.rooms.send import EventSender
from homeserver.util import json as jsonutil

MAX_TXN_ID = 255
MAX_TYPE = 255


def _room_id(request: ApiRequest) -> str:
    room_id = request.path_params["room_id"]
    if not is_valid_room_id(room_id):
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid room ID")
    return room_id


def _reason(body: dict[str, Any]) -> str | None:
    return get_str(body, "reason", None, max_len=4096, allow_none=True)


def _appservice_ts(request: ApiRequest) -> int | None:
    """``?ts=`` of an application service (spec "Timestamp massaging"); ignored for other callers."""
    if getattr(request.requester, "appservice", None) is None:
        return None
    return request.query_int_strict("ts")


def _txn_key(request: ApiRequest) -> tuple[str, str, str]:
    txn_id = request.path_params["txn_id"]
    if not txn_id or len(txn_id) > MAX_TXN_ID:
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid transaction ID")
    r = request.requester
    # Tokens without a device (e.g. appservices) scope txn IDs by access token.
    device = r.device_id if r.device_id is not None else "token:" + r.access_token[-16:]
    return (r.user_id, device, txn_id)


def _event_type(request: ApiRequest) -> str:
    etype = request.path_params["event_type"]
    if not etype or len(etype.encode()) > MAX_TYPE:
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid event type")
    return etype


def _filter(request: ApiRequest) -> EventFilter:
    raw = request.query("filter")
    if raw is None:
        return EventFilter()
    try:
        parsed = jsonutil.loads(raw)
    except ValueError:
        raise MatrixError(400, "M_INVALID_PARAM", "filter is not valid JSON") from None
    return EventFilter.parse(parsed)


class RoomServlets:
    def __init__(self, creator: RoomCreator, sender: EventSender, membership: MembershipService,
                 redactor: Redactor, history: RoomHistory, message_limiter: RateLimiter | None = None) -> None:
        self.creator = creator
        self.sender = sender
        self.membership = membership
        self.redactor = redactor
        self.history = history
        self.limiter = message_limiter

    def register(self, router: Router) -> None:
        c = router.add_client
        c("POST", "/createRoom", self.create_room)
        c("POST", "/rooms/{room_id}/join", self.join_room_id)
        c("POST", "/join/{room_id_or_alias}", self.join)
        c("POST", "/knock/{room_id_or_alias}", self.knock)
        c("POST", "/rooms/{room_id}/invite", self.invite)
        c("POST", "/rooms/{room_id}/leave", self.leave)
        c("POST", "/rooms/{room_id}/forget", self.forget)
        c("POST", "/rooms/{room_id}/kick", self.kick)
        c("POST", "/rooms/{room_id}/ban", self.ban)
        c("POST", "/rooms/{room_id}/unban", self.unban)
        c("PUT", "/rooms/{room_id}/send/{event_type}/{txn_id}", self.send)
        c("PUT", "/rooms/{room_id}/state/{event_type}/{state_key}", self.put_state)
        c("PUT", "/rooms/{room_id}/state/{event_type}", self.put_state)
        c("PUT", "/rooms/{room_id}/state/{event_type}/", self.put_state)
        c("GET", "/rooms/{room_id}/state/{event_type}/{state_key}", self.get_state_event)
        c("GET", "/rooms/{room_id}/state/{event_type}", self.get_state_event)
        c("GET", "/rooms/{room_id}/state/{event_type}/", self.get_state_event)
        c("GET", "/rooms/{room_id}/state", self.get_state)
        c("PUT", "/rooms/{room_id}/redact/{event_id}/{txn_id}", self.redact)
        c("GET", "/rooms/{room_id}/event/{event_id}", self.get_event)
        c("GET", "/rooms/{room_id}/messages", self.messages)
        c("GET", "/rooms/{room_id}/context/{event_id}", self.context)
        c("GET", "/rooms/{room_id}/members", self.members)
        c("GET", "/rooms/{room_id}/joined_members", self.joined_members)
        c("GET", "/joined_rooms", self.joined_rooms)
        v1 = "/_matrix/client/v1/rooms/{room_id}"
        router.add("GET", v1 + "/relations/{event_id}", self.relations)
        router.add("GET", v1 + "/relations/{event_id}/{rel_type}", self.relations)
        router.add("GET", v1 + "/relations/{event_id}/{rel_type}/{rel_event_type}", self.relations)
        router.add("GET", v1 + "/threads", self.threads)

    # --- create ------------------------------------------------------------

    async def create_room(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/v3/createRoom — create a group; the creator is its owner (100)."""
        body = request.json()
        visibility = get_str(body, "visibility", "private")
        if visibility not in ("public", "private"):
            raise bad_json("'visibility' must be 'public' or 'private'")
        initial_state = get_list(body, "initial_state", [], max_items=MAX_INITIAL_STATE)
        for ev in initial_state:
            if not isinstance(ev, dict) or not isinstance(ev.get("type"), str) or \
                    not isinstance(ev.get("content", {}), dict) or not isinstance(ev.get("state_key", ""), str):
                raise bad_json("initial_state entries need a string 'type', an object 'content'"
                               " and an optional string 'state_key'")
        invite = get_list(body, "invite", [], item_type=str, max_items=MAX_INVITES)
        room_version = get_str(body, "room_version", None, max_len=64)
        req = CreateRoomRequest(
            preset=get_str(body, "preset", None, max_len=64),
            visibility=visibility,
            room_alias_name=get_str(body, "room_alias_name", None, max_len=255),
            name=get_str(body, "name", None, max_len=1024),
            topic=get_str(body, "topic", None, max_len=8192),
            invite=list(dict.fromkeys(invite)),
            is_direct=get_bool(body, "is_direct", False),
            initial_state=initial_state,
            power_level_content_override=get_dict(body, "power_level_content_override", None),
            creation_content=get_dict(body, "creation_content", {}),
            room_version=room_version,
        )
        room_id, alias = await self.creator.create(request.requester.user_id, req,
                                                   getattr(request.requester, "appservice", None))
        out: dict[str, Any] = {"room_id": room_id}
        if alias is not None:
            out["room_alias"] = alias
        return out

    # --- membership --------------------------------------------------------

    def _servers(self, request: ApiRequest) -> list[str]:
        servers = list(request.args.get("via", [])) + list(request.args.get("server_name", []))
        return list(dict.fromkeys(servers))[:20]

    async def join_room_id(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/v3/rooms/{roomId}/join — join a room by ID."""
        body = request.json()
        room_id = await self.membership.join(request.requester.user_id, _room_id(request), self._servers(request),
                                             _reason(body))
        return {"room_id": room_id}

    async def join(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/v3/join/{roomIdOrAlias} — join by room ID or alias (with via/server_name)."""
        body = request.json()
        room_id = await self.membership.join(request.requester.user_id, request.path_params["room_id_or_alias"],
                                             self._servers(request), _reason(body))
        return {"room_id": room_id}

    async def knock(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/v3/knock/{roomIdOrAlias} — ask to be invited."""
        body = request.json()
        room_id = await self.membership.knock(request.requester.user_id, request.path_params["room_id_or_alias"],
                                              self._servers(request), _reason(body))
        return {"room_id": room_id}

    async def invite(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/v3/rooms/{roomId}/invite — invite a user."""
        body = request.json()
        target = get_str(body, "user_id")
        await self.membership.invite(request.requester.user_id, _room_id(request), target, _reason(body),
                                     get_bool(body, "is_direct", False))
        return {}

    async def leave(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/v3/rooms/{roomId}/leave — leave (or reject an invite)."""
        body = request.json()
        await self.membership.leave(request.requester.user_id, _room_id(request), _reason(body))
        return {}

    async def forget(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/v3/rooms/{roomId}/forget — forget a room one has left."""
        await self.membership.forget(request.requester.user_id, _room_id(request))
        return {}

    async def _moderate(self, request: ApiRequest, membership: str) -> dict[str, Any]:
        body = request.json()
        target = get_str(body, "user_id", max_len=255)
        if not is_valid_user_id(target):
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid user ID")
        room_id = _room_id(request)
        if membership == "unban":
            room = await self.sender.room_or_forbidden(room_id)
            if room.membership(target) != "ban":
                raise MatrixError(403, "M_FORBIDDEN", f"{target} is not banned.")
            membership = "leave"
        await self.membership.set_membership(request.requester.user_id, room_id, target, membership,
                                             _reason(body))
        return {}

    async def kick(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/v3/rooms/{roomId}/kick — remove a member (needs the kick level)."""
        return await self._moderate(request, "leave")

    async def ban(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/v3/rooms/{roomId}/ban — ban a user (needs the ban level)."""
        return await self._moderate(request, "ban")

    async def unban(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/v3/rooms/{roomId}/unban — lift a ban (needs the ban level)."""
        return await self._moderate(request, "unban")

    # --- events ------------------------------------------------------------

    async def send(self, request: ApiRequest) -> dict[str, Any]:
        """PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId} — send a message event."""
        room_id, etype, txn_key = _room_id(request), _event_type(request), _txn_key(request)
        content = request.json()
        if self.limiter is not None:
            self.limiter.check(request.requester.user_id, requester=request.requester)
        event_id = await self.sender.send(request.requester.user_id, room_id, etype, content, txn_key=txn_key,
                                          origin_server_ts=_appservice_ts(request))
        return {"event_id": event_id}

    async def put_state(self, request: ApiRequest) -> dict[str, Any]:
        """PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey} — set room state."""
        room_id, etype = _room_id(request), _event_type(request)
        state_key = request.path_params.get("state_key", "")
        if len(state_key.encode()) > 255:
            raise MatrixError(400, "M_INVALID_PARAM", "state_key is too long")
        content = request.json()
        user = request.requester.user_id
        if etype == "m.room.member":
            membership = content.get("membership")
            if not isinstance(membership, str):
                raise bad_json("m.room.member needs a 'membership'")
        event_id = await self.sender.send(user, room_id, etype, content, state_key=state_key,
                                          origin_server_ts=_appservice_ts(request))
        return {"event_id": event_id}

    async def get_state_event(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey} — one state event's content."""
        stored = await self.history.get_state_event(request.requester.user_id, _room_id(request),
                                                    _event_type(request), request.path_params.get("state_key", ""))
        if request.query("format") == "event":
            return client_event(stored, self.history.clock.time_msec())
        return stored.visible_event.content

    async def get_state(self, request: ApiRequest) -> Any:
        """GET /_matrix/client/v3/rooms/{roomId}/state — the full current state."""
        from homeserver.api.http import Response
        events = await self.history.get_state(request.requester.user_id, _room_id(request))
        return Response(200, jsonutil.dumps_bytes(events))

    async def redact(self, request: ApiRequest) -> dict[str, Any]:
        """PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId} — redact an event."""
        room_id, txn_key = _room_id(request), _txn_key(request)
        event_id = request.path_params["event_id"]
        if not is_valid_event_id(event_id):
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid event ID")
        body = request.json()
        redaction_id = await self.redactor.redact(request.requester.user_id, room_id, event_id, _reason(body),
                                                  txn_key)
        return {"event_id": redaction_id}

    async def get_event(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/rooms/{roomId}/event/{eventId} — one event, if visible."""
        return await self.history.get_event(request.requester.user_id, _room_id(request),
                                            request.path_params["event_id"])

    # --- history -----------------------------------------------------------

    async def messages(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/rooms/{roomId}/messages — page through the timeline."""
        direction = request.query("dir", "b")
        return await self.history.messages(
            request.requester.user_id, _room_id(request), request.query("from"), request.query("to"),
            direction, request.query_int("limit", 10, minimum=1, maximum=1000), _filter(request))

    async def context(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/rooms/{roomId}/context/{eventId} — events around an event."""
        return await self.history.context(request.requester.user_id, _room_id(request),
                                          request.path_params["event_id"],
                                          request.query_int("limit", 10, minimum=0, maximum=100), _filter(request))

    async def members(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/rooms/{roomId}/members — member events (at a point, filtered)."""
        memberships = ("join", "invite", "knock", "leave", "ban")
        membership, not_membership = request.query("membership"), request.query("not_membership")
        for value in (membership, not_membership):
            if value is not None and value not in memberships:
                raise MatrixError(400, "M_INVALID_PARAM", f"Unknown membership {value!r}")
        chunk = await self.history.members(request.requester.user_id, _room_id(request), request.query("at"),
                                           membership, not_membership)
        return {"chunk": chunk}

    async def joined_members(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/rooms/{roomId}/joined_members — joined users with profiles."""
        return await self.history.joined_members(request.requester.user_id, _room_id(request))

    async def joined_rooms(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/joined_rooms — the rooms the user is joined to."""
        return {"joined_rooms": await self.history.joined_rooms(request.requester.user_id)}

    async def relations(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]] — child events."""
        return await self.history.get_relations(
            request.requester.user_id, _room_id(request), request.path_params["event_id"],
            request.path_params.get("rel_type"), request.path_params.get("rel_event_type"),
            request.query("from"), request.query("dir", "b"),
            request.query_int("limit", 50, minimum=1, maximum=1000))

    async def threads(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v1/rooms/{roomId}/threads — thread roots, latest activity first."""
        return await self.history.threads(request.requester.user_id, _room_id(request),
                                          request.query("include", "all"), request.query("from"),
                                          request.query_int("limit", 50, minimum=1, maximum=100))


__all__ = ["RoomServlets", "missing_param"]
