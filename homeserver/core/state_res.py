"""State resolution: v1 (room v1), v2 (rooms v2-v11) and v2.1 (room v12).

Pure functions over synchronous callables; the orchestration layer
prefetches the events and auth chains a resolution needs. The algorithms
are in ``content/rooms/v1.md`` ("State resolution"),
``fragments/v2-state-res.md`` and ``v12.md``.

Callables:
    fetch_event(event_id) -> Event | None
        Returns a known event (with ``rejected_reason`` set if it was
        rejected), or None if the event is unknown; unknown events are
        left out of the resolution.
    fetch_auth_chain(event_ids) -> set[str]
        The union of the auth chains of the given events: every event
        reachable through ``auth_events`` links. The given events are not
        themselves included unless one is in another's chain (the spec's
        definition of "auth chain").
"""

from __future__ import annotations

import hashlib
import heapq
import math
from typing import Callable, Iterable, Mapping, Sequence

from homeserver.core.auth import (
    CREATE,
    JOIN_RULES,
    MEMBER,
    POWER_LEVELS,
    AuthError,
    StateKey,
    auth_types_for_event,
    check_auth,
)
from homeserver.core.events import Event
from homeserver.core.power_levels import PowerLevels
from homeserver.core.room_versions import RoomVersion

FetchEvent = Callable[[str], "Event | None"]
FetchAuthChain = Callable[[Iterable[str]], "set[str]"]
StateMap = Mapping[StateKey, str]


def resolve_state(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    fetch_event: FetchEvent,
    fetch_auth_chain: FetchAuthChain,
) -> dict[StateKey, str]:
    """Resolve several states of one room into one.

    Args:
        room_version: Picks the algorithm (``room_version.state_res``).
        state_sets: The states to merge, e.g. the state after each
            ``prev_event`` of a new event. Order does not matter.
        fetch_event: See the module docstring.
        fetch_auth_chain: See the module docstring (unused by v1).

    Returns:
        The resolved state, ``(type, state_key) -> event_id``.
    """
    if not state_sets:
        return {}
    if len(state_sets) == 1:
        return dict(state_sets[0])
    unconflicted, conflicted = _partition(state_sets, strict=room_version.state_res != "v1")
    if not conflicted:
        return unconflicted
    if room_version.state_res == "v1":
        return _resolve_v1(room_version, unconflicted, conflicted, fetch_event)
    return _resolve_v2(room_version, state_sets, unconflicted, conflicted, fetch_event, fetch_auth_chain)


def _partition(
    state_sets: Sequence[StateMap], strict: bool
) -> tuple[dict[StateKey, str], dict[StateKey, set[str]]]:
    """Split into the unconflicted state map and conflicted values per key.

    ``strict`` (v2): a key is unconflicted only if every state has it with
    the same value. v1 only calls it a conflict when values differ, so a
    key missing from some states is still unconflicted there.
    """
    keys: set[StateKey] = set()
    for s in state_sets:
        keys.update(s)
    unconflicted: dict[StateKey, str] = {}
    conflicted: dict[StateKey, set[str]] = {}
    n = len(state_sets)
    for key in keys:
        values = [s[key] for s in state_sets if key in s]
        distinct = set(values)
        if len(distinct) == 1 and (len(values) == n or not strict):
            unconflicted[key] = values[0]
        else:
            conflicted[key] = distinct
    return unconflicted, conflicted


# --- shared: iterative auth checks ------------------------------------------------


def _create_event_for(event: Event, fetch_event: FetchEvent) -> Event | None:
    """The create event named by a v12 room ID."""
    return fetch_event("$" + event.room_id[1:]) if event.room_id else None


def _auth_map_for(
    event: Event, state: Mapping[StateKey, str], fetch_event: FetchEvent
) -> dict[StateKey, Event]:
    """The auth state for ``event``: resolved state where it has the key,
    otherwise the event's own (non-rejected) auth events."""
    rv = event.room_version
    auth: dict[StateKey, Event] = {}
    for aid in event.auth_event_ids:
        ae = fetch_event(aid)
        if ae is not None and not ae.rejected and ae.state_key is not None:
            auth[(ae.type, ae.state_key)] = ae
    if rv.room_id_from_create_event and (CREATE, "") not in auth:
        create = _create_event_for(event, fetch_event)
        if create is not None and not create.rejected:
            auth[(CREATE, "")] = create
    keys = auth_types_for_event(event.type, event.sender, event.state_key, event.content, rv)
    if rv.room_id_from_create_event:
        keys.append((CREATE, ""))
    for key in keys:
        eid = state.get(key)
        if eid is not None:
            ev = fetch_event(eid)
            if ev is not None and not ev.rejected:
                auth[key] = ev
    return auth


