"""The per-service transaction queues: batched, ordered, one in flight, durable.

The scheduler subscribes to the homeserver's event stream. Each published
batch is filtered per service (:class:`~appservice.interest.Interest`) and
appended to that service's in-memory queue; one sender loop per service
turns the queue into transactions of at most ``batch_size`` events, in
stream order, and PUTs them one at a time, retrying with exponential backoff
until the service answers 200.

Durability: a transaction is stored (ID, body, the position it completes)
before it is first sent, and deleted when acknowledged, in the same database
transaction that advances the service's ``stream_position``. After a restart
the stored transaction is resent unchanged, then every event after the
stored position is read back from the database (:class:`CatchUp`), so
nothing is lost and nothing is reordered. A queue that grows past
``max_pending`` (a service down for long) drops its memory copy and reads
from the database too.

Ephemeral data (typing, receipts, presence) is not persisted: it rides on
the next transaction when ``receive_ephemeral`` is set, and is dropped
beyond ``max_ephemeral`` per service.
"""
from __future__ import annotations

import json
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol, Sequence

from twisted.internet import defer

from homeserver.util.clock import Clock

from appservice.api import PushError
from appservice.interest import Interest
from appservice.registration import ApplicationService
from appservice.store import AppserviceStore, StoredTxn

logger = logging.getLogger(__name__)


class StreamItem(Protocol):
    """What the event stream publishes (``homeserver.rooms.stream.PersistedEvent``)."""

    event: Any
    stream_ordering: int
    joined_members: frozenset[str]


class CatchUp(Protocol):
    async def read(self, after: int, upto: int, limit: int) -> tuple[list[Any], int]:
        """Items with ``after < stream_ordering <= upto`` in order, at most ``limit``, and the
        position scanned up to (``upto`` when fewer than ``limit`` were found)."""


class Pusher(Protocol):
    async def push(self, service: ApplicationService, txn_id: int, body: bytes) -> None: ...


Formatter = Callable[[Any], dict[str, Any]]


@dataclass
class _Queue:
    service: ApplicationService
    position: int
    last_txn_id: int
    #: events in (position, db_until] are read from the database, not from memory
    db_until: int
    seen: int
    pending: deque[tuple[int, dict[str, Any]]] = field(default_factory=deque)
    ephemeral: deque[dict[str, Any]] = field(default_factory=deque)
    stored: deque[StoredTxn] = field(default_factory=deque)
    running: bool = False
    failures: int = 0
    wake: defer.Deferred[None] | None = None
    loop: defer.Deferred[None] | None = None
    position_saved: int = 0


