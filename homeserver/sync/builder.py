"""Builds /sync responses; shared by the HTTP long-poll and the WebSocket channel.

The builder answers "what does this user see between ``since`` and ``upto``"
from in-memory positions first: each stream's change cache says whether a
query is needed at all, and room timelines come from the recent-events ring.
For a user woken by one new message, that means no database query.

Rooms come from a :class:`RoomSource` (the rooms/persistence layer, adapted
in ``sync/room_source.py``), so this module depends only on narrow protocols.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from twisted.internet import defer

from homeserver.sync.account_data import AccountDataService
from homeserver.sync.device_lists import DeviceListTracker
from homeserver.sync.events import SyncEvent
from homeserver.sync.filters import SyncFilter
from homeserver.sync.membership import MembershipIndex
from homeserver.sync.presence import PresenceService
from homeserver.sync.receipts import ReceiptService
from homeserver.sync.recent import RecentEvents
from homeserver.sync.shared import SharedBodies
from homeserver.sync.to_device import ToDeviceService
from homeserver.sync.tokens import STREAMS, StreamToken
from homeserver.sync.typing import TypingService
from homeserver.sync.unread import UnreadCounter
from homeserver.sync.user_rooms import MembershipInfo, UserRooms

StateMap = dict[tuple[str, str], SyncEvent]


@dataclass
class RoomWindow:
    """A room's timeline as read from the database for sync."""

    events: list[SyncEvent]
    limited: bool
    #: The state at the timeline's start (``state_at`` of the first event's position - 1,
    #: or of ``upto`` with no events), when it was read along; None = ask ``state_at``.
    state_at_start: StateMap | None = None


class RoomSource(Protocol):
    """What sync needs from room persistence (database-backed, used on cache misses)."""

    async def timeline(self, room_id: str, since: int, upto: int, limit: int,
                       user_id: str | None = None) -> tuple[list[SyncEvent], bool]:
        """The newest ``limit`` events in (since, upto], oldest first, visible to ``user_id``."""
    async def timelines(self, windows: Sequence[tuple[str, int, int]], limit: int, user_id: str | None,
                        with_state: bool) -> dict[str, RoomWindow]:
        """:meth:`timeline` for many ``(room_id, since, upto)`` at once, with the state at each start."""
    async def state_at(self, room_id: str, position: int) -> StateMap: ...
    async def stripped_state(self, room_id: str, event_id: str) -> list[dict[str, Any]]: ...
    async def prev_batch(self, room_id: str, first: SyncEvent | None, position: int) -> str: ...


@dataclass(frozen=True, slots=True)
class SyncRequest:
    user_id: str
    device_id: str | None
    since: StreamToken | None
    filter: SyncFilter
    full_state: bool = False
    set_presence: str | None = None


#: Initial (full) syncs built at the same time; more wait their turn.
MAX_FULL_BUILDS = 4
#: Lazy-loaded members already sent, remembered per device for this many rooms.
LL_CACHE_ROOMS = 200


