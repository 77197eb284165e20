"""Backfill: a room's older history, fetched from other servers ("Backfilling and retrieving missing events").

Two callers: :class:`federation.membership.FederationMembership` right after
a remote join (the latest ``federation.join_backfill_limit`` events before
the join), and ``/messages`` when paging backwards reaches the start of the
locally stored history (:class:`Backfiller` is the
:class:`homeserver.rooms.history.RemoteHistory` that ``server.py`` plugs in).

Each returned PDU gets the checks of an event learnt outside a transaction
(:func:`check_pdus`): format and signatures (else dropped), content hash
(a mismatch stores it redacted), auth against its own auth events (else
stored rejected). Auth events we lack are fetched first with ``event_auth``
and stored as outliers. The rest is stored as backfilled history: in the
timeline by depth, with negative stream orderings and the state at that
point of history (derived backwards from the newest known event after it,
so history visibility judges old events by the membership and visibility
of their time), without touching the room's current state or extremities.

Servers are asked best first: the one the room was joined through, then the
others with joined members, most members first. One request per room and
point is in flight at a time (others wait for its answer), and a point where
no server had anything older is not asked again for a minute.
"""
from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from typing import Any, Sequence

from twisted.internet import defer

from federation.inbound import GetKey, PduDropped, verify_pdu_signatures
from federation.rooms import RoomsBridge, domain
from federation.transport.client import FederationClient, FederationRequestError, encode_path
from homeserver.core.auth import AuthError, StateKey, check_auth, check_state_independent_auth, state_map
from homeserver.core.events import Event, EventFormatError, check_content_hash, check_event_format, redact_pdu
from homeserver.core.room_versions import RoomVersion
from homeserver.rooms.persist import EventContext
from homeserver.util.clock import Clock

logger = logging.getLogger(__name__)

#: Events per backfill request, at most (asked and served).
MAX_BACKFILL = 100
#: Event IDs a backfill starts from, at most.
MAX_FROM = 20
#: Servers tried per backfill.
MAX_SERVERS = 5
#: Events whose unknown auth events are fetched (one event_auth request each) per backfill.
MAX_AUTH_FETCHES = 5
#: A point where no server had anything older is not asked again before this.
RETRY_NOTHING_MS = 60_000
#: Points remembered as exhausted, at most.
MAX_EXHAUSTED = 1000


async def check_pdus(pdus: Sequence[Any], rv: RoomVersion, room_id: str, get_key: GetKey,
                     bridge: RoomsBridge) -> dict[str, Event]:
    """Format, signatures, hashes and auth (against each event's auth events) for events learnt in bulk.

    Used for a send_join answer's state and auth chain, and for backfilled
    history. Events failing format or signatures are left out; a bad
    content hash yields the redacted event; failing auth yields the event
    with ``rejected_reason`` set. Auth events are looked up among the
    given events (checked oldest first) and the stored ones.
    """
    events: dict[str, Event] = {}
    for pdu in pdus:
        if not isinstance(pdu, dict) or pdu.get("room_id", room_id) != room_id:
            continue
        try:
            check_event_format(pdu, rv)
            ev = Event(pdu, rv)
            if ev.event_id in events:
                continue
            await verify_pdu_signatures(pdu, rv, get_key)
        except (EventFormatError, PduDropped, KeyError, TypeError, ValueError) as e:
            logger.info("dropping an event of %s: %s", room_id, e)
            continue
        if not check_content_hash(pdu):
            ev = Event(redact_pdu(pdu, rv), rv, ev.event_id)
        events[ev.event_id] = ev
    create_id = "$" + room_id[1:] if rv.room_id_from_create_event else None
    cited = {a for ev in events.values() for a in ev.auth_event_ids if a not in events}
    if create_id is not None and create_id not in events:
        cited.add(create_id)
    known = await bridge.get_events(sorted(cited)) if cited else {}
    out: dict[str, Event] = {}
    for ev in sorted(events.values(), key=lambda e: (e.depth, e.event_id)):
        auth = {a: out.get(a) or known.get(a) for a in ev.auth_event_ids}
        auth = {k: v for k, v in auth.items() if v is not None}
        create = (out.get(create_id) or known.get(create_id)) if create_id is not None else None
        try:
            check_state_independent_auth(ev, auth, create)
            check_auth(ev, {**state_map(auth.values()),
                            **({("m.room.create", ""): create} if create is not None else {})})
        except AuthError as e:
            ev = Event(ev.pdu, rv, ev.event_id, rejected_reason=e.reason)
        out[ev.event_id] = ev
    return out


