"""StateStore: state groups, the state at each event, current state and memberships.

Tables: ``state_groups`` / ``state_group_entries`` (a state snapshot stored
as a delta over a previous group; chains are bounded by
:data:`MAX_DELTA_DEPTH`, after which a full snapshot is written),
``event_state`` (the groups before and after each timeline event),
``current_state`` and ``room_memberships`` (the current membership of each
user in each room, for "rooms of a user" and "members of a room").

A state map is ``{(type, state_key): event_id}``. State groups are
immutable, so their maps are cached in memory by group ID.
"""
from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from homeserver.storage.database import Database, Txn, insert_many

if TYPE_CHECKING:
    from homeserver.storage.events import StoredEvent

StateKey = tuple[str, str]
StateMap = dict[StateKey, str]

#: After this many deltas in a chain, a group is stored as a full snapshot.
MAX_DELTA_DEPTH = 50
#: How many state group maps the in-memory cache keeps.
GROUP_CACHE_SIZE = 500

#: The entries of a state group and of every group its delta chain rests on, deepest first
#: (args: group, room_id, room_id). Applying the rows in order yields the group's state.
_GROUP_CHAIN_SQL = (
    "WITH RECURSIVE chain(sg, lvl) AS ("
    " SELECT CAST(? AS BIGINT), 0"
    " UNION ALL SELECT g.prev_group, c.lvl + 1 FROM state_groups g JOIN chain c"
    " ON g.room_id = ? AND g.state_group = c.sg WHERE g.prev_group IS NOT NULL)"
    " SELECT c.lvl, s.type, s.state_key, s.event_id FROM chain c"
    " JOIN state_group_entries s ON s.room_id = ? AND s.state_group = c.sg")


@dataclass(frozen=True)
class Membership:
    """A row of ``room_memberships``."""

    room_id: str
    user_id: str
    membership: str
    event_id: str
    sender: str
    stream_ordering: int
    forgotten: bool = False


class StateStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._groups: OrderedDict[int, tuple[StateMap, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._next_group: "itertools.count[int] | None" = None

    def load_ids(self) -> None:
        """Start group numbering after the highest stored group (at start-up)."""
        top = self.db.run_blocking(lambda txn: txn.scalar("SELECT MAX(state_group) FROM state_groups"))
        self._next_group = itertools.count(int(top or 0) + 1)

    # --- cache -------------------------------------------------------------

    def _cache_group(self, group: int, state: StateMap, depth: int) -> None:
        with self._lock:  # written from database threads
            self._groups[group] = (state, depth)
            self._groups.move_to_end(group)
            while len(self._groups) > GROUP_CACHE_SIZE:
                self._groups.popitem(last=False)

    def _cached_group(self, group: int) -> tuple[StateMap, int] | None:
        with self._lock:
            return self._groups.get(group)

    # --- writes (inside the persister's transaction) -------------------------

    def new_group_txn(self, txn: Txn, room_id: str, state: Mapping[StateKey, str],
                      base_group: int | None) -> int:
        """Store ``state`` as a new group, as a delta over ``base_group`` when possible.

        Returns:
            The new group's ID. Its map is cached, so reads after commit are
            served from memory.
        """
        if self._next_group is None:
            self.load_ids()
        assert self._next_group is not None
        group = next(self._next_group)
        base = self._group_txn(txn, room_id, base_group) if base_group is not None else None
        if base is not None and base[1] < MAX_DELTA_DEPTH:
            base_state, base_depth = base
            delta: dict[StateKey, str | None] = {k: v for k, v in state.items() if base_state.get(k) != v}
            for k in base_state:
                if k not in state:
                    delta[k] = None
            prev, depth = base_group, base_depth + 1
        else:
            delta, prev, depth = dict(state), None, 0
        txn.queue("INSERT INTO state_groups (room_id, state_group, prev_group, delta_depth) VALUES (?,?,?,?)",
                  (room_id, group, prev, depth))
        insert_many(txn, "state_group_entries (room_id, state_group, type, state_key, event_id)",
                    [(room_id, group, k[0], k[1], v) for k, v in delta.items()])
        self._cache_group(group, dict(state), depth)
        return group

    def store_event_state_txn(self, txn: Txn, rows: Sequence[tuple[str, str, int, int]]) -> None:
        """Record ``(room_id, event_id, state_before, state_after)`` per event."""
        insert_many(txn, "event_state (room_id, event_id, state_before, state_after)", rows,
                    "ON CONFLICT DO NOTHING")

    def update_current_state_txn(self, txn: Txn, room_id: str,
                                 delta: Mapping[StateKey, str | None]) -> None:
        for (etype, skey), event_id in delta.items():
            if event_id is None:
                txn.queue("DELETE FROM current_state WHERE room_id = ? AND type = ? AND state_key = ?",
                          (room_id, etype, skey))
            else:
                txn.queue(
                    "INSERT INTO current_state (room_id, type, state_key, event_id) VALUES (?,?,?,?)"
                    " ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id",
                    (room_id, etype, skey, event_id))

    def update_memberships_txn(self, txn: Txn, rows: Iterable[Membership]) -> None:
        for m in rows:
            txn.queue(
                "INSERT INTO room_memberships (room_id, user_id, membership, event_id, sender, stream_ordering,"
                " forgotten) VALUES (?,?,?,?,?,?,?) ON CONFLICT (room_id, user_id) DO UPDATE SET"
                " membership = excluded.membership, event_id = excluded.event_id, sender = excluded.sender,"
                " stream_ordering = excluded.stream_ordering, forgotten = excluded.forgotten",
                (m.room_id, m.user_id, m.membership, m.event_id, m.sender, m.stream_ordering, m.forgotten))

    # --- reads -------------------------------------------------------------

    def _group_txn(self, txn: Txn, room_id: str, group: int) -> tuple[StateMap, int] | None:
        hit = self._cached_group(group)
        if hit is not None:
            return hit
        rows = txn.query(
            _GROUP_CHAIN_SQL +
            " ORDER BY c.lvl DESC", (group, room_id, room_id))
        depth = txn.scalar("SELECT delta_depth FROM state_groups WHERE room_id = ? AND state_group = ?",
                           (room_id, group))
        if depth is None:
            return None
        state: StateMap = {}
        for _lvl, etype, skey, event_id in rows:
            if event_id is None:
                state.pop((etype, skey), None)
            else:
                state[(etype, skey)] = event_id
        self._cache_group(group, state, int(depth))
        return state, int(depth)

    async def get_group_state(self, room_id: str, group: int) -> StateMap:
        hit = self._cached_group(group)
        if hit is not None:
            return hit[0]
        found = await self.db.run(self._group_txn, room_id, group)
        return dict(found[0]) if found else {}

    async def get_group_values(self, room_id: str, group: int, keys: Sequence[StateKey]) -> StateMap:
        """Only ``keys`` of a group's state: from the cache, else one query that reads just those rows."""
        return (await self.get_groups_values(room_id, [group], keys))[group]

    async def get_groups_values(self, room_id: str, groups: Iterable[int], keys: Sequence[StateKey]
                                ) -> dict[int, StateMap]:
        """:meth:`get_group_values` for several groups of a room: the uncached ones in one transaction."""
        out: dict[int, StateMap] = {}
        missing = []
        for group in groups:
            hit = self._cached_group(group)
            if hit is not None or not keys:
                out[group] = {k: hit[0][k] for k in keys if k in hit[0]} if hit is not None else {}
            else:
                missing.append(group)

        def txn_fn(txn: Txn) -> dict[int, StateMap]:
            conds = " OR ".join(["(s.type = ? AND s.state_key = ?)"] * len(keys))
            found: dict[int, StateMap] = {}
            for group in missing:
                rows = txn.query(
                    _GROUP_CHAIN_SQL +
                    f" WHERE {conds} ORDER BY c.lvl DESC",
                    [group, room_id, room_id, *[x for k in keys for x in k]])
                values: StateMap = {}
                found[group] = values
                for _lvl, etype, skey, event_id in rows:
                    if event_id is None:
                        values.pop((etype, skey), None)
                    else:
                        values[(etype, skey)] = event_id
            return found
        if missing:
            out.update(await self.db.run(txn_fn))
        return out

    async def get_groups_state(self, groups: Iterable[tuple[str, int]]) -> dict[int, StateMap]:
        """``group -> state`` for ``(room_id, group)`` pairs: the uncached ones in one transaction.

        The maps may be the cache's own: callers must not change them.
        """
        out: dict[int, StateMap] = {}
        missing = []
        for room_id, group in groups:
            hit = self._cached_group(group)
            if hit is not None:
                out[group] = hit[0]
            else:
                missing.append((room_id, group))

        def txn_fn(txn: Txn) -> dict[int, StateMap]:
            found = {}
            for room_id, group in missing:
                loaded = self._group_txn(txn, room_id, group)
                found[group] = loaded[0] if loaded is not None else {}
            return found
        if missing:
            out.update(await self.db.run(txn_fn))
        return out

    async def get_event_groups(self, event_ids: Sequence[str], room_id: str | None = None
                               ) -> dict[str, tuple[str, int, int]]:
        """``event_id -> (room_id, state_before, state_after)`` for timeline events.

        With ``room_id``, only events of that room (looked up by primary key).
        """
        if not event_ids:
            return {}
        return await self.db.run(self.get_event_groups_txn, event_ids, room_id)

    async def groups_of(self, events: Sequence["StoredEvent"], room_id: str | None = None
                        ) -> dict[str, tuple[str, int, int]]:
        """:meth:`get_event_groups` for stored events: from memory where the persister left the
        groups on them (``StoredEvent.state_before``/``state_after``), one query for the rest."""
        out = {e.event_id: (e.room_id, e.state_before, e.state_after) for e in events
               if e.state_before is not None and e.state_after is not None}
        if len(out) < len(events):
            out.update(await self.get_event_groups([e.event_id for e in events if e.event_id not in out], room_id))
        return out

    def get_event_groups_txn(self, txn: Txn, event_ids: Sequence[str], room_id: str | None = None
                             ) -> dict[str, tuple[str, int, int]]:
        """:meth:`get_event_groups` inside a caller's transaction."""
        out = {}
        room_cond, room_args = ("room_id = ? AND ", [room_id]) if room_id is not None else ("", [])
        for i in range(0, len(event_ids), 500):
            cond, args = txn.in_list("event_id", list(event_ids[i:i + 500]))
            for eid, room, before, after in txn.query(
                    "SELECT event_id, room_id, state_before, state_after FROM event_state"
                    f" WHERE {room_cond}{cond}", [*room_args, *args]):
                out[eid] = (room, int(before), int(after))
        return out

    async def get_state_ids_at(self, event_id: str, before: bool = False) -> StateMap | None:
        """The state after (or before) a timeline event, or None if unknown."""
        groups = await self.get_event_groups([event_id])
        if event_id not in groups:
            return None
        room_id, g_before, g_after = groups[event_id]
        return await self.get_group_state(room_id, g_before if before else g_after)

    async def get_current_state_ids(self, room_id: str) -> StateMap:
        rows = await self.db.run(lambda txn: txn.query(
            "SELECT type, state_key, event_id FROM current_state WHERE room_id = ?", (room_id,)))
        return {(t, k): e for t, k, e in rows}

    async def get_rooms_for_user(self, user_id: str, memberships: Sequence[str] = ("join",),
                                 include_forgotten: bool = False) -> list[Membership]:
        def txn_fn(txn: Txn) -> list[Membership]:
            cond, args = txn.in_list("membership", list(memberships))
            rows = txn.query(
                "SELECT room_id, user_id, membership, event_id, sender, stream_ordering, forgotten"
                f" FROM room_memberships WHERE user_id = ? AND {cond}", [user_id, *args])
            return [Membership(r[0], r[1], r[2], r[3], r[4], int(r[5]), bool(r[6])) for r in rows]
        rows = await self.db.run(txn_fn)
        return [m for m in rows if include_forgotten or not m.forgotten]

    async def get_membership(self, room_id: str, user_id: str) -> Membership | None:
        row = await self.db.run(lambda txn: txn.query_one(
            "SELECT room_id, user_id, membership, event_id, sender, stream_ordering, forgotten"
            " FROM room_memberships WHERE room_id = ? AND user_id = ?", (room_id, user_id)))
        return Membership(row[0], row[1], row[2], row[3], row[4], int(row[5]), bool(row[6])) if row else None

    async def forget(self, room_id: str, user_id: str) -> None:
        await self.db.run(lambda txn: txn.execute(
            "UPDATE room_memberships SET forgotten = ? WHERE room_id = ? AND user_id = ?",
            (True, room_id, user_id)))

    async def count_joined(self, room_ids: Sequence[str]) -> dict[str, int]:
        def txn_fn(txn: Txn) -> dict[str, int]:
            cond, args = txn.in_list("room_id", list(room_ids))
            return {r[0]: int(r[1]) for r in txn.query(
                f"SELECT room_id, COUNT(*) FROM room_memberships WHERE membership = ? AND {cond}"
                " GROUP BY room_id", ["join", *args])}
        return await self.db.run(txn_fn) if room_ids else {}