def _iterative_auth_checks(
    events: Iterable[Event], state: dict[StateKey, str], fetch_event: FetchEvent
) -> dict[StateKey, str]:
    """Apply each event to ``state`` (in place) if the auth rules allow it."""
    for event in events:
        try:
            check_auth(event, _auth_map_for(event, state, fetch_event))
        except AuthError:
            continue
        state[(event.type, event.state_key or "")] = event.event_id
    return state


# --- v2 and v2.1 -----------------------------------------------------------------


def is_power_event(event: Event) -> bool:
    """Power events may take someone's abilities away (v2 "Definitions")."""
    if event.state_key is None:
        return False
    if event.type in (POWER_LEVELS, JOIN_RULES):
        return True
    if event.type == MEMBER:
        return event.content.get("membership") in ("leave", "ban") and event.sender != event.state_key
    return False


def _resolve_v2(
    rv: RoomVersion,
    state_sets: Sequence[StateMap],
    unconflicted: dict[StateKey, str],
    conflicted: dict[StateKey, set[str]],
    fetch_event: FetchEvent,
    fetch_auth_chain: FetchAuthChain,
) -> dict[StateKey, str]:
    conflicted_ids: set[str] = set().union(*conflicted.values())

    chains = [fetch_auth_chain(list(s.values())) for s in state_sets]
    auth_difference = set().union(*chains) - set(chains[0]).intersection(*chains[1:])

    full_conflicted = conflicted_ids | auth_difference
    if rv.state_res == "v2.1":
        full_conflicted |= _conflicted_subgraph(conflicted_ids, fetch_event)

    events: dict[str, Event] = {}
    for eid in full_conflicted:
        ev = fetch_event(eid)
        if ev is not None:
            events[eid] = ev

    # Step 1: power events plus their auth chains within the full conflicted set.
    power_ids = {eid for eid, ev in events.items() if is_power_event(ev)}
    selected = set(power_ids)
    for eid in power_ids:
        selected |= fetch_auth_chain([eid]) & events.keys()
    ordered_power = _reverse_topological_power_sort(selected, events, fetch_event)

    # Step 2: v2 starts from the unconflicted state, v2.1 from nothing.
    start = {} if rv.state_res == "v2.1" else dict(unconflicted)
    partial = _iterative_auth_checks((events[e] for e in ordered_power), start, fetch_event)

    # Steps 3-4: everything else, in mainline order of the resolved power levels.
    remaining = [events[e] for e in events.keys() - selected]
    ordered_rest = _mainline_sort(remaining, partial.get((POWER_LEVELS, "")), fetch_event)
    resolved = _iterative_auth_checks(ordered_rest, partial, fetch_event)

    # Step 5: the unconflicted state map wins.
    resolved.update(unconflicted)
    return resolved


def _conflicted_subgraph(conflicted_ids: set[str], fetch_event: FetchEvent) -> set[str]:
    """v2.1: events on ``auth_events`` paths between conflicted events.

    An event is on such a path if it is reachable from a conflicted event
    and can itself reach a conflicted event (endpoints included).
    """
    reaches: dict[str, bool] = {}

    def can_reach(eid: str) -> bool:
        # Iterative post-order DFS; the auth graph can be deep.
        stack = [(eid, False)]
        while stack:
            node, expanded = stack.pop()
            if node in reaches and not expanded:
                continue
            ev = fetch_event(node)
            parents = ev.auth_event_ids if ev is not None else []
            if not expanded:
                reaches[node] = node in conflicted_ids  # provisional, guards cycles
                stack.append((node, True))
                stack.extend((p, False) for p in parents if p not in reaches)
            else:
                reaches[node] = node in conflicted_ids or any(reaches.get(p, False) for p in parents)
        return reaches[eid]

    subgraph = set(conflicted_ids)
    for cid in conflicted_ids:
        ev = fetch_event(cid)
        for parent in ev.auth_event_ids if ev is not None else []:
            can_reach(parent)
    # Everything reachable from a conflicted event was visited above; keep
    # the ones that lead back to a conflicted event.
    subgraph.update(eid for eid, ok in reaches.items() if ok)
    return subgraph


def _sender_power(event: Event, fetch_event: FetchEvent) -> float:
    """The sender's level according to the event's own auth events."""
    rv = event.room_version
    pl_event = create = None
    for aid in event.auth_event_ids:
        ae = fetch_event(aid)
        if ae is None:
            continue
        if ae.type == POWER_LEVELS and ae.state_key == "":
            pl_event = ae
        elif ae.type == CREATE and ae.state_key == "":
            create = ae
    if create is None and rv.room_id_from_create_event:
        create = _create_event_for(event, fetch_event)
    if event.type == CREATE:
        create = event
    return PowerLevels.from_events(pl_event, create, rv).user_level(event.sender)