class Backfiller:
    """Fetches, checks and stores older history of rooms this server is in."""

    def __init__(self, server_name: str, client: FederationClient, bridge: RoomsBridge, get_key: GetKey,
                 clock: Clock) -> None:
        self._server_name = server_name
        self._client = client
        self._bridge = bridge
        self._get_key = get_key
        self._clock = clock
        #: room_id -> the server this server joined the room through (asked first).
        self._joined_via: dict[str, str] = {}
        #: (room_id, from IDs) -> callers waiting for the request in flight.
        self._in_flight: dict[tuple[str, tuple[str, ...]], list[defer.Deferred[int]]] = {}
        #: (room_id, from IDs) -> when no server had anything older.
        self._exhausted: OrderedDict[tuple[str, tuple[str, ...]], int] = OrderedDict()

    def joined_via(self, room_id: str, server: str) -> None:
        """Remember the server a room was joined through: it has the room's history."""
        self._joined_via[room_id] = server

    def servers_for(self, room: Any) -> list[str]:
        """Servers with joined members, best first: the one joined through, then by member count."""
        counts = Counter(d for d in (domain(u) for u in room.joined) if d and d != self._server_name)
        order = sorted(counts, key=lambda s: (-counts[s], s))
        via = self._joined_via.get(room.room_id)
        if via in counts:
            order.remove(via)
            order.insert(0, via)
        return order

    async def backfill(self, room_id: str, from_event_ids: Sequence[str], limit: int) -> int:
        """``RemoteHistory.backfill``: up to ``limit`` events before ``from_event_ids``, from the best server."""
        point = (room_id, tuple(sorted(set(from_event_ids)))[:MAX_FROM])
        waiters = self._in_flight.get(point)
        if waiters is not None:  # the same point is being fetched: share its answer
            d: defer.Deferred[int] = defer.Deferred()
            waiters.append(d)
            return await d
        since = self._exhausted.get(point)
        if since is not None and self._clock.time_msec() - since < RETRY_NOTHING_MS:
            return 0
        self._in_flight[point] = []
        try:
            got = await self._from_any(room_id, list(point[1]), max(1, min(limit, MAX_BACKFILL)))
        except Exception:
            logger.exception("backfilling %s failed", room_id)
            got = 0
        if not got:
            self._exhausted[point] = self._clock.time_msec()
            while len(self._exhausted) > MAX_EXHAUSTED:
                self._exhausted.popitem(last=False)
        for w in self._in_flight.pop(point):
            w.callback(got)
        return got

    async def _from_any(self, room_id: str, from_ids: list[str], limit: int) -> int:
        room = await self._bridge.cache.get(room_id)
        # Only rooms we take part in: an invite alone does not entitle us to the history.
        if room is None or not any(domain(u) == self._server_name for u in room.joined):
            return 0
        for server in self.servers_for(room)[:MAX_SERVERS]:
            got = await self.fetch_from(server, room_id, room.room_version, from_ids, limit)
            if got:
                return got
        return 0

    async def fetch_from(self, server: str, room_id: str, rv: RoomVersion, from_ids: Sequence[str],
                         limit: int) -> int | None:
        """GET backfill from one server, check the events and store the new ones as history.

        Returns:
            How many events were stored, or None when the request failed.
        """
        try:
            resp = await self._client.get_json(
                server, encode_path("/_matrix/federation/v1/backfill/%s", room_id),
                {"v": list(from_ids)[:MAX_FROM], "limit": str(limit)}, max_bytes=16 << 20)
        except FederationRequestError as e:
            logger.info("backfill of %s from %s failed: %s", room_id, server, e)
            return None
        pdus = resp.get("pdus") if isinstance(resp, dict) else None
        if not isinstance(pdus, list):
            return None
        pdus = pdus[:limit]
        await self._fetch_missing_auth(server, room_id, rv, pdus)
        checked = await check_pdus(pdus, rv, room_id, self._get_key, self._bridge)
        in_timeline = await self._bridge.events.get_events(list(checked), allow_outlier=False, allow_rejected=True)
        new = {eid: ev for eid, ev in checked.items() if eid not in in_timeline}
        states = await self._history_states(room_id, new)
        contexts = [EventContext(ev, state_before=states[ev.event_id], backfilled=True)
                    for ev in sorted(new.values(), key=lambda e: (e.depth, e.event_id)) if ev.event_id in states]
        if contexts:
            await self._bridge.persister.persist(contexts)
        return len(contexts)

    async def _fetch_missing_auth(self, server: str, room_id: str, rv: RoomVersion, pdus: list[Any]) -> None:
        """Auth events cited by the batch that we lack: fetch (event_auth), check and store as outliers."""
        parsed: dict[str, Event] = {}
        for pdu in pdus:
            try:
                ev = Event(pdu, rv)
            except Exception:
                continue
            parsed[ev.event_id] = ev
        cited = {a for ev in parsed.values() for a in ev.auth_event_ids if a not in parsed}
        if not cited:
            return
        known = await self._bridge.get_events(sorted(cited))
        lacking = [ev for ev in sorted(parsed.values(), key=lambda e: -e.depth)
                   if any(a not in parsed and a not in known for a in ev.auth_event_ids)]
        chain: list[Any] = []
        for ev in lacking[:MAX_AUTH_FETCHES]:
            try:
                resp = await self._client.get_json(
                    server, encode_path("/_matrix/federation/v1/event_auth/%s/%s", room_id, ev.event_id),
                    max_bytes=16 << 20)
            except FederationRequestError as e:
                logger.info("event_auth of %s from %s failed: %s", ev.event_id, server, e)
                continue
            got = resp.get("auth_chain") if isinstance(resp, dict) else None
            if isinstance(got, list):
                chain.extend(got[:MAX_BACKFILL * 10])
        if not chain:
            return
        checked = await check_pdus(chain, rv, room_id, self._get_key, self._bridge)
        stored = await self._bridge.get_events(list(checked))
        outliers = [EventContext(e, outlier=True) for e in sorted(checked.values(), key=lambda e: (e.depth, e.event_id))
                    if e.event_id not in stored]
        if outliers:
            await self._bridge.persister.persist(outliers)

    async def _history_states(self, room_id: str, batch: dict[str, Event]) -> dict[str, dict[StateKey, str]]:
        """The state before each backfilled event, derived from the newest known event after it.

        The state after an old event is taken to be the state before its
        nearest child (in the batch, or already in the timeline); the state
        before it undoes the event's own change, using the previous holder
        of its key when the event cites it among its auth events (as
        membership and power-level changes do). Events connected to no
        known child are left out.
        """
        if not batch:
            return {}
        in_batch: dict[str, list[Event]] = {}
        for ev in batch.values():
            for p in ev.prev_event_ids:
                if p in batch:
                    in_batch.setdefault(p, []).append(ev)
        stored_children = await self._bridge.events.timeline_children(room_id, list(batch))
        cited = {a for ev in batch.values() for a in ev.auth_event_ids if a not in batch}
        auth_keys = {eid: (e.type, e.state_key) for eid, e in (await self._bridge.get_events(sorted(cited))).items()}
        auth_keys.update({eid: (e.type, e.state_key) for eid, e in batch.items()})
        stored_states: dict[str, dict[StateKey, str] | None] = {}
        before: dict[str, dict[StateKey, str]] = {}
        for ev in sorted(batch.values(), key=lambda e: (-e.depth, e.event_id)):
            after: dict[StateKey, str] | None = None
            for child in sorted(in_batch.get(ev.event_id, []), key=lambda e: e.depth):
                after = before.get(child.event_id)
                if after is not None:
                    break
            for child_id in stored_children.get(ev.event_id, []) if after is None else []:
                if child_id not in stored_states:
                    stored_states[child_id] = await self._bridge.state.get_state_ids_at(child_id, before=True)
                after = stored_states[child_id]
                if after is not None:
                    break
            if after is None:
                continue
            state = dict(after)
            if ev.state_key is not None and not ev.rejected:
                key = (ev.type, ev.state_key)
                prior = next((a for a in ev.auth_event_ids if auth_keys.get(a) == key), None)
                if prior is not None:
                    state[key] = prior
                else:
                    state.pop(key, None)
            before[ev.event_id] = state
        return before
