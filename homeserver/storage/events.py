"""EventStore: the events of every room, their DAG edges and their orderings.

Tables: ``events`` (the JSON, stored once), ``event_edges``, ``event_auth``,
``event_forward_extremities``, ``redactions``, ``event_relations`` and
``event_txn_ids``. State lives in :mod:`homeserver.storage.state`.

Writes happen only inside the persister's transaction
(:meth:`EventStore.persist_txn`); reads go through an in-memory cache of
:class:`StoredEvent` keyed by event ID (events are immutable, except that a
later redaction is attached, which the persister updates after commit).
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from homeserver.core.events import Event
from homeserver.core.room_versions import get_room_version
from homeserver.storage.database import Database, Txn, insert_many
from homeserver.util import json as jsonutil

#: How many events the in-memory cache keeps.
EVENT_CACHE_SIZE = 50_000

#: How long a client transaction ID is remembered (the spec lets servers expire
#: them; clients retry within seconds or minutes). Synapse keeps 30 minutes.
TXN_ID_WINDOW_MS = 60 * 60 * 1000

#: Relation types stored in ``event_relations`` (m.in_reply_to is not a relation).
RELATION_TYPES = ("m.annotation", "m.reference", "m.replace", "m.thread")


@dataclass(slots=True)
class StoredEvent:
    """An event as persisted: the Event plus where it sits in the room.

    Attributes:
        event: The event (never redacted here; see :attr:`visible_event`).
        stream_ordering: Global, increasing position (the /sync stream).
        topological_ordering: The event's depth (the /messages order).
        outlier: Known only for auth/state, not part of the timeline.
        redacted_because: The redaction event, when the event was redacted.
    """

    event: Event
    stream_ordering: int
    topological_ordering: int
    outlier: bool = False
    redacted_because: Event | None = None
    #: Precomputed client-format dict (see homeserver.rooms.format); filled lazily.
    client_cache: dict[str, Any] | None = field(default=None, repr=False)
    #: The sync layer's view of it (a ``SyncEvent``, see homeserver.sync.room_source); filled lazily.
    sync_cache: Any = field(default=None, repr=False)
    #: Its state groups before and after it (``event_state``), when the persister set them:
    #: paging checks visibility with them instead of querying (homeserver.rooms.history).
    state_before: int | None = field(default=None, repr=False)
    state_after: int | None = field(default=None, repr=False)

    @property
    def event_id(self) -> str:
        return self.event.event_id

    @property
    def room_id(self) -> str:
        return self.event.room_id

    @property
    def visible_event(self) -> Event:
        """The event as clients may see it: redacted when a redaction applies."""
        if self.redacted_because is None:
            return self.event
        return self.event.redacted()


@dataclass
class EventRow:
    """What :meth:`EventStore.persist_txn` writes for one event."""

    event: Event
    stream_ordering: int
    outlier: bool = False
    #: (user_id, device_id, txn_id) of a client send, for idempotency.
    txn_key: tuple[str, str, str] | None = None
    inserted_ts: int = 0


_EVENT_COLS = ("e.event_id, e.room_id, e.json, e.stream_ordering, e.topological_ordering, "
               "e.outlier, e.rejected_reason, r.room_version")


def relation_of(event: Event) -> tuple[str, str, str | None] | None:
    """``(rel_type, parent_event_id, aggregation_key)`` of an event's m.relates_to."""
    rel = event.content.get("m.relates_to")
    if not isinstance(rel, dict):
        return None
    rel_type, parent = rel.get("rel_type"), rel.get("event_id")
    if rel_type not in RELATION_TYPES or not isinstance(parent, str):
        return None
    key = rel.get("key") if rel_type == "m.annotation" else None
    return rel_type, parent, key if isinstance(key, str) else None