def _reverse_topological_power_sort(
    ids: set[str], events: Mapping[str, Event], fetch_event: FetchEvent
) -> list[str]:
    """Kahn's algorithm over the auth DAG restricted to ``ids``, always
    taking the candidate with (highest power, lowest ts, lowest ID)."""
    children: dict[str, list[str]] = {eid: [] for eid in ids}
    indegree: dict[str, int] = {}
    for eid in ids:
        parents = {p for p in events[eid].auth_event_ids if p in ids}
        indegree[eid] = len(parents)
        for p in parents:
            children[p].append(eid)

    def key(eid: str) -> tuple[float, int, str]:
        ev = events[eid]
        return (-_sender_power(ev, fetch_event), ev.origin_server_ts, eid)

    heap = [key(eid) for eid, d in indegree.items() if d == 0]
    heapq.heapify(heap)
    out: list[str] = []
    while heap:
        _, _, eid = heapq.heappop(heap)
        out.append(eid)
        for child in children[eid]:
            indegree[child] -= 1
            if indegree[child] == 0:
                heapq.heappush(heap, key(child))
    return out


def _pl_auth_event(event: Event, fetch_event: FetchEvent) -> Event | None:
    for aid in event.auth_event_ids:
        ae = fetch_event(aid)
        if ae is not None and ae.type == POWER_LEVELS and ae.state_key == "":
            return ae
    return None


def _mainline_sort(events: list[Event], power_levels_id: str | None, fetch_event: FetchEvent) -> list[Event]:
    """Order by (older mainline position first, then ts, then event ID)."""
    mainline: dict[str, int] = {}
    pl = fetch_event(power_levels_id) if power_levels_id else None
    i = 0
    while pl is not None and pl.event_id not in mainline:
        mainline[pl.event_id] = i
        i += 1
        pl = _pl_auth_event(pl, fetch_event)

    memo: dict[str, float] = {}

    def position(ev: Event) -> float:
        seen: list[str] = []
        cur = _pl_auth_event(ev, fetch_event)
        pos = math.inf
        while cur is not None:
            if cur.event_id in mainline:
                pos = mainline[cur.event_id]
                break
            if cur.event_id in memo:
                pos = memo[cur.event_id]
                break
            seen.append(cur.event_id)
            cur = _pl_auth_event(cur, fetch_event)
        # Any PL event on the way has the same position (its chain leads here).
        for eid in seen:
            memo[eid] = pos
        return pos

    return sorted(events, key=lambda ev: (-position(ev), ev.origin_server_ts, ev.event_id))


# --- v1 ---------------------------------------------------------------------


def _sha1(event_id: str) -> str:
    return hashlib.sha1(event_id.encode("utf-8")).hexdigest()


def _resolve_v1(
    rv: RoomVersion,
    unconflicted: dict[StateKey, str],
    conflicted: dict[StateKey, set[str]],
    fetch_event: FetchEvent,
) -> dict[StateKey, str]:
    resolved = dict(unconflicted)

    def known(ids: set[str]) -> list[Event]:
        return [ev for eid in ids if (ev := fetch_event(eid)) is not None]

    def allowed(ev: Event) -> bool:
        try:
            check_auth(ev, _auth_map_for(ev, resolved, fetch_event))
        except AuthError:
            return False
        return True

    def resolve_auth_key(key: StateKey) -> None:
        # Ascending depth, then descending sha1(event_id); take the first,
        # then keep accepting while each next one is allowed.
        evs = sorted(known(conflicted[key]), key=lambda e: (e.depth, _invert(_sha1(e.event_id))))
        if not evs:
            return
        resolved[key] = evs[0].event_id
        for ev in evs[1:]:
            if not allowed(ev):
                break
            resolved[key] = ev.event_id

    for key in ((POWER_LEVELS, ""), (JOIN_RULES, "")):
        if key in conflicted:
            resolve_auth_key(key)
    for key in sorted(k for k in conflicted if k[0] == MEMBER):
        resolve_auth_key(key)
    for key in sorted(k for k in conflicted if k[0] not in (POWER_LEVELS, JOIN_RULES, MEMBER)):
        # Highest depth, then lowest sha1, that passes auth against R.
        evs = sorted(known(conflicted[key]), key=lambda e: (-e.depth, _sha1(e.event_id)))
        chosen = next((ev for ev in evs if allowed(ev)), None)
        if chosen is None and evs:
            # Nothing passes: keep the best candidate rather than dropping
            # the key (what Synapse does for room v1).
            chosen = evs[-1]
        if chosen is not None:
            resolved[key] = chosen.event_id
    return resolved


def _invert(hexdigest: str) -> str:
    """A string that sorts in the reverse order of ``hexdigest``."""
    return "".join("0123456789abcdef"[15 - int(c, 16)] for c in hexdigest)