class AppserviceScheduler:
    def __init__(self, services: Sequence[ApplicationService], store: AppserviceStore, pusher: Pusher,
                 clock: Clock, interest: Interest, formatter: Formatter, catch_up: CatchUp, *,
                 batch_size: int = 100, max_pending: int = 10_000, max_ephemeral: int = 1_000,
                 backoff_base_s: float = 1.0, backoff_max_s: float = 300.0) -> None:
        self.services = [s for s in services if s.url is not None]
        self._store = store
        self._pusher = pusher
        self._clock = clock
        self.interest = interest
        self._format = formatter
        self._catch_up = catch_up
        self.batch_size = batch_size
        self.max_pending = max_pending
        self.max_ephemeral = max_ephemeral
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._queues: dict[str, _Queue] = {}
        #: An idle service's position is saved after this many uninteresting stream positions.
        self.idle_save_every = 1000
        self._stopping = False
        #: Transactions acknowledged, for tests and metrics.
        self.sent_count = 0

    async def start(self, current_position: int) -> None:
        """Load each service's queue; new services start at ``current_position`` (no history)."""
        for s in self.services:
            state, txns = await self._store.load(s.id, current_position)
            q = _Queue(s, state.stream_position, state.last_txn_id, db_until=current_position,
                       seen=current_position, stored=deque(txns), position_saved=state.stream_position)
            if txns:
                q.position = max(q.position, txns[-1].stream_position)
            self._queues[s.id] = q
            self._kick(q)

    async def stop(self) -> None:
        self._stopping = True
        idle = [q for q in self._queues.values() if self._idle(q)]
        loops = []
        for q in self._queues.values():
            if q.wake is not None and not q.wake.called:
                q.wake.cancel()
            if q.loop is not None:
                loops.append(q.loop)
                q.loop.cancel()
        if loops:
            await defer.DeferredList(loops, consumeErrors=True)
        for q in idle:  # save progress over events of no interest
            if q.seen > q.position_saved:
                await self._store.set_position(q.service.id, q.seen)

    @staticmethod
    def _idle(q: _Queue) -> bool:
        """Nothing queued, stored or being built: every event up to ``seen`` is handled."""
        return not q.running and not q.stored and not q.pending and q.position >= q.db_until

    # input ------------------------------------------------------------------

    def on_events(self, items: Sequence[StreamItem]) -> None:
        """Event stream subscriber: queue each event for the services interested in it."""
        if self._stopping or not self._queues:
            return
        for item in items:
            for s in self.interest.services_for(item.event, item.joined_members):
                q = self._queues.get(s.id)
                if q is None or item.stream_ordering <= q.db_until:
                    continue
                q.pending.append((item.stream_ordering, self._format(item)))
        last = max(item.stream_ordering for item in items)
        for q in self._queues.values():
            q.seen = max(q.seen, last)
            if len(q.pending) > self.max_pending:
                # Too much to hold for a service that is away: read it back from the database later.
                logger.warning("appservice %s: queue over %d events, reading from the database",
                               q.service.id, self.max_pending)
                q.pending.clear()
                q.db_until = q.seen
            if q.pending or q.db_until > q.position:
                self._kick(q)
            elif self._idle(q) and q.seen - q.position_saved >= self.idle_save_every:
                # Save progress over uninteresting events now and then, so a restart scans little.
                q.position = q.position_saved = q.seen
                d = defer.Deferred.fromCoroutine(self._store.set_position(q.service.id, q.seen))
                d.addErrback(lambda f: logger.warning("appservice position save failed: %s", f.value))

    def on_room_ephemeral(self, room_id: str, edu: dict[str, Any], joined: Iterable[str]) -> None:
        """An ``m.typing`` or ``m.receipt`` event of a room, for services interested in the room.

        The sync services call this (typing ``outbound`` hook, receipt ``listeners``); ``room_id``
        is added to the event as the spec requires.
        """
        edu = {**edu, "room_id": room_id}
        members = list(joined)
        for s in self.services:
            if self.interest.is_interested_in_room(s, room_id, members):
                one = _without_foreign_private_receipts(edu, s) if edu.get("type") == "m.receipt" else edu
                if one is not None:
                    self._queue_ephemeral(one, [s])

    def on_presence(self, user_id: str, edu: dict[str, Any], co_members: Iterable[str]) -> None:
        """An ``m.presence`` event, for services interested in the user or sharing a room with them."""
        members = list(co_members)
        self._queue_ephemeral(edu, [s for s in self.services if s.is_interested_in_user(user_id)
                                    or any(s.is_interested_in_user(u) for u in members)])

    def _queue_ephemeral(self, edu: dict[str, Any], services: Sequence[ApplicationService]) -> None:
        for s in services:
            q = self._queues.get(s.id)
            if q is None or not s.receive_ephemeral:
                continue
            q.ephemeral.append(edu)
            while len(q.ephemeral) > self.max_ephemeral:
                q.ephemeral.popleft()
            self._kick(q)

    def retry_now(self, service: ApplicationService) -> None:
        """Skip the backoff wait (e.g. after the service answered a ping)."""
        q = self._queues.get(service.id)
        if q is not None and q.wake is not None and not q.wake.called:
            q.wake.callback(None)

    def pending_count(self, service: ApplicationService) -> int:
        q = self._queues.get(service.id)
        return 0 if q is None else len(q.pending) + len(q.stored)

    # the sender loop ------------------------------------------------------------

    def _kick(self, q: _Queue) -> None:
        if q.running or self._stopping:
            return
        q.running = True
        q.loop = defer.Deferred.fromCoroutine(self._run(q))
        q.loop.addErrback(self._loop_failed, q)

    def _loop_failed(self, failure: Any, q: _Queue) -> None:
        q.running = False
        if not failure.check(defer.CancelledError):
            logger.error("appservice %s: sender loop failed", q.service.id, exc_info=failure.value)

    async def _run(self, q: _Queue) -> None:
        try:
            while not self._stopping:
                txn = q.stored[0] if q.stored else await self._next_txn(q)
                if txn is None:
                    break
                await self._send(q, txn)
                q.stored.popleft()
                await self._store.complete_txn(q.service.id, txn.txn_id, txn.stream_position)
                q.position_saved = max(q.position_saved, txn.stream_position)
                self.sent_count += 1
        finally:
            q.running = False
            q.loop = None

    async def _send(self, q: _Queue, txn: StoredTxn) -> None:
        """PUT ``txn`` until the service takes it; exponential backoff between tries."""
        while True:
            try:
                await self._pusher.push(q.service, txn.txn_id, txn.body)
                q.failures = 0
                return
            except PushError as e:
                if self._stopping:  # our own cancellation, seen through the HTTP client
                    raise defer.CancelledError() from None
                q.failures += 1
                delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** (q.failures - 1))
                logger.info("appservice %s: transaction %d failed (%s); retrying in %.1fs",
                            q.service.id, txn.txn_id, e, delay)
            q.wake = defer.Deferred()
            call: Any = self._clock.call_later(delay, lambda w=q.wake: w.called or w.callback(None))
            try:
                await q.wake
            finally:
                if call.active():
                    call.cancel()
                q.wake = None

    async def _next_txn(self, q: _Queue) -> StoredTxn | None:
        """Build, store and return the next transaction, or None when there is nothing to send."""
        events: list[dict[str, Any]] = []
        upto = q.position
        while q.position < q.db_until and not events:
            items, scanned = await self._catch_up.read(q.position, q.db_until, self.batch_size)
            events = [self._format(i) for i in items
                      if self.interest.is_interested(q.service, i.event, i.joined_members)]
            upto = scanned
            if not events:
                q.position = scanned
                await self._store.set_position(q.service.id, scanned)
                q.position_saved = scanned
        if not events and q.pending:
            while q.pending and len(events) < self.batch_size:
                so, ev = q.pending.popleft()
                events.append(ev)
                upto = so
            if not q.pending:
                upto = max(upto, q.seen)
        if not events and not q.ephemeral:
            return None
        ephemeral: list[dict[str, Any]] = []
        while q.ephemeral and len(ephemeral) < self.batch_size:
            ephemeral.append(q.ephemeral.popleft())
        body: dict[str, Any] = {"events": events}
        if ephemeral:
            body["ephemeral"] = ephemeral
            body["de.sorunome.msc2409.ephemeral"] = ephemeral
        upto = max(upto, q.position)
        txn = StoredTxn(q.last_txn_id + 1, upto, json.dumps(body, ensure_ascii=False).encode("utf-8"))
        await self._store.create_txn(q.service.id, txn.txn_id, txn.stream_position, txn.body)
        q.last_txn_id = txn.txn_id
        q.position = upto
        q.stored.append(txn)
        return txn


def _without_foreign_private_receipts(edu: dict[str, Any], s: ApplicationService) -> dict[str, Any] | None:
    """The receipt event minus ``m.read.private`` receipts of users outside the service's namespaces
    (spec "Pushing ephemeral data"); None when nothing is left."""
    content = edu.get("content")
    if not isinstance(content, dict):
        return edu
    out: dict[str, Any] = {}
    for event_id, by_type in content.items():
        if not isinstance(by_type, dict):
            continue
        kept = {}
        for rtype, users in by_type.items():
            if rtype == "m.read.private" and isinstance(users, dict):
                users = {u: v for u, v in users.items() if s.is_interested_in_user(u)}
            if users:
                kept[rtype] = users
        if kept:
            out[event_id] = kept
    return {**edu, "content": out} if out else None