class SyncBuilder:
    def __init__(self, *, membership: MembershipIndex, user_rooms: UserRooms, recent: RecentEvents,
                 rooms: RoomSource | None, account_data: AccountDataService, receipts: ReceiptService,
                 typing: TypingService, presence: PresenceService, to_device: ToDeviceService,
                 device_lists: DeviceListTracker, unread: UnreadCounter) -> None:
        self.membership = membership
        self.user_rooms = user_rooms
        self.recent = recent
        self.rooms = rooms
        self.account_data = account_data
        self.receipts = receipts
        self.typing = typing
        self.presence = presence
        self.to_device = to_device
        self.device_lists = device_lists
        self.unread = unread
        #: Bodies many members share (one new message in a group), encoded once.
        self.shared = SharedBodies(recent, membership, unread, to_device, self.lazy_members_sent,
                                   account_data.ignored_by, account_data.ignores_changed_after)
        self._ll_sent: OrderedDict[tuple[str, str | None], dict[str, set[str]]] = OrderedDict()
        self._full_builds = defer.DeferredSemaphore(MAX_FULL_BUILDS)

    async def build(self, req: SyncRequest, upto: StreamToken) -> tuple[dict[str, Any], bool]:
        """The response body for ``req`` up to ``upto``, and whether it carries nothing new.

        Full builds (initial syncs) run at most ``MAX_FULL_BUILDS`` at a time: a
        crowd of clients starting together (a restart, a benchmark) would
        otherwise hold every half-built body in memory at once.
        """
        if req.since is not None and not req.full_state:
            return await self._build(req, upto)
        await self._full_builds.acquire()
        try:
            return await self._build(req, upto)
        finally:
            self._full_builds.release()

    def nothing_new(self, req: SyncRequest, since: StreamToken | None, upto: StreamToken) -> bool:
        """No stream moved since ``since``, so the body is empty (a waiting long-poll's first look).

        Unless the request acknowledges to-device messages, which must then be deleted.
        """
        return (since is not None and since == upto and not req.full_state
                and not self.to_device.acknowledges(req.user_id, req.device_id, since.to_device))

    async def _build(self, req: SyncRequest, upto: StreamToken) -> tuple[dict[str, Any], bool]:
        since = req.since
        f = req.filter
        if since is not None and since != upto and any(getattr(since, k) > getattr(upto, k) for k in STREAMS):
            # A token from before a restart may be ahead in the in-memory streams.
            since = StreamToken(**{k: min(getattr(since, k), getattr(upto, k)) for k in STREAMS})
        if self.nothing_new(req, since, upto):
            return {"next_batch": str(upto)}, True
        initial = since is None or req.full_state
        body: dict[str, Any] = {}
        empty = True

        # account data
        changed_ad = await self.account_data.changed(req.user_id, since.account_data if since else 0,
                                                     upto.account_data)
        global_ad = [{"type": t, "content": c} for t, c in changed_ad.get("", {}).items()]
        global_ad = [e for e in global_ad if f.account_data.allows(e)][: _limit(f.account_data.limit)]
        if global_ad:
            body["account_data"] = {"events": global_ad}
            empty = False

        # to-device
        messages, to_device_pos = await self.to_device.for_sync(
            req.user_id, req.device_id, since.to_device if since else 0, upto.to_device)
        if messages:
            body["to_device"] = {"events": messages}
            empty = False

        # presence
        if self.presence.enabled and not f.presence.matches_nothing:
            presence = [e for e in self.presence.changes_for(req.user_id, since.presence if since else 0,
                                                             upto.presence)
                        if f.presence.allows(e)][: _limit(f.presence.limit)]
            if presence:
                body["presence"] = {"events": presence}
                empty = False

        # rooms
        rooms_body, newly_shared, newly_unshared = await self._rooms(req, since, upto, changed_ad, initial)
        if any(rooms_body.values()):
            body["rooms"] = {k: v for k, v in rooms_body.items() if v}
            empty = False

        # device lists (incremental only)
        if since is not None:
            changed = await self.device_lists.changed_for(req.user_id, since.device_lists, upto.device_lists)
            changed |= newly_shared
            left = {u for u in newly_unshared if not self.membership.share_room(req.user_id, u)}
            changed -= left
            if changed or left:
                body["device_lists"] = {"changed": sorted(changed), "left": sorted(left)}
                empty = False

        next_token = upto if to_device_pos == upto.to_device else upto.copy_and_replace(to_device=to_device_pos)
        body["next_batch"] = str(next_token)
        return body, empty

    async def _rooms(self, req: SyncRequest, since: StreamToken | None, upto: StreamToken,
                     changed_ad: dict[str, dict[str, dict[str, Any]]], initial: bool
                     ) -> tuple[dict[str, dict[str, Any]], set[str], set[str]]:
        out: dict[str, dict[str, Any]] = {"join": {}, "invite": {}, "leave": {}, "knock": {}}
        newly_shared: set[str] = set()
        newly_unshared: set[str] = set()
        f = req.filter
        memberships = await self.user_rooms.get(req.user_id)
        ignored = self.account_data.ignored_by(req.user_id)
        since_ev = since.events if since else 0
        joined = [r for r, m in memberships.items() if m.membership == "join"]
        windows = await self._windows(req, memberships, since, upto, initial)
        receipts: dict[str, dict[str, Any]] = {}
        if joined and not f.ephemeral.matches_nothing:
            receipts = await self.receipts.ephemeral_for(
                req.user_id, [r for r in joined if f.allows_room(r)],
                since.receipts if since and not req.full_state else 0, upto.receipts,
                hidden=self.account_data.ignored_by(req.user_id))
        for room_id, info in memberships.items():
            if not f.allows_room(room_id) or info.stream_ordering > upto.events:
                continue
            changed = since is None or info.stream_ordering > since_ev
            if info.membership == "join":
                room = await self._joined_room(req, room_id, info, since, upto, changed_ad, receipts,
                                               initial or changed, windows.get(room_id))
                if room is not None:
                    out["join"][room_id] = room
                    if since is not None and changed:
                        newly_shared.update(self.membership.joined_members(room_id))
            elif info.membership in ("invite", "knock"):
                if changed and self.rooms is not None:
                    stripped = await self.rooms.stripped_state(room_id, info.event_id)
                    if info.membership == "invite" and _inviter(stripped, req.user_id) in ignored:
                        continue  # spec: invites from ignored users are not sent
                    key = "invite_state" if info.membership == "invite" else "knock_state"
                    section = "invite" if info.membership == "invite" else "knock"
                    out[section][room_id] = {key: {"events": stripped}}
            elif info.membership in ("leave", "ban"):
                if (since is None and f.include_leave) or (since is not None and changed):
                    if since is not None and not req.full_state and info.stream_ordering <= since_ev:
                        continue
                    room = await self._left_room(req, room_id, info, since, changed_ad)
                    out["leave"][room_id] = room
                    if since is not None:
                        newly_unshared.update(self._members_seen(room))
        # Others joining or leaving rooms we share, seen in the timelines we return.
        if since is not None:
            for room in out["join"].values():
                for event in room.get("timeline", {}).get("events", ()):
                    if event.get("type") == "m.room.member" and event.get("state_key") != req.user_id:
                        membership = (event.get("content") or {}).get("membership")
                        target = event.get("state_key")
                        if membership == "join":
                            newly_shared.add(target)
                        elif membership in ("leave", "ban"):
                            newly_unshared.add(target)
        newly_shared.discard(req.user_id)
        newly_unshared.discard(req.user_id)
        return out, newly_shared, newly_unshared

    async def _windows(self, req: SyncRequest, memberships: dict[str, MembershipInfo],
                       since: StreamToken | None, upto: StreamToken, initial: bool) -> dict[str, RoomWindow]:
        """The database timelines of the joined rooms sent in full (all of them in an initial sync),
        read together: a few round trips for the lot instead of a few per room."""
        f = req.filter
        if self.rooms is None or f.timeline.matches_nothing:
            return {}
        since_ev = since.events if since is not None and not req.full_state else 0
        wanted = [(room_id, since_ev, upto.events) for room_id, info in memberships.items()
                  if info.membership == "join" and f.allows_room(room_id) and info.stream_ordering <= upto.events
                  and (initial or since is None or info.stream_ordering > since.events)]
        if len(wanted) < 2:
            return {}
        return await self.rooms.timelines(wanted, f.timeline_limit, req.user_id,
                                          with_state=not f.state.matches_nothing)

    def _members_seen(self, room: dict[str, Any]) -> set[str]:
        users: set[str] = set()
        for section in ("state", "timeline"):
            for event in room.get(section, {}).get("events", ()):
                if event.get("type") == "m.room.member":
                    users.add(event.get("state_key"))
        return users

    async def _timeline(self, room_id: str, since: int, upto: int, limit: int, user_id: str,
                        check_visibility: bool) -> tuple[list[SyncEvent], bool]:
        """Events from the ring when it has them; from the database otherwise.

        ``check_visibility`` (initial syncs, newly joined and left rooms) goes to the
        database, where history visibility is applied: the window may reach back
        before the user's join. A joined user's incremental window never does.
        """
        if not check_visibility:
            cached = self.recent.timeline(room_id, since, upto, limit)
            if cached is not None:
                return cached
        if self.rooms is None:
            return [], False
        return await self.rooms.timeline(room_id, since, upto, limit, user_id)

    async def _joined_room(self, req: SyncRequest, room_id: str, info: MembershipInfo,
                           since: StreamToken | None, upto: StreamToken,
                           changed_ad: dict[str, dict[str, dict[str, Any]]],
                           receipts: dict[str, dict[str, Any]], full: bool,
                           window: RoomWindow | None = None) -> dict[str, Any] | None:
        f = req.filter
        since_ev = since.events if since is not None and not req.full_state else 0
        if full and since is not None and not req.full_state:
            since_ev = since.events  # newly joined: timeline from the token, state in full
        events: list[SyncEvent] = []
        limited = False
        if window is not None:
            events, limited = window.events, window.limited
        elif not f.timeline.matches_nothing:
            events, limited = await self._timeline(room_id, since_ev, upto.events, f.timeline_limit,
                                                   req.user_id, full)
        events = self._unignored(req.user_id, events)
        ephemeral = []
        if not f.ephemeral.matches_nothing:
            ignored = self.account_data.ignored_by(req.user_id)
            if since is None or req.full_state or self.typing.changed_since(room_id, since.typing):
                typing_event = self.typing.event(room_id)
                if ignored:  # ignored users' typing notices do not reach the user
                    typing_event = {"type": "m.typing", "content": {
                        "user_ids": [u for u in typing_event["content"]["user_ids"] if u not in ignored]}}
                if since is not None or typing_event["content"]["user_ids"]:
                    ephemeral.append(typing_event)
            if room_id in receipts:  # ignored users' receipts are already left out
                ephemeral.append(receipts[room_id])
            ephemeral = [e for e in ephemeral if f.ephemeral.allows(e)][: _limit(f.ephemeral.limit)]
        room_ad = [{"type": t, "content": c} for t, c in changed_ad.get(room_id, {}).items()]
        room_ad = [e for e in room_ad if f.room_account_data.allows(e)][: _limit(f.room_account_data.limit)]
        if not full and not events and not ephemeral and not room_ad:
            return None
        visible = [e for e in events if f.timeline.allows(e.client)]
        state = await self._state(req, room_id, events, limited, since, upto, full,
                                  window.state_at_start if window is not None else None)
        room: dict[str, Any] = {
            "timeline": {
                "events": [self._format(req, e) for e in visible],
                "limited": limited,
            },
            "state": {"events": [self._format(req, e) for e in state]},
            "ephemeral": {"events": ephemeral},
            "account_data": {"events": room_ad},
        }
        if self.rooms is not None:
            room["timeline"]["prev_batch"] = await self.rooms.prev_batch(
                room_id, events[0] if events else None, upto.events)
        notes, highlights = self.unread.counts(req.user_id, room_id)
        room["unread_notifications"] = {"notification_count": notes, "highlight_count": highlights}
        room["summary"] = self._summary(req.user_id, room_id, state, full)
        return room

    def _summary(self, user_id: str, room_id: str, state: list[SyncEvent], full: bool) -> dict[str, Any]:
        joined = self.membership.joined_members(room_id)
        summary: dict[str, Any] = {"m.joined_member_count": len(joined)}
        if full:
            invited = [e for e in state if e.membership == "invite"]
            summary["m.invited_member_count"] = len(invited)
            names = [e for e in state if e.type in ("m.room.name", "m.room.canonical_alias")]
            if not names:
                summary["m.heroes"] = sorted(u for u in joined if u != user_id)[:5]
        return summary

    async def _state(self, req: SyncRequest, room_id: str, events: list[SyncEvent], limited: bool,
                     since: StreamToken | None, upto: StreamToken, full: bool,
                     known_at_start: StateMap | None = None) -> list[SyncEvent]:
        """State between ``since`` (or nothing, when full) and the start of the timeline.

        ``known_at_start`` is the state at the timeline's start when the caller has it.
        """
        f = req.filter
        if self.rooms is None or f.state.matches_nothing:
            return []
        start = events[0].stream_ordering - 1 if events else upto.events
        if not full and not limited:
            if not f.lazy_load_members:
                return []
            # No gap: only members of the timeline's senders not yet sent to this device.
            sent = self._ll_cache(req, room_id, reset=False)
            needed = {e.sender for e in events}
            if not f.state.include_redundant_members:
                needed -= sent
            needed -= {e.state_key for e in events if e.type == "m.room.member"}
            if not needed:
                return []
            at_start = await self.rooms.state_at(room_id, start)
            members = [at_start[("m.room.member", u)] for u in sorted(needed) if ("m.room.member", u) in at_start]
            sent.update(needed)
            return [e for e in members if f.state.allows(e.client)]
        at_start = known_at_start if known_at_start is not None else await self.rooms.state_at(room_id, start)
        if full:
            chosen = dict(at_start)
        else:
            assert since is not None
            before = await self.rooms.state_at(room_id, since.events)
            chosen = {k: e for k, e in at_start.items()
                      if before.get(k) is None or before[k].event_id != e.event_id}
        if f.lazy_load_members:
            needed = {e.sender for e in events} | {req.user_id}
            sent = self._ll_cache(req, room_id, reset=since is None or req.full_state)
            if not f.state.include_redundant_members:
                needed -= sent
            timeline_ids = {e.event_id for e in events}
            chosen = {k: e for k, e in chosen.items()
                      if k[0] != "m.room.member" or (k[1] in needed and e.event_id not in timeline_ids)}
            if not full:
                # Members the timeline needs but whose events predate the gap.
                for user in needed:
                    key = ("m.room.member", user)
                    if key not in chosen and key in at_start and at_start[key].event_id not in timeline_ids:
                        chosen[key] = at_start[key]
            sent.update(k[1] for k in chosen if k[0] == "m.room.member")
            sent.update(e.state_key for e in events if e.type == "m.room.member" and e.state_key)
        state = [e for e in chosen.values() if f.state.allows(e.client)]
        state.sort(key=lambda e: e.stream_ordering)
        return state[: _limit(f.state.limit)] if f.state.limit is not None else state

    def lazy_members_sent(self, user_id: str, device_id: str | None, room_id: str) -> set[str] | None:
        """Members whose state this device already got in ``room_id`` (lazy loading), if known."""
        per_device = self._ll_sent.get((user_id, device_id))
        return None if per_device is None else per_device.get(room_id)

    def _ll_cache(self, req: SyncRequest, room_id: str, reset: bool) -> set[str]:
        key = (req.user_id, req.device_id)
        per_device = self._ll_sent.get(key)
        if per_device is None:
            per_device = self._ll_sent[key] = {}
            if len(self._ll_sent) > 100_000:
                self._ll_sent.popitem(last=False)
        else:
            self._ll_sent.move_to_end(key)
        if reset or room_id not in per_device:
            per_device[room_id] = set()
            if len(per_device) > LL_CACHE_ROOMS:
                per_device.pop(next(iter(per_device)))
        return per_device[room_id]

    async def _left_room(self, req: SyncRequest, room_id: str, info: MembershipInfo,
                         since: StreamToken | None, changed_ad: dict[str, dict[str, dict[str, Any]]]
                         ) -> dict[str, Any]:
        f = req.filter
        since_ev = since.events if since is not None and not req.full_state else 0
        events, limited = await self._timeline(room_id, since_ev, info.stream_ordering, f.timeline_limit,
                                               req.user_id, True)
        events = self._unignored(req.user_id, events)
        upto = StreamToken(events=info.stream_ordering)
        state = await self._state(req, room_id, events, limited, since, upto, True)
        room_ad = [{"type": t, "content": c} for t, c in changed_ad.get(room_id, {}).items()]
        room: dict[str, Any] = {
            "timeline": {"events": [self._format(req, e) for e in events if f.timeline.allows(e.client)],
                         "limited": limited},
            "state": {"events": [self._format(req, e) for e in state]},
            "account_data": {"events": [e for e in room_ad if f.room_account_data.allows(e)]},
        }
        if self.rooms is not None:
            room["timeline"]["prev_batch"] = await self.rooms.prev_batch(
                room_id, events[0] if events else None, info.stream_ordering)
        return room

    def _unignored(self, user_id: str, events: list[SyncEvent]) -> list[SyncEvent]:
        """``events`` without the non-state events of senders ``user_id`` ignores
        (client-server module "Ignoring Users": state events still go out)."""
        ignored = self.account_data.ignored_by(user_id)
        if not ignored:
            return events
        return [e for e in events if e.is_state or e.sender not in ignored]

    def _format(self, req: SyncRequest, event: SyncEvent) -> dict[str, Any]:
        value = event.for_viewer(req.user_id, req.device_id, req.filter.event_format)
        return req.filter.project(value) if req.filter.event_fields is not None else value


def _inviter(stripped: list[dict[str, Any]], user_id: str) -> str | None:
    """The sender of ``user_id``'s invite among an invite's stripped state (the last member event)."""
    for event in reversed(stripped):
        if event.get("type") == "m.room.member" and event.get("state_key") == user_id:
            sender = event.get("sender")
            return sender if isinstance(sender, str) else None
    return None


def _limit(value: int | None) -> int | None:
    return value if value is not None else None
