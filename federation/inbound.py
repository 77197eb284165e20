"""Receiving from other servers: transactions, EDUs, and the checks on each PDU.

The checks are server-server-api.md "Checks performed on receipt of a PDU",
in order, each delegated to the pure core:

1. format (``core.events.check_event_format``), else dropped;
2. signatures (``core.signing.verify_event_signatures`` with keys the
   keyring prefetched), else dropped;
3. content hash (``core.events.check_content_hash``), else the event is
   processed and stored *redacted*;
4. auth against its own auth events, else rejected;
5. auth against the state before it, else rejected;
6. auth against the room's current state, else soft-failed (stored, but
   neither shown to clients nor forwarded).

Storage and state are behind :class:`RoomEventSource` so this module knows
no tables: the rooms layer implements it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, Protocol

from signedjson.key import VerifyKey
from twisted.internet import defer

from federation.storage import TransactionStore
from homeserver.core.auth import AuthError, StateKey, check_auth, check_state_independent_auth, state_map
from homeserver.core.events import Event, EventFormatError, check_content_hash, check_event_format, redact_pdu
from homeserver.core.room_versions import RoomVersion
from homeserver.core.signing import SignatureError, required_signature_servers, verify_event_signatures
from homeserver.util.clock import Clock

logger = logging.getLogger(__name__)

MAX_PDUS_PER_TXN = 50
MAX_EDUS_PER_TXN = 100
#: Received transaction answers are kept this long for replays.
TXN_RETENTION_MS = 24 * 3600 * 1000

EduHandler = Callable[[str, Any], Awaitable[None]]
#: fetch_missing(origin, room_id, earliest_event_ids, latest_event_ids, limit) -> PDUs (get_missing_events).
FetchMissing = Callable[[str, str, list[str], list[str], int], Awaitable[list[Any]]]
#: Events fetched at most to fill one gap before an event is given up on.
MAX_GAP_FILL = 20
GetKey = Callable[[str, str, int], Awaitable["VerifyKey | None"]]


class RoomEventSource(Protocol):
    """What the PDU checks need from the rooms layer (implemented there)."""

    async def room_version(self, room_id: str) -> RoomVersion | None:
        """The room's version, or None when this server does not take part in the room."""

    async def get_events(self, event_ids: list[str]) -> dict[str, Event]:
        """The events among ``event_ids`` that are stored (rejected ones carry rejected_reason)."""

    async def state_before(self, room_id: str, prev_event_ids: list[str]) -> dict[StateKey, Event] | None:
        """The state before an event with these prev events (resolved), or None if a prev is unknown."""

    async def current_state(self, room_id: str) -> dict[StateKey, Event]:
        """The room's current state."""

    async def forward_extremities(self, room_id: str) -> list[str]:
        """The room's forward extremities (the latest events this server has)."""

    async def persist_received(self, event: Event, state_before: Mapping[StateKey, Event],
                               soft_failed: bool) -> None:
        """Store a checked event (rejected ones with ``rejected_reason`` set) and publish it unless soft-failed."""

    async def persist_batch(self, outcomes: "list[CheckOutcome]", tip_extremities: list[str]) -> None:
        """Store events that extended the tip ``tip_extremities`` one after another, in one go."""


class PduDropped(Exception):
    """The PDU fails the format or signature checks: it is not stored at all."""


@dataclass
class CheckOutcome:
    event: Event
    state_before: dict[StateKey, Event]
    rejected_reason: str | None = None
    soft_failed: bool = False
    redacted_for_bad_hash: bool = False


async def verify_pdu_signatures(pdu: dict[str, Any], room_version: RoomVersion, get_key: GetKey) -> None:
    """Step 2: prefetch the keys an event's signatures need, then let the core verify them.

    For room versions that enforce key validity (v5+), a key must be valid
    at the event's ``origin_server_ts``.
    """
    try:
        servers = required_signature_servers(pdu, room_version)
    except SignatureError as e:
        raise PduDropped(e.reason) from None
    sigs = pdu.get("signatures")
    if not isinstance(sigs, dict):
        raise PduDropped("event has no signatures")
    ts = pdu.get("origin_server_ts") if room_version.enforce_key_validity else 0
    keys: dict[tuple[str, str], VerifyKey] = {}
    for server in servers:
        server_sigs = sigs.get(server)
        if not isinstance(server_sigs, dict):
            continue
        for kid in list(server_sigs)[:5]:
            if isinstance(kid, str) and kid.startswith("ed25519:"):
                vk = await get_key(server, kid, ts if isinstance(ts, int) else 0)
                if vk is not None:
                    keys[(server, kid)] = vk
    try:
        verify_event_signatures(pdu, room_version, lambda s, k: keys.get((s, k)))
    except SignatureError as e:
        raise PduDropped(e.reason) from None