class EventStore:
    """Reads and writes events; one instance per homeserver."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: OrderedDict[str, StoredEvent] = OrderedDict()
        # (room_id, user_id, device_id, txn_id) -> (event_id, inserted_ms), oldest first
        self._txn_ids: OrderedDict[tuple[str, str, str, str], tuple[str, int]] = OrderedDict()

    # --- writes (inside the persister's transaction) -------------------------

    def persist_txn(self, txn: Txn, rows: Sequence[EventRow]) -> None:
        """Insert a batch of events with their edges, relations and txn IDs.

        Forward extremities are updated: an event's prev events stop being
        extremities, and the event becomes one unless something already
        points at it. Outliers touch neither the timeline nor extremities.
        """
        if not rows:
            return
        event_rows: list[tuple[Any, ...]] = []
        edges: list[tuple[Any, ...]] = []
        auths: list[tuple[Any, ...]] = []
        rels: list[tuple[Any, ...]] = []
        reds: list[tuple[Any, ...]] = []
        txns: list[tuple[Any, ...]] = []
        for r in rows:
            ev = r.event
            event_rows.append((ev.room_id, ev.event_id, r.stream_ordering, ev.depth, ev.type,
                               ev.state_key, ev.sender, ev.origin_server_ts, r.outlier,
                               ev.rejected_reason, jsonutil.dumps(_stored_form(ev))))
            edges.extend((ev.room_id, ev.event_id, p) for p in ev.prev_event_ids)
            auths.extend((ev.room_id, ev.event_id, a) for a in ev.auth_event_ids)
            if r.outlier or ev.rejected:
                continue
            rel = relation_of(ev)
            if rel is not None:
                rels.append((ev.room_id, ev.event_id, rel[1], rel[0], ev.type, ev.sender, rel[2],
                             r.stream_ordering, ev.depth))
            if ev.redacts is not None:
                reds.append((ev.room_id, ev.event_id, ev.redacts))
            if r.txn_key is not None:
                txns.append((ev.room_id, *r.txn_key, ev.event_id, r.inserted_ts))
        # An outlier that is now persisted for real (federation learned its state)
        # is promoted in place.
        promoted = [row[1] for row in event_rows if not row[8]]
        cond, args = txn.in_list("event_id", promoted)
        txn.queue(f"DELETE FROM events WHERE room_id = ? AND outlier = ? AND {cond}",
                  [rows[0].event.room_id, True, *args])
        insert_many(txn, "events (room_id, event_id, stream_ordering, topological_ordering, type,"
                    " state_key, sender, origin_server_ts, outlier, rejected_reason, json)", event_rows,
                    "ON CONFLICT (room_id, event_id) DO NOTHING")
        insert_many(txn, "event_edges (room_id, event_id, prev_event_id)", edges, "ON CONFLICT DO NOTHING")
        insert_many(txn, "event_auth (room_id, event_id, auth_id)", auths, "ON CONFLICT DO NOTHING")
        insert_many(txn, "event_relations (room_id, event_id, relates_to_id, rel_type, event_type,"
                    " sender, aggregation_key, stream_ordering, topological_ordering)", rels,
                    "ON CONFLICT DO NOTHING")
        insert_many(txn, "redactions (room_id, event_id, redacts)", reds, "ON CONFLICT DO NOTHING")
        insert_many(txn, "event_txn_ids (room_id, user_id, device_id, txn_id, event_id, inserted_ts)", txns,
                    "ON CONFLICT DO NOTHING")

    def update_extremities_txn(self, txn: Txn, room_id: str, extremities: Iterable[str]) -> None:
        """Replace the room's forward extremities."""
        txn.queue("DELETE FROM event_forward_extremities WHERE room_id = ?", (room_id,))
        insert_many(txn, "event_forward_extremities (room_id, event_id)",
                    [(room_id, e) for e in sorted(set(extremities))])

    # --- cache -------------------------------------------------------------

    def _remember(self, stored: StoredEvent) -> None:
        self._cache[stored.event_id] = stored
        self._cache.move_to_end(stored.event_id)
        while len(self._cache) > EVENT_CACHE_SIZE:
            self._cache.popitem(last=False)

    def cache_persisted(self, stored: StoredEvent) -> None:
        """Called by the persister after commit: the event is readable from memory."""
        self._remember(stored)
        redacts = stored.event.redacts
        if redacts is not None and not stored.event.rejected:
            target = self._cache.get(redacts)
            if target is not None and target.redacted_because is None:
                target.redacted_because = stored.event
                target.client_cache = None
                target.sync_cache = None

    def cached(self, event_id: str) -> StoredEvent | None:
        return self._cache.get(event_id)

    # --- reads -------------------------------------------------------------

    async def get_event(self, event_id: str, allow_outlier: bool = True,
                        allow_rejected: bool = False) -> StoredEvent | None:
        found = await self.get_events([event_id], allow_outlier, allow_rejected)
        return found.get(event_id)

    async def get_events(self, event_ids: Iterable[str], allow_outlier: bool = True,
                         allow_rejected: bool = False) -> dict[str, StoredEvent]:
        """The stored events among ``event_ids`` (missing ones are left out)."""
        out: dict[str, StoredEvent] = {}
        missing = []
        for eid in dict.fromkeys(event_ids):
            hit = self._cache.get(eid)
            if hit is None:
                missing.append(eid)
            else:
                out[eid] = hit
        if missing:
            for stored in await self.db.run(self._load_txn, missing):
                self._remember(stored)
                out[stored.event_id] = stored
        return {k: v for k, v in out.items()
                if (allow_outlier or not v.outlier) and (allow_rejected or not v.event.rejected)}

    def _load_txn(self, txn: Txn, event_ids: list[str]) -> list[StoredEvent]:
        out: list[StoredEvent] = []
        for i in range(0, len(event_ids), 500):
            chunk = event_ids[i:i + 500]
            cond, args = txn.in_list("e.event_id", chunk)
            rows = txn.query(f"SELECT {_EVENT_COLS} FROM events e JOIN rooms r ON r.room_id = e.room_id"
                             f" WHERE {cond}", args)
            stored = [_row_to_stored(row) for row in rows]
            if stored:
                cond, args = txn.in_list("d.redacts", [s.event_id for s in stored])
                reds = txn.query(
                    f"SELECT d.redacts, {_EVENT_COLS} FROM redactions d"
                    f" JOIN events e ON e.room_id = d.room_id AND e.event_id = d.event_id"
                    f" JOIN rooms r ON r.room_id = e.room_id WHERE {cond}", args)
                by_target = {row[0]: _row_to_stored(row[1:]).event for row in reds}
                for s in stored:
                    red = by_target.get(s.event_id)
                    if red is not None and red.room_id == s.room_id:
                        s.redacted_because = red
            out.extend(stored)
        return out

    async def get_events_as_list(self, event_ids: Sequence[str], **kw: Any) -> list[StoredEvent]:
        """Like :meth:`get_events`, in the given order."""
        found = await self.get_events(event_ids, **kw)
        return [found[e] for e in event_ids if e in found]

    async def paginate(self, room_id: str, from_key: tuple[int, int], direction: str, limit: int,
                       to_key: tuple[int, int] | None = None) -> list[StoredEvent]:
        """Timeline events in topological order starting at ``from_key``.

        Keys are ``(topological, stream)`` positions *between* events:
        backwards returns events with key <= from_key (newest first),
        forwards events with key > from_key (oldest first). ``to_key``
        bounds the other end the same way. Outliers and rejected events are
        not part of the timeline.
        """
        ids = await self.db.run(self.paginate_txn, room_id, from_key, direction, limit, to_key)
        return await self.get_events_as_list(ids)

    def paginate_txn(self, txn: Txn, room_id: str, from_key: tuple[int, int], direction: str, limit: int,
                     to_key: tuple[int, int] | None = None) -> list[str]:
        """The event IDs :meth:`paginate` returns, inside a caller's transaction."""
        # Row-value comparisons, so both engines bound the scan of the (room_id,
        # topological_ordering, stream_ordering) index with them; the equivalent
        # "t < ? OR (t = ? AND s <= ?)" is only a filter, and each page deeper into the
        # history would re-read every newer event of the room first.
        cond = "(e.topological_ordering, e.stream_ordering) " + ("<= (?, ?)" if direction == "b" else "> (?, ?)")
        order = "DESC" if direction == "b" else "ASC"
        args: list[Any] = [room_id, *from_key]
        if to_key is not None:
            cond += " AND (e.topological_ordering, e.stream_ordering) " + ("> (?, ?)" if direction == "b" else "<= (?, ?)")
            args += list(to_key)
        return [r[0] for r in txn.query(
            f"SELECT e.event_id FROM events e WHERE e.room_id = ? AND {cond}"
            f" AND e.outlier = ? AND e.rejected_reason IS NULL"
            f" ORDER BY e.topological_ordering {order}, e.stream_ordering {order} LIMIT ?",
            [*args, False, limit])]

    async def topological_key_for_stream(self, room_id: str, stream: int) -> tuple[int, int]:
        """Turn a /sync stream position into a ``(topological, stream)`` key for paging."""
        def txn_fn(txn: Txn) -> int:
            return txn.scalar(
                "SELECT MAX(topological_ordering) FROM events WHERE room_id = ? AND stream_ordering <= ?"
                " AND outlier = ?", (room_id, stream, False)) or 0
        return (await self.db.run(txn_fn), stream)

    async def room_end_key(self, room_id: str) -> tuple[int, int]:
        """The ``(topological, stream)`` key after the room's newest timeline event."""
        row = await self.db.run(lambda txn: txn.query_one(
            "SELECT MAX(topological_ordering), MAX(stream_ordering) FROM events WHERE room_id = ? AND outlier = ?",
            (room_id, False)))
        return (int(row[0] or 0), int(row[1] or 0)) if row else (0, 0)

    async def room_stream_events(self, room_id: str, from_stream: int, to_stream: int,
                                 limit: int) -> list[StoredEvent]:
        """Timeline events with from_stream < stream_ordering <= to_stream, newest last.

        Returns at most ``limit`` events: the newest ones (what /sync wants).
        """
        found = await self.db.run(self.room_stream_ids_txn, [(room_id, from_stream, to_stream)], limit)
        return await self.get_events_as_list(found.get(room_id, []))

    def room_stream_ids_txn(self, txn: Txn, windows: Sequence[tuple[str, int, int]], limit: int
                            ) -> dict[str, list[str]]:
        """:meth:`room_stream_events` for many ``(room_id, from_stream, to_stream)`` windows at once.

        Returns ``room_id -> event IDs`` (oldest first). One statement per 50
        rooms (a UNION ALL of per-room index scans), so an initial /sync of
        many rooms costs one round trip, not one per room.
        """
        out: dict[str, list[str]] = {}
        one = ("SELECT * FROM (SELECT room_id, event_id, stream_ordering FROM events WHERE room_id = ?"
               " AND stream_ordering > ? AND stream_ordering <= ? AND outlier = ? AND rejected_reason IS NULL"
               " ORDER BY stream_ordering DESC LIMIT ?) AS w{}")
        for i in range(0, len(windows), 50):
            part = windows[i:i + 50]
            rows = txn.query(" UNION ALL ".join(one.format(j) for j in range(len(part))),
                             [x for room_id, since, upto in part for x in (room_id, since, upto, False, limit)])
            for room_id, event_id, stream in sorted(rows, key=lambda r: r[2]):
                out.setdefault(room_id, []).append(event_id)
        return out

    def load_recent_txn_ids(self, now_ms: int) -> None:
        """Remember the transaction IDs of the last window (at start-up, blocking)."""
        rows = self.db.run_blocking(lambda txn: txn.query(
            "SELECT room_id, user_id, device_id, txn_id, event_id, inserted_ts FROM event_txn_ids"
            " WHERE inserted_ts > ? ORDER BY inserted_ts", (now_ms - TXN_ID_WINDOW_MS,)))
        for room_id, user_id, device_id, txn_id, event_id, ts in rows:
            self._txn_ids[(room_id, user_id, device_id, txn_id)] = (event_id, int(ts))

    def remember_txn_id(self, room_id: str, txn_key: tuple[str, str, str], event_id: str, now_ms: int) -> None:
        """Called by the persister after commit."""
        self._txn_ids[(room_id, *txn_key)] = (event_id, now_ms)
        while self._txn_ids:
            oldest = next(iter(self._txn_ids.values()))
            if oldest[1] > now_ms - TXN_ID_WINDOW_MS:
                break
            self._txn_ids.popitem(last=False)

    def get_txn_event_id(self, room_id: str, user_id: str, device_id: str, txn_id: str) -> str | None:
        """The event a client transaction ID produced within the window (memory only, no I/O)."""
        hit = self._txn_ids.get((room_id, user_id, device_id, txn_id))
        return hit[0] if hit is not None else None

    async def stream_events(self, after: int, upto: int, limit: int) -> tuple[list[StoredEvent], int]:
        """Timeline events of every room with after < stream_ordering <= upto, oldest first, at most
        ``limit``, and the position read up to (for consumers catching up on the stream, e.g.
        application services after a restart)."""
        def txn_fn(txn: Txn) -> list[tuple[str, int]]:
            return [(r[0], r[1]) for r in txn.query(
                "SELECT event_id, stream_ordering FROM events WHERE stream_ordering > ? AND stream_ordering <= ?"
                " AND outlier = ? AND rejected_reason IS NULL ORDER BY stream_ordering LIMIT ?",
                (after, upto, False, limit))]
        rows = await self.db.run(txn_fn)
        scanned = rows[-1][1] if len(rows) == limit else upto
        return await self.get_events_as_list([r[0] for r in rows]), scanned

    async def get_forward_extremities(self, room_id: str) -> list[str]:
        return await self.db.run(lambda txn: [r[0] for r in txn.query(
            "SELECT event_id FROM event_forward_extremities WHERE room_id = ? ORDER BY event_id",
            (room_id,))])

    async def oldest_gaps(self, room_id: str, scan: int = 20) -> list[str]:
        """Where the locally stored history of a room stops short of its creation.

        Looks at the room's ``scan`` oldest timeline events (by depth) and
        returns their prev events that are not in the timeline (outliers,
        such as state learned at a remote join, count as missing). Empty
        when the create event is among them or nothing is missing.
        """
        def txn_fn(txn: Txn) -> list[str]:
            oldest = txn.query(
                "SELECT event_id, type, state_key FROM events WHERE room_id = ? AND outlier = ?"
                " ORDER BY topological_ordering, stream_ordering LIMIT ?", (room_id, False, scan))
            if not oldest or any(t == "m.room.create" and k == "" for _e, t, k in oldest):
                return []
            cond, args = txn.in_list("event_id", [r[0] for r in oldest])
            prevs = sorted({r[0] for r in txn.query(
                f"SELECT prev_event_id FROM event_edges WHERE room_id = ? AND {cond}", [room_id, *args])})
            cond, args = txn.in_list("event_id", prevs)
            have = {r[0] for r in txn.query(
                f"SELECT event_id FROM events WHERE room_id = ? AND outlier = ? AND {cond}", [room_id, False, *args])}
            return [p for p in prevs if p not in have]
        return await self.db.run(txn_fn)

    async def timeline_children(self, room_id: str, event_ids: Sequence[str]) -> dict[str, list[str]]:
        """``event_id -> [timeline events citing it in prev_events]`` for ``event_ids``."""
        def txn_fn(txn: Txn) -> dict[str, list[str]]:
            cond, args = txn.in_list("d.prev_event_id", list(event_ids))
            out: dict[str, list[str]] = {}
            for prev, child in txn.query(
                    "SELECT d.prev_event_id, d.event_id FROM event_edges d JOIN events e"
                    " ON e.room_id = d.room_id AND e.event_id = d.event_id"
                    f" WHERE d.room_id = ? AND e.outlier = ? AND {cond} ORDER BY e.topological_ordering",
                    [room_id, False, *args]):
                out.setdefault(prev, []).append(child)
            return out
        return await self.db.run(txn_fn) if event_ids else {}

    async def max_stream_ordering(self) -> int:
        return int(await self.db.run(lambda txn: txn.scalar("SELECT MAX(stream_ordering) FROM events")) or 0)

    # --- relations ---------------------------------------------------------

    async def get_relations(self, room_id: str, parent_id: str, rel_type: str | None,
                            event_type: str | None, from_key: tuple[int, int] | None,
                            direction: str, limit: int) -> list[StoredEvent]:
        """Events relating to ``parent_id``, in topological order from ``from_key``."""
        conds = ["room_id = ?", "relates_to_id = ?"]
        args: list[Any] = [room_id, parent_id]
        if rel_type is not None:
            conds.append("rel_type = ?")
            args.append(rel_type)
        if event_type is not None:
            conds.append("event_type = ?")
            args.append(event_type)
        order = "DESC" if direction == "b" else "ASC"
        if from_key is not None:
            # A row value, so the index bounds the scan (see paginate_txn).
            conds.append("(topological_ordering, stream_ordering) " + ("<= (?, ?)" if direction == "b" else "> (?, ?)"))
            args += list(from_key)
        args.append(limit)
        sql = (f"SELECT event_id FROM event_relations WHERE {' AND '.join(conds)}"
               f" ORDER BY topological_ordering {order}, stream_ordering {order} LIMIT ?")
        ids = await self.db.run(lambda txn: [r[0] for r in txn.query(sql, args)])
        events = await self.get_events_as_list(ids, allow_outlier=False)
        return [e for e in events if e.redacted_because is None]

    async def get_relation_children(self, room_id: str, parent_ids: Sequence[str],
                                    rel_types: Sequence[str]) -> dict[str, list[StoredEvent]]:
        """All unredacted related events of the given types per parent, oldest first."""
        if not parent_ids:
            return {}
        rows = await self.db.run(self.relation_children_txn, room_id, parent_ids, rel_types)
        return await self.relation_children_from_rows(rows)

    def relation_children_txn(self, txn: Txn, room_id: str, parent_ids: Sequence[str],
                              rel_types: Sequence[str]) -> list[tuple[str, str]]:
        """``(parent, child)`` event IDs of the relations of the given types, oldest child first."""
        if not parent_ids:
            return []
        c1, a1 = txn.in_list("relates_to_id", list(parent_ids))
        c2, a2 = txn.in_list("rel_type", list(rel_types))
        return [(r[0], r[1]) for r in txn.query(
            f"SELECT relates_to_id, event_id FROM event_relations WHERE room_id = ? AND {c1} AND {c2}"
            " ORDER BY topological_ordering, stream_ordering", [room_id, *a1, *a2])]

    async def relation_children_from_rows(self, rows: Sequence[tuple[str, str]]) -> dict[str, list[StoredEvent]]:
        """:meth:`get_relation_children` from rows :meth:`relation_children_txn` read."""
        events = await self.get_events([r[1] for r in rows], allow_outlier=False) if rows else {}
        out: dict[str, list[StoredEvent]] = {}
        for parent, eid in rows:
            ev = events.get(eid)
            if ev is not None and ev.redacted_because is None:
                out.setdefault(parent, []).append(ev)
        return out

    async def find_annotation(self, room_id: str, parent_id: str, sender: str, key: str) -> str | None:
        """An unredacted m.annotation by ``sender`` with ``key`` on ``parent_id``, if any."""
        def txn_fn(txn: Txn) -> list[str]:
            return [r[0] for r in txn.query(
                "SELECT r.event_id FROM event_relations r WHERE r.room_id = ? AND r.relates_to_id = ?"
                " AND r.rel_type = ? AND r.sender = ? AND r.aggregation_key = ?"
                " AND NOT EXISTS (SELECT 1 FROM redactions d WHERE d.room_id = r.room_id"
                " AND d.redacts = r.event_id)", (room_id, parent_id, "m.annotation", sender, key))]
        found = await self.db.run(txn_fn)
        return found[0] if found else None

    async def get_thread_roots(self, room_id: str, participant: str | None,
                               before_stream: int | None, limit: int) -> list[tuple[str, int]]:
        """Thread roots ordered by latest activity (newest first), with that position.

        With ``participant``, only threads the user started or replied in.
        """
        conds, args = ["r.room_id = ?", "r.rel_type = ?"], [room_id, "m.thread"]
        if participant is not None:
            conds.append(
                "(r.relates_to_id IN (SELECT p.relates_to_id FROM event_relations p WHERE p.room_id = ?"
                " AND p.rel_type = ? AND p.sender = ?) OR r.relates_to_id IN (SELECT e.event_id FROM events e"
                " WHERE e.room_id = ? AND e.sender = ? AND e.event_id = r.relates_to_id))")
            args += [room_id, "m.thread", participant, room_id, participant]
        having, hargs = "", []
        if before_stream is not None:
            having, hargs = "HAVING MAX(r.stream_ordering) < ?", [before_stream]
        sql = (f"SELECT r.relates_to_id, MAX(r.stream_ordering) AS latest FROM event_relations r"
               f" WHERE {' AND '.join(conds)} GROUP BY r.relates_to_id {having}"
               f" ORDER BY latest DESC LIMIT ?")
        rows = await self.db.run(lambda txn: txn.query(sql, [*args, *hargs, limit]))
        return [(r[0], int(r[1])) for r in rows]


def _stored_form(ev: Event) -> dict[str, Any]:
    """The PDU as stored: federation form plus our ``unsigned`` additions (no copy)."""
    pdu = {k: v for k, v in ev.pdu.items() if k != "unsigned"}
    if ev.unsigned:
        pdu["unsigned"] = ev.unsigned
    if ev.room_version.event_id_format == "v1":
        pdu["event_id"] = ev.event_id
    return pdu


def _row_to_stored(row: Sequence[Any]) -> StoredEvent:
    event_id, _room_id, raw, stream, topo, outlier, rejected, version = row
    event = Event(json.loads(raw), get_room_version(version), event_id, rejected_reason=rejected)
    return StoredEvent(event, int(stream), int(topo), bool(outlier))
