"""Federation over the rooms layer: the PDU checks' view of rooms, and fan-out.

:class:`RoomsBridge` implements :class:`federation.inbound.RoomEventSource`
with the rooms layer's stores, state cache and persister, resolving forks
with ``core.state_res`` over prefetched events. :class:`FanOut` subscribes
to the :class:`EventStream` and hands each event that this server must
send (its own users' events, and remote joins/leaves/knocks it accepted
through ``send_*``) to the sender, addressed to every other server with
joined members (from the in-memory room state).
"""
from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping, Sequence

from twisted.internet import defer

from federation.sender import FederationSender
from homeserver.core.auth import StateKey
from homeserver.core.events import Event
from homeserver.core.ids import InvalidIdError, get_domain_from_id
from homeserver.core.room_versions import RoomVersion
from homeserver.core.state_res import resolve_state
from homeserver.rooms.persist import EventContext, Persister
from homeserver.rooms.state_cache import StateCache
from homeserver.rooms.stream import EventStream, PersistedEvent
from homeserver.storage.events import EventStore
from homeserver.storage.state import StateStore

logger = logging.getLogger(__name__)

#: Events walked at most when prefetching auth chains for a resolution or a send_join answer.
MAX_AUTH_CHAIN = 20_000


def domain(user_id: str) -> str | None:
    try:
        return get_domain_from_id(user_id)
    except InvalidIdError:
        return None


class RoomsBridge:
    """The rooms layer as federation sees it."""

    def __init__(self, server_name: str, cache: StateCache, events: EventStore, state: StateStore,
                 persister: Persister) -> None:
        self.server_name = server_name
        self.cache = cache
        self.events = events
        self.state = state
        self.persister = persister

    async def room_version(self, room_id: str) -> RoomVersion | None:
        room = await self.cache.get(room_id)
        return room.room_version if room is not None else None

    async def get_events(self, event_ids: list[str]) -> dict[str, Event]:
        found = await self.events.get_events(event_ids, allow_outlier=True, allow_rejected=True)
        return {k: v.event for k, v in found.items()}

    async def auth_chain(self, event_ids: Iterable[str]) -> dict[str, Event]:
        """Every stored event reachable through auth_events from ``event_ids`` (not including them)."""
        chain: dict[str, Event] = {}
        frontier = list(event_ids)
        seen = set(frontier)
        while frontier and len(chain) < MAX_AUTH_CHAIN:
            found = await self.get_events(frontier)
            nxt = []
            for ev in found.values():
                for aid in ev.auth_event_ids:
                    if aid not in seen:
                        seen.add(aid)
                        nxt.append(aid)
            frontier = nxt
            for ev in (await self.get_events(nxt)).values() if nxt else ():
                chain[ev.event_id] = ev
        return chain

    async def state_ids_after(self, event_id: str) -> dict[StateKey, str] | None:
        return await self.state.get_state_ids_at(event_id)

    async def resolve(self, rv: RoomVersion, state_sets: Sequence[Mapping[StateKey, str]]) -> dict[StateKey, str]:
        """Resolve states with the core, prefetching the events and auth chains it may ask for."""
        distinct = [dict(s) for s in state_sets]
        if len(distinct) <= 1 or all(d == distinct[0] for d in distinct):
            return distinct[0] if distinct else {}
        ids = {e for s in distinct for e in s.values()}
        events = await self.get_events(list(ids))
        chain = await self.auth_chain(ids)
        events.update(chain)
        chains: dict[str, set[str]] = {}

        def chain_of(eid: str) -> set[str]:
            if eid in chains:
                return chains[eid]
            out: set[str] = set()
            stack = list(events[eid].auth_event_ids) if eid in events else []
            while stack:
                a = stack.pop()
                if a in out:
                    continue
                out.add(a)
                if a in events:
                    stack.extend(events[a].auth_event_ids)
            chains[eid] = out
            return out

        def fetch_auth_chain(eids: Iterable[str]) -> set[str]:
            result: set[str] = set()
            for e in eids:
                result |= chain_of(e)
            return result

        return resolve_state(rv, distinct, events.get, fetch_auth_chain)

    async def state_before(self, room_id: str, prev_event_ids: list[str]) -> dict[StateKey, Event] | None:
        room = await self.cache.get(room_id)
        if room is None:
            return None
        rv = room.room_version
        if prev_event_ids and sorted(prev_event_ids) == sorted(room.extremities):
            # The common case: the event extends exactly our tip, so the state before it is the
            # room's current state, already in memory.
            return dict(room.state)
        sets = []
        for prev in prev_event_ids:
            after = await self.state_ids_after(prev)
            if after is None:
                return None
            sets.append(after)
        ids = await self.resolve(rv, sets)
        found = await self.get_events(list(ids.values()))
        return {k: found[e] for k, e in ids.items() if e in found}

    async def current_state(self, room_id: str) -> dict[StateKey, Event]:
        room = await self.cache.get(room_id)
        return dict(room.state) if room is not None else {}

    async def persist_invite(self, event: Event, invite_room_state: list[Any]) -> None:
        """Store an invite of a local user to a room this server is not in, so sync shows it.

        The event is persisted on its own (no state before it, no extremities),
        with the stripped state the inviting server sent in ``unsigned``.
        """
        if (await self.get_events([event.event_id])):
            return
        event.unsigned["invite_room_state"] = [s for s in invite_room_state[:50] if isinstance(s, dict)]
        room = await self.cache.get(event.room_id)
        if room is not None and room.get("m.room.create") is not None:
            # We are in the room already: it arrives through the room like any event.
            return
        await self.persister.persist([EventContext(event, state_before={}, new_extremities=[])])

    async def forward_extremities(self, room_id: str) -> list[str]:
        room = await self.cache.get(room_id)
        return list(room.extremities) if room is not None else []

    async def persist_batch(self, outcomes: list[Any], tip_extremities: list[str]) -> None:
        """Persist a run of checked events that extended the tip one after another, in one commit.

        If the room moved on meanwhile (a local send interleaved), fall back to
        one at a time, which resolves the fork.
        """
        room = await self.cache.get(outcomes[0].event.room_id)
        if room is None or sorted(room.extremities) != sorted(tip_extremities):
            for o in outcomes:
                await self.persist_received(o.event, o.state_before, o.soft_failed)
            return
        contexts = []
        for o in outcomes:
            if o.soft_failed:
                contexts.append(EventContext(o.event, outlier=True))
            else:
                contexts.append(EventContext(o.event, state_before={k: e.event_id for k, e in o.state_before.items()}))
        await self.persister.persist(contexts)

    async def persist_received(self, event: Event, state_before: Mapping[StateKey, Event],
                               soft_failed: bool) -> None:
        """Persist a checked event. Forks: the new current state is the resolution of both sides."""
        before_ids = {k: e.event_id for k, e in state_before.items()}
        if soft_failed:
            # Stored for reference, kept out of the timeline and extremities.
            await self.persister.persist([EventContext(event, outlier=True)])
            return
        if event.rejected:
            await self.persister.persist([EventContext(event, state_before=before_ids)])
            return
        room = await self.cache.get(event.room_id)
        new_current = None
        if room is not None and set(room.extremities) - set(event.prev_event_ids):
            after = dict(before_ids)
            if event.state_key is not None:
                after[(event.type, event.state_key)] = event.event_id
            resolved = await self.resolve(event.room_version, [room.state_ids(), after])
            if resolved != after:
                new_current = resolved
        await self.persister.persist([EventContext(event, state_before=before_ids, new_current_state=new_current)])


