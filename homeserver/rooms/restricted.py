"""Restricted rooms: joining without an invite by being in another room (client-server "Restricted rooms").

A room whose join rule is ``restricted`` (room versions 8+) or
``knock_restricted`` (10+) lets in, without an invite, users joined to one
of the rooms its ``allow`` list names (``m.room_membership`` conditions).
The server that checks a condition vouches for it: the join names one of
that server's users who may invite in ``join_authorised_via_users_server``,
and the auth rules require that user to be joined with the invite power
level (and, through the signature rules, that server's signature).

:meth:`RestrictedJoins.authorise` answers for this server: for local joins
(``rooms/membership.py``), and for federation's ``make_join``/``send_join``
when a remote user joins a room through us. We only judge conditions on
rooms we take part in (a local user is joined there), as only there is our
view of the membership current. Errors follow server-server "Restricted
rooms": 403 ``M_FORBIDDEN`` when the user meets none of the conditions we
can check, 400 ``M_UNABLE_TO_AUTHORISE_JOIN`` when we can check none, 400
``M_UNABLE_TO_GRANT_JOIN`` when the user qualifies but none of our users
may invite (another server of the room may).
"""
from __future__ import annotations

from typing import Any

from homeserver.api.errors import MatrixError, forbidden
from homeserver.core.ids import InvalidIdError, get_domain_from_id
from homeserver.rooms.state_cache import RoomState, StateCache

#: ``allow`` conditions looked at, at most.
MAX_CONDITIONS = 50


def allowed_room_ids(join_rules_content: dict[str, Any]) -> list[str]:
    """The room IDs of the ``m.room_membership`` conditions of a join rules content (bounded)."""
    allow = join_rules_content.get("allow")
    if not isinstance(allow, list):
        return []
    out = []
    for cond in allow[:MAX_CONDITIONS]:
        if isinstance(cond, dict) and cond.get("type") == "m.room_membership" \
                and isinstance(cond.get("room_id"), str):
            out.append(cond["room_id"])
    return list(dict.fromkeys(out))


def _domain(user_id: str) -> str | None:
    try:
        return get_domain_from_id(user_id)
    except InvalidIdError:
        return None


class RestrictedJoins:
    """Checks the allow conditions of restricted rooms and picks the authorising user."""

    def __init__(self, server_name: str, cache: StateCache) -> None:
        self._server_name = server_name
        self._cache = cache

    def is_mine(self, user_id: str) -> bool:
        return _domain(user_id) == self._server_name

    def needs_authorisation(self, room: RoomState, user_id: str) -> bool:
        """True when a join of ``user_id`` needs an authorising user (restricted rule, no invite)."""
        rv = room.room_version
        join_rules = room.tip_get("m.room.join_rules")
        rule = join_rules.content.get("join_rule") if join_rules is not None else None
        restricted = (rule == "restricted" and rv.restricted_join_rule) or \
            (rule == "knock_restricted" and rv.knock_restricted_join_rule)
        if not restricted:
            return False
        member = room.tip_get("m.room.member", user_id)
        return member is None or member.membership not in ("invite", "join")

    async def check_conditions(self, room: RoomState, user_id: str) -> None:
        """Raise unless ``user_id`` is joined to an allowed room, as far as this server can see."""
        join_rules = room.tip_get("m.room.join_rules")
        checkable = 0
        for room_id in allowed_room_ids(join_rules.content if join_rules is not None else {}):
            other = await self._cache.get(room_id)
            if other is None or not any(self.is_mine(u) for u in other.joined):
                continue
            checkable += 1
            if other.membership(user_id) == "join":
                return
        if not checkable:
            raise MatrixError(400, "M_UNABLE_TO_AUTHORISE_JOIN",
                              "This server cannot check the conditions to join this room: "
                              "it is in none of the rooms they name.")
        raise forbidden("You are not invited to this room, nor a member of a room that would let you in.")

    def authoriser(self, room: RoomState) -> str:
        """A local user joined to the room who may invite (the most powerful, then by ID)."""
        levels = room.tip_power_levels()

        def joined_at_tip(user_id: str) -> bool:  # not leaving in a queued event
            member = room.tip_get("m.room.member", user_id)
            return member is not None and member.membership == "join"

        candidates = [u for u in room.joined
                      if self.is_mine(u) and levels.user_level(u) >= levels.invite and joined_at_tip(u)]
        if not candidates:
            raise MatrixError(400, "M_UNABLE_TO_GRANT_JOIN",
                              "No user of this server can let you in: try another server of the room.")
        return min(candidates, key=lambda u: (-levels.user_level(u), u))

    async def authorise(self, room: RoomState, user_id: str) -> str | None:
        """The user to name in ``join_authorised_via_users_server`` for a join, None when none is needed.

        Raises:
            MatrixError: 403 M_FORBIDDEN, 400 M_UNABLE_TO_AUTHORISE_JOIN or 400 M_UNABLE_TO_GRANT_JOIN.
        """
        if not self.needs_authorisation(room, user_id):
            return None
        await self.check_conditions(room, user_id)
        return self.authoriser(room)
