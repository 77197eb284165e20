"""The groups extension API under /_matrix/client/unstable/im.qun (docs/groups.md).

Every endpoint needs an access token; the services check the caller's
membership and power in the group. Bodies are parsed and validated here.
"""
from __future__ import annotations

import math
import re
from typing import Any

from homeserver.api.errors import MatrixError, invalid_param, missing_param
from homeserver.api.http import ApiRequest, Response, Router
from homeserver.api.validate import get_bool, get_int, get_str
from homeserver.core.ids import is_valid_room_id, is_valid_user_id
from homeserver.groups.config import GroupsConfig
from homeserver.groups.face_to_face import FaceToFace
from homeserver.groups.invite_codes import InviteCodes
from homeserver.groups.qr import QrRenderer
from homeserver.groups.service import MAX_ANNOUNCEMENT, MAX_MUTE_MS, GroupService

PREFIX = "/_matrix/client/unstable/im.qun"
_FOUR_DIGITS = re.compile(r"[0-9]{4}")
MAX_CODE_INPUT = 64


def _room_id(request: ApiRequest) -> str:
    room_id = request.path_params["room_id"]
    if not is_valid_room_id(room_id):
        raise invalid_param("Invalid room ID")
    return room_id


def _user_id(value: Any) -> str:
    if not isinstance(value, str) or not is_valid_user_id(value):
        raise invalid_param("Invalid user ID")
    return value


def _coordinate(body: dict[str, Any], key: str, limit: float) -> float:
    if key not in body:
        raise missing_param(f"Missing parameter: {key}")
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not -limit <= value <= limit:
        raise invalid_param(f"'{key}' must be a number from -{limit:g} to {limit:g}")
    return float(value)


def _code(raw: str) -> str:
    if not raw or len(raw) > MAX_CODE_INPUT:
        raise MatrixError(404, "M_NOT_FOUND", "Unknown or expired invite code.")
    return raw