async def fetch_missing_events(client: Any, origin: str, room_id: str, earliest: list[str], latest: list[str],
                               limit: int) -> list[Any]:
    """POST get_missing_events to ``origin`` (the inbound gap filler's network half)."""
    from federation.transport.client import encode_path

    resp = await client.post_json(origin, encode_path("/_matrix/federation/v1/get_missing_events/%s", room_id),
                                  {"earliest_events": earliest, "latest_events": latest, "limit": limit,
                                   "min_depth": 0}, max_bytes=8 << 20)
    events = resp.get("events") if isinstance(resp, dict) else None
    return events if isinstance(events, list) else []


class FanOut:
    """Sends this server's new events to the other servers in each room."""

    def __init__(self, server_name: str, sender: FederationSender, cache: StateCache) -> None:
        self._server_name = server_name
        self._sender = sender
        self._cache = cache
        #: Remote events this server accepted through send_join/leave/knock and must pass on.
        self._relay: set[str] = set()

    def subscribe(self, stream: EventStream) -> None:
        stream.subscribe(self.on_events)

    def relay(self, event_id: str) -> None:
        self._relay.add(event_id)

    def on_events(self, batch: Sequence[PersistedEvent]) -> None:
        for pe in batch:
            ev = pe.event
            local = domain(ev.sender) == self._server_name
            relayed = ev.event_id in self._relay
            self._relay.discard(ev.event_id)
            if not (local or relayed) or ev.rejected:
                continue
            dests = {domain(u) for u in pe.joined_members}
            if ev.type == "m.room.member" and ev.state_key:
                dests.add(domain(ev.state_key))  # kicked, banned, left or invited users' servers
            room = self._cache.peek(ev.room_id)
            if room is not None:
                dests |= {domain(u) for u in room.joined}
            dests.discard(None)
            dests.discard(self._server_name)
            if relayed:
                dests.discard(domain(ev.sender))
            if dests:
                defer.ensureDeferred(self._sender.send_pdu(ev.room_id, ev.get_pdu_json(), sorted(dests)))\
                    .addErrback(lambda f: logger.error("queueing %s failed: %s", ev.event_id, f.value))