class PduChecker:
    """Runs the six receipt checks on one PDU."""

    def __init__(self, get_key: GetKey, rooms: RoomEventSource) -> None:
        self._get_key = get_key
        self._rooms = rooms

    async def check(self, pdu: dict[str, Any], room_version: RoomVersion,
                    tip: "tuple[Mapping[StateKey, Event], Mapping[str, Event]] | None" = None,
                    parsed: Event | None = None) -> CheckOutcome:
        """Run the checks. Raises :class:`PduDropped` for steps 1-2 and unknown prev events.

        Args:
            tip: For an event extending the room's tip exactly: the state there
                (which is both the state before it and the current state) and
                the events checked but not yet persisted, by ID.
        """
        # 1. format
        try:
            check_event_format(pdu, room_version)
            event = parsed if parsed is not None and parsed.pdu is pdu else Event(pdu, room_version)
        except (EventFormatError, KeyError, TypeError, ValueError) as e:
            raise PduDropped(f"bad format: {e}") from None
        # 2. signatures
        await verify_pdu_signatures(pdu, room_version, self._get_key)
        # 3. content hash: a mismatch means the sender's server altered the content.
        redacted = False
        if not check_content_hash(pdu):
            event = Event(redact_pdu(pdu, room_version), room_version, event.event_id)
            redacted = True
        # 4. auth events
        unsaved = tip[1] if tip is not None else {}
        auth_events = await self._rooms.get_events([a for a in event.auth_event_ids if a not in unsaved])
        auth_events.update({a: unsaved[a] for a in event.auth_event_ids if a in unsaved})
        create = None
        if room_version.room_id_from_create_event:
            create_id = "$" + event.room_id[1:] if event.room_id else ""
            create = (await self._rooms.get_events([create_id])).get(create_id)
        outcome = CheckOutcome(event, {}, redacted_for_bad_hash=redacted)
        try:
            check_state_independent_auth(event, auth_events, create)
            cited = state_map(auth_events.values())
            if create is not None:
                cited[("m.room.create", "")] = create
            check_auth(event, cited)
        except AuthError as e:
            return self._rejected(outcome, f"auth events: {e.reason}")
        # 5. state before the event
        before = dict(tip[0]) if tip is not None else await self._rooms.state_before(
            event.room_id, event.prev_event_ids)
        if before is None:
            raise PduDropped("prev events are unknown (gap filling is not done here)")
        outcome.state_before = before
        try:
            check_auth(event, before)
        except AuthError as e:
            return self._rejected(outcome, f"state before: {e.reason}")
        # 6. current state
        current = tip[0] if tip is not None else await self._rooms.current_state(event.room_id)
        try:
            check_auth(event, current)
        except AuthError as e:
            logger.info("soft-failing %s: %s", event.event_id, e.reason)
            outcome.soft_failed = True
        return outcome

    @staticmethod
    def _rejected(outcome: CheckOutcome, reason: str) -> CheckOutcome:
        e = outcome.event
        outcome.event = Event(e.pdu, e.room_version, e.event_id, rejected_reason=reason)
        outcome.rejected_reason = reason
        logger.info("rejecting %s: %s", e.event_id, reason)
        return outcome


class EduRegistry:
    """EDU type → handler. Unhandled types are logged and ignored."""

    def __init__(self) -> None:
        self._handlers: dict[str, EduHandler] = {}

    def register_edu_handler(self, edu_type: str, fn: EduHandler) -> None:
        """``fn(origin, content)`` runs for each EDU of ``edu_type`` received from ``origin``."""
        if edu_type in self._handlers:
            raise ValueError(f"an EDU handler for {edu_type} is already registered")
        self._handlers[edu_type] = fn

    async def dispatch(self, origin: str, edu_type: str, content: Any) -> None:
        fn = self._handlers.get(edu_type)
        if fn is None:
            logger.debug("ignoring EDU %s from %s: no handler", edu_type, origin)
            return
        try:
            await fn(origin, content)
        except Exception:
            logger.exception("EDU handler for %s failed on an EDU from %s", edu_type, origin)