class GroupServlets:
    def __init__(self, groups: GroupService, codes: InviteCodes, face_to_face: FaceToFace, config: GroupsConfig,
                 qr: QrRenderer) -> None:
        self.groups = groups
        self.codes = codes
        self.qr = qr
        self.f2f = face_to_face
        self.config = config

    def register(self, router: Router) -> None:
        r = router.add
        r("POST", PREFIX + "/rooms/{room_id}/invite_code", self.create_invite_code)
        r("GET", PREFIX + "/invite_code/{code}", self.preview_invite_code)
        r("GET", PREFIX + "/invite_code/{code}/qr.png", self.invite_code_qr)
        r("POST", PREFIX + "/join_by_code", self.join_by_code)
        r("POST", PREFIX + "/face_to_face", self.face_to_face)
        r("POST", PREFIX + "/rooms/{room_id}/admins", self.add_admin)
        r("DELETE", PREFIX + "/rooms/{room_id}/admins/{user_id}", self.remove_admin)
        r("POST", PREFIX + "/rooms/{room_id}/mute", self.mute)
        r("POST", PREFIX + "/rooms/{room_id}/unmute", self.unmute)
        r("POST", PREFIX + "/rooms/{room_id}/mute_all", self.mute_all)
        r("GET", PREFIX + "/rooms/{room_id}/settings", self.get_settings)
        r("PUT", PREFIX + "/rooms/{room_id}/settings", self.put_settings)
        r("GET", PREFIX + "/rooms/{room_id}/join_requests", self.join_requests)
        r("POST", PREFIX + "/rooms/{room_id}/approve", self.approve)
        r("POST", PREFIX + "/rooms/{room_id}/deny", self.deny)
        r("PUT", PREFIX + "/rooms/{room_id}/announcement", self.announcement)
        r("POST", PREFIX + "/rooms/{room_id}/transfer_owner", self.transfer_owner)

    async def create_invite_code(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/unstable/im.qun/rooms/{roomId}/invite_code
        Make an invite code (and its URI) for the group; members allowed to invite only."""
        room_id = _room_id(request)
        ttl = get_int(request.json(), "ttl_ms", None, minimum=1000,
                      maximum=self.config.max_invite_code_lifetime_ms)
        return await self.codes.create_invite_code(request.requester.user_id, room_id, ttl)

    async def preview_invite_code(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/unstable/im.qun/invite_code/{code}
        Preview the group behind a live code (for someone not yet in it)."""
        return await self.codes.preview(_code(request.path_params["code"]))

    async def invite_code_qr(self, request: ApiRequest) -> Response:
        """GET /_matrix/client/unstable/im.qun/invite_code/{code}/qr.png
        A PNG QR code carrying the code's invite URI."""
        code, _ = await self.codes.lookup_code(_code(request.path_params["code"]))
        png = await self.qr.png(self.codes.invite_uri(code.code))
        return Response(200, png, "image/png", {"Cache-Control": "private, max-age=3600"})

    async def join_by_code(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/unstable/im.qun/join_by_code
        Join the group of a live code (or file a join request when approval is on)."""
        code = get_str(request.json(), "code", max_len=MAX_CODE_INPUT)
        return await self.codes.join_by_code(request.requester.user_id, _code(code))

    async def face_to_face(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/unstable/im.qun/face_to_face
        Four digits and a location: land in the group of everyone nearby with the same digits."""
        body = request.json()
        code = body.get("code")
        if code is None:
            raise missing_param("Missing parameter: code")
        if not isinstance(code, str) or not _FOUR_DIGITS.fullmatch(code):
            raise invalid_param("'code' must be exactly four digits")
        lat = _coordinate(body, "lat", 90)
        lon = _coordinate(body, "lon", 180)
        return await self.f2f.enter(request.requester.user_id, code, lat, lon)

    async def add_admin(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/unstable/im.qun/rooms/{roomId}/admins
        Make a member an admin (owner only; at most max_admins)."""
        room_id = _room_id(request)
        target = _user_id(get_str(request.json(), "user_id"))
        await self.groups.add_admin(request.requester.user_id, room_id, target)
        return {}

    async def remove_admin(self, request: ApiRequest) -> dict[str, Any]:
        """DELETE /_matrix/client/unstable/im.qun/rooms/{roomId}/admins/{userId}
        Make an admin a plain member again (owner only)."""
        room_id = _room_id(request)
        target = _user_id(request.path_params["user_id"])
        await self.groups.remove_admin(request.requester.user_id, room_id, target)
        return {}

    async def mute(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/unstable/im.qun/rooms/{roomId}/mute
        Mute a member, for duration_ms or until unmuted (owner and admins)."""
        room_id = _room_id(request)
        body = request.json()
        target = _user_id(get_str(body, "user_id"))
        duration = get_int(body, "duration_ms", None, minimum=1000, maximum=MAX_MUTE_MS)
        expires = await self.groups.mute(request.requester.user_id, room_id, target, duration)
        return {"expires_at": expires} if expires is not None else {}

    async def unmute(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/unstable/im.qun/rooms/{roomId}/unmute
        Lift a member's mute (owner and admins)."""
        room_id = _room_id(request)
        target = _user_id(get_str(request.json(), "user_id"))
        await self.groups.unmute(request.requester.user_id, room_id, target)
        return {}

    async def mute_all(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/unstable/im.qun/rooms/{roomId}/mute_all
        Only the owner and admins may post while on (owner and admins)."""
        room_id = _room_id(request)
        muted = get_bool(request.json(), "muted")
        await self.groups.mute_all(request.requester.user_id, room_id, muted)
        return {}

    async def get_settings(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/unstable/im.qun/rooms/{roomId}/settings
        The group's settings, owner and admins (members)."""
        return await self.groups.get_settings(request.requester.user_id, _room_id(request))

    async def put_settings(self, request: ApiRequest) -> dict[str, Any]:
        """PUT /_matrix/client/unstable/im.qun/rooms/{roomId}/settings
        Change settings (owner and admins); today: join_approval."""
        room_id = _room_id(request)
        body = request.json()
        approval = get_bool(body, "join_approval", None)
        if approval is None:
            raise missing_param("Nothing to change: give join_approval")
        await self.groups.set_join_approval(request.requester.user_id, room_id, approval)
        return await self.groups.get_settings(request.requester.user_id, room_id)

    async def join_requests(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/unstable/im.qun/rooms/{roomId}/join_requests
        Pending join requests (knocks), oldest first (owner and admins)."""
        room_id = _room_id(request)
        return {"requests": await self.groups.join_requests(request.requester.user_id, room_id)}

    async def approve(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/unstable/im.qun/rooms/{roomId}/approve
        Admit a requester: a local user is joined at once, a remote one invited."""
        room_id = _room_id(request)
        target = _user_id(get_str(request.json(), "user_id"))
        await self.groups.approve(request.requester.user_id, room_id, target)
        return {}

    async def deny(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/unstable/im.qun/rooms/{roomId}/deny
        Turn a join request down, with an optional reason."""
        room_id = _room_id(request)
        body = request.json()
        target = _user_id(get_str(body, "user_id"))
        reason = get_str(body, "reason", None, max_len=4096, allow_none=True)
        await self.groups.deny(request.requester.user_id, room_id, target, reason)
        return {}

    async def announcement(self, request: ApiRequest) -> dict[str, Any]:
        """PUT /_matrix/client/unstable/im.qun/rooms/{roomId}/announcement
        Set the group announcement, a highlight for every member (owner and admins)."""
        room_id = _room_id(request)
        text = get_str(request.json(), "text", max_len=MAX_ANNOUNCEMENT)
        if not text.strip():
            raise invalid_param("'text' must not be empty")
        return {"event_id": await self.groups.set_announcement(request.requester.user_id, room_id, text)}

    async def transfer_owner(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/unstable/im.qun/rooms/{roomId}/transfer_owner
        Hand ownership to a joined member; the old owner becomes a plain member."""
        room_id = _room_id(request)
        target = _user_id(get_str(request.json(), "user_id"))
        await self.groups.transfer_owner(request.requester.user_id, room_id, target)
        return {}
