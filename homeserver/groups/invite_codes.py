"""Invite codes: short unguessable codes (and QR codes of their URI) that admit users to a group.

A code belongs to a group and to the member who made it; it expires. Joining
by code: already joined → nothing; banned → 403; join approval on → a knock;
a public group → a join; otherwise the server invites the user on behalf of
the code's creator (who must still be able to invite), then joins them.
Expired rows are deleted hourly. See docs/groups.md for the code format.
"""
from __future__ import annotations

import logging
import secrets
from typing import Any

from twisted.internet import defer

from homeserver.api.errors import forbidden, not_found
from homeserver.groups.service import GroupService
from homeserver.rooms.state_cache import RoomState
from homeserver.storage.groups import GroupStore, InviteCode
from homeserver.util.clock import Clock

logger = logging.getLogger(__name__)

#: Invite code alphabet: Crockford's base32 (no I, L, O, U), easy to read aloud and type.
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: 12 characters x 5 bits = 60 random bits (see docs/groups.md).
CODE_LENGTH = 12
#: How often expired invite codes are deleted.
PURGE_INTERVAL_S = 3600.0


def new_invite_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalise_code(raw: str) -> str | None:
    """Upper-case, drop spaces and dashes, map look-alikes; None if it cannot be a code."""
    code = raw.strip().upper().replace("-", "").replace(" ", "")
    code = code.translate(str.maketrans({"O": "0", "I": "1", "L": "1"}))
    if len(code) != CODE_LENGTH or any(c not in CODE_ALPHABET for c in code):
        return None
    return code


#: How often expired invite codes are deleted.
PURGE_INTERVAL_S = 3600.0


class InviteCodes:
    def __init__(self, groups: GroupService, store: GroupStore, clock: Clock, server_name: str,
                 public_baseurl: str | None) -> None:
        self.groups = groups
        self.store = store
        self.clock = clock
        base = (public_baseurl or f"https://{server_name}").rstrip("/")
        #: Invite URIs are ``<base>/_matrix/client/unstable/im.qun/invite_code/<code>`` (docs/groups.md).
        self.invite_uri_prefix = f"{base}/_matrix/client/unstable/im.qun/invite_code/"
        self._purge: Any = None

    def start(self) -> None:
        self._purge = self.clock.looping_call(self._purge_codes, PURGE_INTERVAL_S, now=True)

    def stop(self) -> None:
        if self._purge is not None and self._purge.running:
            self._purge.stop()

    def _purge_codes(self) -> "defer.Deferred[Any]":
        d = defer.ensureDeferred(self.store.purge_expired_codes(self.clock.time_msec()))
        d.addErrback(lambda f: logger.warning("purging expired invite codes failed: %s", f.value))
        return d

    async def create_invite_code(self, actor: str, room_id: str, ttl_ms: int | None) -> dict[str, Any]:
        room = await self.groups.room(room_id, actor)
        pl = room.tip_power_levels()
        if pl.user_level(actor) < pl.invite:
            raise forbidden("You are not allowed to invite people to this group.")
        ttl = ttl_ms if ttl_ms is not None else self.groups.config.invite_code_lifetime_ms
        now = self.clock.time_msec()
        code = InviteCode(new_invite_code(), room_id, actor, now, now + ttl)
        await self.store.add_invite_code(code)
        return {"code": code.code, "expires_at": code.expires_at, "uri": self.invite_uri(code.code)}

    def invite_uri(self, code: str) -> str:
        return self.invite_uri_prefix + code

    async def lookup_code(self, raw: str) -> tuple[InviteCode, RoomState]:
        """A live code and its room; 404 M_NOT_FOUND for unknown, malformed or expired codes."""
        code = normalise_code(raw)
        found = await self.store.get_invite_code(code) if code is not None else None
        if found is None or found.expires_at <= self.clock.time_msec():
            raise not_found("Unknown or expired invite code.")
        room = await self.groups.sender.cache.get(found.room_id)
        if room is None:
            raise not_found("Unknown or expired invite code.")
        return found, room

    async def preview(self, raw: str) -> dict[str, Any]:
        code, room = await self.lookup_code(raw)
        out: dict[str, Any] = {"room_id": room.room_id, "member_count": len(room.joined),
                               "join_rule": room.join_rule, "join_approval": room.join_rule == "knock",
                               "expires_at": code.expires_at}
        for etype, key, name in (("m.room.name", "name", "name"), ("m.room.avatar", "url", "avatar_url"),
                                 ("m.room.topic", "topic", "topic")):
            value = room.content(etype).get(key)
            if isinstance(value, str) and value:
                out[name] = value
        return out

    async def join_by_code(self, user_id: str, raw: str) -> dict[str, Any]:
        code, room = await self.lookup_code(raw)
        room_id = room.room_id
        membership = room.membership(user_id)
        if membership == "join":
            return {"room_id": room_id}
        if membership == "ban":
            raise forbidden("You are banned from this group.")
        if room.join_rule == "knock" and membership != "invite":
            if membership != "knock":
                await self.groups.membership.knock(user_id, room_id, reason=None)
            return {"room_id": room_id, "knocked": True}
        self.groups.check_room_has_space(room)
        if room.join_rule != "public" and membership != "invite":
            await self.groups.invite_as(room, code.creator, user_id)
        await self.groups.membership.join(user_id, room_id)
        return {"room_id": room_id}