class _NoRooms:
    """Used until the rooms layer is plugged in: this server takes part in no room."""

    async def room_version(self, room_id: str) -> RoomVersion | None:
        return None

    async def get_events(self, event_ids: list[str]) -> dict[str, Event]:
        return {}

    async def state_before(self, room_id: str, prev_event_ids: list[str]) -> dict[StateKey, Event] | None:
        return None

    async def current_state(self, room_id: str) -> dict[StateKey, Event]:
        return {}

    async def forward_extremities(self, room_id: str) -> list[str]:
        return []

    async def persist_received(self, event: Event, state_before: Mapping[StateKey, Event],
                               soft_failed: bool) -> None:
        raise AssertionError("no room to persist into")

    async def persist_batch(self, outcomes: "list[CheckOutcome]", tip_extremities: list[str]) -> None:
        raise AssertionError("no room to persist into")


class TransactionHandler:
    """``PUT /send/{txnId}``: idempotent per (origin, txnId); PDUs by room in order, then EDUs."""

    def __init__(self, store: TransactionStore, clock: Clock, get_key: GetKey, edus: EduRegistry,
                 rooms: RoomEventSource | None = None, fetch_missing: FetchMissing | None = None) -> None:
        self._store = store
        self.fetch_missing = fetch_missing
        self._clock = clock
        self._get_key = get_key
        self.edus = edus
        self.rooms: RoomEventSource = rooms or _NoRooms()
        self._in_flight: dict[tuple[str, str], defer.Deferred[dict[str, Any]]] = {}
        self._room_locks: dict[str, defer.DeferredLock] = {}

    async def on_transaction(self, origin: str, txn_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """The answer to a transaction; a replay (or a concurrent duplicate) gets the first answer."""
        key = (origin, txn_id)
        pending = self._in_flight.get(key)
        if pending is not None:
            return await _shield(pending)
        stored = await self._store.get_response(origin, txn_id)
        if stored is not None:
            return stored
        d = defer.ensureDeferred(self._process(origin, txn_id, body))
        self._in_flight[key] = d
        try:
            return await _shield(d)
        finally:
            self._in_flight.pop(key, None)

    async def _process(self, origin: str, txn_id: str, body: dict[str, Any]) -> dict[str, Any]:
        pdus = body.get("pdus") or []
        edus = body.get("edus") or []
        results: dict[str, dict[str, Any]] = {}
        by_room: dict[str, list[dict[str, Any]]] = {}
        for pdu in pdus:
            if isinstance(pdu, dict) and isinstance(pdu.get("room_id"), str):
                by_room.setdefault(pdu["room_id"], []).append(pdu)
        for room_id, room_pdus in by_room.items():
            await self._on_room_pdus(origin, room_id, room_pdus, results)
        for edu in edus:
            if isinstance(edu, dict) and isinstance(edu.get("edu_type"), str):
                await self.edus.dispatch(origin, edu["edu_type"], edu.get("content"))
        response = {"pdus": results}
        await self._store.set_response(origin, txn_id, response, self._clock.time_msec())
        return response

    async def _on_room_pdus(self, origin: str, room_id: str, pdus: list[dict[str, Any]],
                            results: dict[str, dict[str, Any]]) -> None:
        """Check a room's PDUs in order. A run of events each extending the last is checked
        against the state in memory and persisted in one batch (one commit)."""
        rv = await self.rooms.room_version(room_id)
        if rv is None:
            for pdu in pdus:
                label = _pdu_label(pdu)
                if label is not None:
                    results[label] = {"error": "This server is not in the room"}
            return
        lock = self._room_locks.setdefault(room_id, defer.DeferredLock())
        await lock.acquire()
        try:
            await self._room_pdus_locked(origin, room_id, rv, pdus, results)
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._room_locks.pop(room_id, None)

    async def _room_pdus_locked(self, origin: str, room_id: str, rv: RoomVersion, pdus: list[dict[str, Any]],
                                results: dict[str, dict[str, Any]]) -> None:
        checker = PduChecker(self._get_key, self.rooms)
        pending: list[CheckOutcome] = []
        unsaved: dict[str, Event] = {}
        start_ext: list[str] = []
        tip: tuple[list[str], dict[StateKey, Event]] | None = None

        async def flush() -> None:
            if not pending:
                return
            batch = list(pending)
            pending.clear()
            unsaved.clear()
            try:
                await self.rooms.persist_batch(batch, start_ext)
            except Exception:
                logger.exception("persisting %d events of %s failed", len(batch), room_id)
                for o in batch:
                    results[o.event.event_id] = {"error": "Internal error storing the event"}

        parsed: list[tuple[dict[str, Any], Event]] = []
        for pdu in pdus:
            try:
                parsed.append((pdu, Event(pdu, rv)))
            except Exception:
                label = _pdu_label(pdu)
                if label is not None:
                    results[label] = {"error": "Malformed event"}
        known = await self.rooms.get_events([e.event_id for _p, e in parsed])
        for pdu, event in parsed:
            eid = event.event_id
            if eid in unsaved or eid in known:
                results[eid] = {}
                continue
            try:
                if tip is None:
                    start_ext = await self.rooms.forward_extremities(room_id)
                    tip = (list(start_ext), await self.rooms.current_state(room_id))
                if sorted(event.prev_event_ids) == sorted(tip[0]):
                    outcome = await checker.check(pdu, rv, (tip[1], unsaved), event)
                    pending.append(outcome)
                    unsaved[eid] = outcome.event
                    if not outcome.rejected_reason and not outcome.soft_failed:
                        state = dict(tip[1])
                        if event.state_key is not None:
                            state[(event.type, event.state_key)] = outcome.event
                        tip = ([eid], state)
                else:
                    await flush()
                    tip = None
                    await self._fill_gap(origin, room_id, rv, event)
                    outcome = await checker.check(pdu, rv, parsed=event)
                    await self.rooms.persist_received(outcome.event, outcome.state_before, outcome.soft_failed)
                results[eid] = {"error": outcome.rejected_reason} if outcome.rejected_reason else {}
            except PduDropped as e:
                logger.info("dropping %s from %s: %s", eid, origin, e)
                results[eid] = {"error": str(e)}
            except Exception:
                logger.exception("handling %s from %s failed", eid, origin)
                results[eid] = {"error": "Internal error handling the event"}
        await flush()

    async def _check_and_persist(self, pdu: dict[str, Any], rv: RoomVersion) -> str | None:
        outcome = await PduChecker(self._get_key, self.rooms).check(pdu, rv)
        await self.rooms.persist_received(outcome.event, outcome.state_before, outcome.soft_failed)
        return outcome.rejected_reason

    async def _fill_gap(self, origin: str, room_id: str, rv: RoomVersion, event: Event) -> None:
        """Fetch unknown prev events from the origin (get_missing_events) and process them oldest first."""
        known = await self.rooms.get_events(event.prev_event_ids)
        if all(p in known for p in event.prev_event_ids) or self.fetch_missing is None:
            return
        earliest = await self.rooms.forward_extremities(room_id)
        try:
            pdus = await self.fetch_missing(origin, room_id, earliest, [event.event_id], MAX_GAP_FILL)
        except Exception as e:
            logger.info("get_missing_events from %s for %s failed: %s", origin, event.event_id, e)
            return
        fetched = []
        for p in pdus[:MAX_GAP_FILL]:
            try:
                if isinstance(p, dict) and p.get("room_id") == room_id:
                    fetched.append(Event(p, rv))
            except Exception:
                continue
        for ev in sorted(fetched, key=lambda e: (e.depth, e.event_id)):
            if (await self.rooms.get_events([ev.event_id])).get(ev.event_id) is not None:
                continue
            try:
                await self._check_and_persist(ev.pdu, rv)
            except PduDropped as e:
                logger.info("dropping missing event %s: %s", ev.event_id, e)

    async def prune(self) -> None:
        await self._store.prune(self._clock.time_msec() - TXN_RETENTION_MS)


def _pdu_label(pdu: dict[str, Any]) -> str | None:
    eid = pdu.get("event_id")
    return eid if isinstance(eid, str) else None


def _shield(d: defer.Deferred[Any]) -> defer.Deferred[Any]:
    """A new Deferred with d's result, leaving d itself untouched for other waiters."""
    out: defer.Deferred[Any] = defer.Deferred()
    d.addBoth(lambda r: (out.callback(r) if not isinstance(r, defer.Failure) else out.errback(r), r)[1])
    return out
