"""Group management on top of standard Matrix state (docs/groups.md).

Every effect is a standard state event, so stock clients see it:

* owner = the one user at power level 100, admins = level 50 (at most
  ``max_admins``), members = ``users_default``;
* mute = the member's level below ``events_default`` (timed mutes are kept in
  ``group_mutes`` with their expiry and lift by themselves, also after a
  restart); mute all = ``events_default`` raised to the admin level;
* join approval = the ``knock`` join rule; requests are knocks;
* announcement = the ``im.qun.announcement`` state event;
* owner transfer = the target at 100, the old owner back to
  ``users_default``.

Power-levels events need level 100 in our default rooms, so changes asked
for by an admin are signed by the owner (the server acts on the owner's
behalf: the owner must be a local, joined user). Changes to one room's power
levels are serialised by a per-room lock (read, modify, send).
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Callable

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall

from homeserver.api.errors import MatrixError, forbidden, invalid_param, not_found
from homeserver.core.ids import get_domain_from_id
from homeserver.groups.config import GroupsConfig
from homeserver.groups.policy import group_full
from homeserver.rooms.membership import MembershipService
from homeserver.rooms.send import EventSender
from homeserver.rooms.state_cache import RoomState
from homeserver.storage.groups import GroupStore, Mute
from homeserver.util.clock import Clock

logger = logging.getLogger(__name__)

OWNER_LEVEL = 100
ADMIN_LEVEL = 50
ANNOUNCEMENT_TYPE = "im.qun.announcement"
MAX_ANNOUNCEMENT = 4096
TOO_MANY_ADMINS = "IM.QUN_TOO_MANY_ADMINS"

#: The longest timed mute.
MAX_MUTE_MS = 366 * 24 * 3600 * 1000


class GroupService:
    def __init__(self, server_name: str, config: GroupsConfig, store: GroupStore,
                 sender: EventSender, membership: MembershipService, clock: Clock) -> None:
        self.server_name = server_name
        self.config = config
        self.store = store
        self.sender = sender
        self.membership = membership
        self.clock = clock
        self._pl_locks: dict[str, defer.DeferredLock] = {}
        self._mute_timers: dict[tuple[str, str], IDelayedCall] = {}

    # --- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        """Schedule every stored timed mute (lifting those that expired while we were down)."""
        for mute in await self.store.get_timed_mutes():
            self._schedule_lift(mute.room_id, mute.user_id, mute.expires_at or 0)

    def stop(self) -> None:
        for call in self._mute_timers.values():
            if call.active():
                call.cancel()
        self._mute_timers.clear()

    # --- helpers ----------------------------------------------------------------

    async def room(self, room_id: str, user_id: str) -> RoomState:
        """The room, if ``user_id`` is joined to it; else 403."""
        room = await self.sender.cache.get(room_id)
        if room is None or room.membership(user_id) != "join":
            raise forbidden("You are not a member of this group.")
        return room

    @staticmethod
    def level(room: RoomState, user_id: str) -> int | float:
        return room.tip_power_levels().user_level(user_id)

    async def admin_room(self, room_id: str, user_id: str) -> RoomState:
        room = await self.room(room_id, user_id)
        if self.level(room, user_id) < ADMIN_LEVEL:
            raise forbidden("Only the group owner and admins can do this.")
        return room

    async def owner_room(self, room_id: str, user_id: str) -> RoomState:
        room = await self.room(room_id, user_id)
        if self.level(room, user_id) < OWNER_LEVEL:
            raise forbidden("Only the group owner can do this.")
        return room

    @staticmethod
    def _joined_target(room: RoomState, user_id: str) -> None:
        if room.membership(user_id) != "join":
            raise invalid_param(f"{user_id} is not a member of this group.")

    def _acting_owner(self, room: RoomState, preferred: str) -> str:
        """Who signs a power-levels change: ``preferred`` if able, else a local joined owner."""
        pl = room.tip_power_levels()
        needed = pl.event_level("m.room.power_levels", True)
        if pl.user_level(preferred) >= needed:
            return preferred
        able = sorted((u for u in room.joined if get_domain_from_id(u) == self.server_name
                       and pl.user_level(u) >= needed), key=lambda u: -pl.user_level(u))
        if not able:
            raise forbidden("No owner of this group is on this server to apply the change.")
        return able[0]

    async def _change_power_levels(self, room_id: str, actor: str,
                                   mutate: Callable[[RoomState, dict[str, Any]], None]) -> str | None:
        """Read the tip's power levels, let ``mutate`` edit a copy, send it (one change at a time per room).

        Returns the new event ID, or None when nothing changed.
        """
        lock = self._pl_locks.setdefault(room_id, defer.DeferredLock())
        await lock.acquire()
        try:
            room = await self.sender.room_or_forbidden(room_id)
            current = room.tip_get("m.room.power_levels")
            content = copy.deepcopy(current.content) if current is not None else {}
            before = copy.deepcopy(content)
            mutate(room, content)
            if content == before:
                return None
            signer = self._acting_owner(room, actor)
            return await self.sender.send(signer, room_id, "m.room.power_levels", content, state_key="")
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._pl_locks.pop(room_id, None)

    @staticmethod
    def _set_user_level(content: dict[str, Any], user_id: str, level: int) -> None:
        users = content.get("users")
        if not isinstance(users, dict):
            users = content["users"] = {}
        default = content.get("users_default", 0)
        if level == default:
            users.pop(user_id, None)
        else:
            users[user_id] = level

    # --- admins and owner -------------------------------------------------------

    async def add_admin(self, actor: str, room_id: str, target: str) -> None:
        room = await self.owner_room(room_id, actor)
        self._joined_target(room, target)
        level = self.level(room, target)
        if ADMIN_LEVEL <= level < OWNER_LEVEL:
            return
        if level >= OWNER_LEVEL:
            raise forbidden(f"{target} is an owner of this group.")
        admins = [u for u, lv in room.tip_power_levels().users.items() if ADMIN_LEVEL <= lv < OWNER_LEVEL]
        if len(admins) >= self.config.max_admins:
            raise MatrixError(403, TOO_MANY_ADMINS,
                              f"A group can have at most {self.config.max_admins} admins.",
                              limit=self.config.max_admins)
        await self._forget_mute(room_id, target)

        def mutate(room: RoomState, content: dict[str, Any]) -> None:
            self._set_user_level(content, target, ADMIN_LEVEL)
        await self._change_power_levels(room_id, actor, mutate)

    async def remove_admin(self, actor: str, room_id: str, target: str) -> None:
        room = await self.owner_room(room_id, actor)
        if not ADMIN_LEVEL <= self.level(room, target) < OWNER_LEVEL:
            raise not_found(f"{target} is not an admin of this group.")

        def mutate(room: RoomState, content: dict[str, Any]) -> None:
            self._set_user_level(content, target, int(content.get("users_default", 0)))
        await self._change_power_levels(room_id, actor, mutate)

    async def transfer_owner(self, actor: str, room_id: str, target: str) -> None:
        room = await self.owner_room(room_id, actor)
        if room.room_version.creators_have_infinite_power:
            raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION",
                              "In this room version the creator's power is permanent; ownership cannot move.")
        if target == actor:
            raise invalid_param("You already own this group.")
        self._joined_target(room, target)
        await self._forget_mute(room_id, target)

        def mutate(room: RoomState, content: dict[str, Any]) -> None:
            self._set_user_level(content, target, OWNER_LEVEL)
            self._set_user_level(content, actor, int(content.get("users_default", 0)))
        # the old owner signs: it still holds 100 when the event is authorised
        await self._change_power_levels(room_id, actor, mutate)

    # --- mute -------------------------------------------------------------------

    async def _muted_level(self, room: RoomState) -> int:
        pl = room.tip_power_levels()
        saved, _ = await self.store.get_saved(room.room_id)
        base = saved if saved is not None else pl.events_default
        return int(min(pl.users_default, base)) - 1

    async def mute(self, actor: str, room_id: str, target: str, duration_ms: int | None) -> int | None:
        """Mute ``target``; returns when the mute lifts (ms since the epoch) or None."""
        room = await self.admin_room(room_id, actor)
        if target == actor:
            raise forbidden("You cannot mute yourself.")
        self._joined_target(room, target)
        existing = await self.store.get_mute(room_id, target)
        actor_level = self.level(room, actor)
        target_level = self.level(room, target)
        if existing is not None and existing.prev_level is not None:
            target_level = max(target_level, existing.prev_level)
        if target_level >= actor_level:
            raise forbidden("Admins cannot mute the owner or each other.")
        expires = self.clock.time_msec() + duration_ms if duration_ms is not None else None
        muted = await self._muted_level(room)
        await self.store.set_mute(Mute(room_id, target, actor, int(target_level), expires))

        def mutate(room: RoomState, content: dict[str, Any]) -> None:
            self._set_user_level(content, target, muted)
        try:
            await self._change_power_levels(room_id, actor, mutate)
        except Exception:
            if existing is None:
                await self.store.delete_mute(room_id, target)
            raise
        self._cancel_timer(room_id, target)
        if expires is not None:
            self._schedule_lift(room_id, target, expires)
        return expires

    async def unmute(self, actor: str, room_id: str, target: str) -> None:
        room = await self.admin_room(room_id, actor)
        mute = await self.store.get_mute(room_id, target)
        if mute is not None and mute.prev_level is not None and mute.prev_level >= self.level(room, actor):
            raise forbidden("Admins cannot unmute the owner or each other.")
        if mute is None and self.level(room, target) >= self.level(room, actor):
            raise forbidden("Admins cannot unmute the owner or each other.")
        await self._lift(room_id, target, mute, actor)

    async def _lift(self, room_id: str, target: str, mute: Mute | None, actor: str | None) -> None:
        """Restore the member's level (if still muted) and forget the mute."""
        room = await self.sender.room_or_forbidden(room_id)
        pl = room.tip_power_levels()
        saved, _ = await self.store.get_saved(room_id)
        base = saved if saved is not None else pl.events_default
        restore = mute.prev_level if mute is not None and mute.prev_level is not None else pl.users_default
        if pl.user_level(target) < base:
            def mutate(room: RoomState, content: dict[str, Any]) -> None:
                self._set_user_level(content, target, int(restore))
            await self._change_power_levels(room_id, actor or (mute.muted_by if mute else target), mutate)
        await self._forget_mute(room_id, target)

    async def _forget_mute(self, room_id: str, target: str) -> None:
        self._cancel_timer(room_id, target)
        await self.store.delete_mute(room_id, target)

    def _cancel_timer(self, room_id: str, user_id: str) -> None:
        call = self._mute_timers.pop((room_id, user_id), None)
        if call is not None and call.active():
            call.cancel()

    def _schedule_lift(self, room_id: str, user_id: str, expires_at: int) -> None:
        self._cancel_timer(room_id, user_id)
        delay = max(0.0, (expires_at - self.clock.time_msec()) / 1000.0)
        self._mute_timers[(room_id, user_id)] = self.clock.call_later(delay, self._expire, room_id, user_id)

    def _expire(self, room_id: str, user_id: str) -> "defer.Deferred[None]":
        self._mute_timers.pop((room_id, user_id), None)
        d = defer.ensureDeferred(self._expire_async(room_id, user_id))
        d.addErrback(lambda f: logger.warning("lifting the mute of %s in %s failed: %s",
                                              user_id, room_id, f.value))
        return d

    async def _expire_async(self, room_id: str, user_id: str) -> None:
        mute = await self.store.get_mute(room_id, user_id)
        if mute is None or mute.expires_at is None:
            return
        if mute.expires_at > self.clock.time_msec():  # re-muted for longer meanwhile
            self._schedule_lift(room_id, user_id, mute.expires_at)
            return
        await self._lift(room_id, user_id, mute, None)

    async def mute_all(self, actor: str, room_id: str, muted: bool) -> None:
        room = await self.admin_room(room_id, actor)
        saved, _ = await self.store.get_saved(room_id)
        if muted:
            if saved is not None:
                return
            previous = int(room.tip_power_levels().events_default)
            await self.store.set_saved_events_default(room_id, previous)

            def raise_default(room: RoomState, content: dict[str, Any]) -> None:
                content["events_default"] = max(previous, ADMIN_LEVEL)
            try:
                await self._change_power_levels(room_id, actor, raise_default)
            except Exception:
                await self.store.set_saved_events_default(room_id, None)
                raise
        else:
            if saved is None:
                return

            def restore_default(room: RoomState, content: dict[str, Any]) -> None:
                content["events_default"] = saved
            await self._change_power_levels(room_id, actor, restore_default)
            await self.store.set_saved_events_default(room_id, None)

    # --- settings, approval -----------------------------------------------------

    async def get_settings(self, user_id: str, room_id: str) -> dict[str, Any]:
        room = await self.room(room_id, user_id)
        pl = room.tip_power_levels()
        saved, _ = await self.store.get_saved(room_id)
        users = pl.users
        return {
            "join_approval": room.join_rule == "knock",
            "join_rule": room.join_rule,
            "mute_all": saved is not None,
            "owners": sorted(u for u, lv in users.items() if lv >= OWNER_LEVEL) or sorted(
                u for u in pl.creators if room.room_version.creators_have_infinite_power),
            "admins": sorted(u for u, lv in users.items() if ADMIN_LEVEL <= lv < OWNER_LEVEL),
            "member_count": len(room.joined),
            "max_members": self.config.max_members,
            "max_admins": self.config.max_admins,
            "recall_window_ms": self.config.recall_window_ms,
        }

    async def set_join_approval(self, actor: str, room_id: str, on: bool) -> None:
        room = await self.admin_room(room_id, actor)
        rule = room.tip_get("m.room.join_rules")
        current = room.join_rule
        if on:
            if current == "knock":
                return
            if not room.room_version.knock_join_rule:
                raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION",
                                  "This room version does not support join requests (knocking needs v7+).")
            await self.store.set_saved_join_rule(room_id, current)
            content = {**(rule.content if rule is not None else {}), "join_rule": "knock"}
            content.pop("allow", None)
        else:
            if current != "knock":
                return
            _, saved = await self.store.get_saved(room_id)
            content = {"join_rule": saved if saved and saved != "knock" else "invite"}
        await self.sender.send(actor, room_id, "m.room.join_rules", content, state_key="")
        if not on:
            await self.store.set_saved_join_rule(room_id, None)

    async def join_requests(self, actor: str, room_id: str) -> list[dict[str, Any]]:
        room = await self.admin_room(room_id, actor)
        out = []
        for (etype, user), ev in room.state.items():
            if etype == "m.room.member" and ev.membership == "knock":
                item: dict[str, Any] = {"user_id": user, "ts": ev.origin_server_ts}
                for key in ("reason", "displayname", "avatar_url"):
                    if isinstance(ev.content.get(key), str):
                        item[key] = ev.content[key]
                out.append(item)
        out.sort(key=lambda i: (i["ts"], i["user_id"]))
        return out

    def check_room_has_space(self, room: RoomState) -> None:
        """Refuse early (403 IM.QUN_GROUP_FULL) when a join would be over the cap anyway."""
        if room.tip_joined_count() >= self.config.max_members:
            raise group_full(self.config.max_members)

    async def approve(self, actor: str, room_id: str, target: str) -> None:
        """Admit a knocking user: invite, then (for a local user) join on their behalf."""
        room = await self.admin_room(room_id, actor)
        if room.membership(target) != "knock":
            raise not_found(f"{target} has no pending join request.")
        self.check_room_has_space(room)
        await self.membership.invite(actor, room_id, target)
        if self.membership.is_mine(target):
            await self.membership.join(target, room_id)

    async def deny(self, actor: str, room_id: str, target: str, reason: str | None) -> None:
        room = await self.admin_room(room_id, actor)
        if room.membership(target) != "knock":
            raise not_found(f"{target} has no pending join request.")
        await self.membership.set_membership(actor, room_id, target, "leave", reason)

    # --- announcement -----------------------------------------------------------

    async def set_announcement(self, actor: str, room_id: str, text: str) -> str:
        """Set the ``im.qun.announcement`` state; ``m.mentions.room`` makes it a highlight for everyone."""
        await self.admin_room(room_id, actor)
        content = {"text": text, "author": actor, "ts": self.clock.time_msec(), "m.mentions": {"room": True}}
        return await self.sender.send(actor, room_id, ANNOUNCEMENT_TYPE, content, state_key="")

    # --- admitting users (invite codes, face to face) -------------------------

    async def invite_as(self, room: RoomState, inviter: str, user_id: str) -> None:
        """The server invites on behalf of ``inviter``, who must still be able to invite."""
        pl = room.tip_power_levels()
        if room.membership(inviter) != "join" or pl.user_level(inviter) < pl.invite:
            raise forbidden("The member who shared this invitation can no longer invite.")
        await self.membership.invite(inviter, room.room_id, user_id)

    def inviter_for(self, room: RoomState, preferred: str) -> str:
        """``preferred`` if still able to invite, else the local member with the most power who is."""
        pl = room.tip_power_levels()
        able = [u for u in room.joined if get_domain_from_id(u) == self.server_name
                and pl.user_level(u) >= pl.invite]
        if preferred in able or not able:
            return preferred
        return max(able, key=lambda u: (pl.user_level(u), u))

    def members(self, room: RoomState) -> list[dict[str, Any]]:
        out = []
        for user in sorted(room.joined):
            item: dict[str, Any] = {"user_id": user}
            ev = room.get("m.room.member", user)
            for key in ("displayname", "avatar_url"):
                if ev is not None and isinstance(ev.content.get(key), str):
                    item[key] = ev.content[key]
            out.append(item)
        return out
