"""Outbound delivery: one queue per destination, one transaction in flight each.

PDUs are written to ``federation_outbox`` before delivery starts and
deleted only when the destination accepted the transaction carrying them,
so a destination that is down, or a restart of this server, loses nothing
(catch-up re-reads the outbox in order). EDUs are ephemeral (typing,
receipts, presence, to-device): they wait in memory, bounded per
destination, and a restart drops them.

A failed transaction backs the destination off exponentially (persisted in
``federation_destinations``); any authenticated request from that server
(:meth:`FederationSender.wake`) ends the back-off and retries at once.
"""
from __future__ import annotations

import logging
from collections import deque
from typing import Any, Protocol

from federation.storage import DestinationStore, OutboxStore, RetryState
from federation.transport.client import encode_path
from homeserver.util.clock import Clock

logger = logging.getLogger(__name__)

MAX_PDUS_PER_TXN = 50
MAX_EDUS_PER_TXN = 100
MAX_QUEUED_EDUS = 1000
MIN_RETRY_MS = 5_000
MAX_RETRY_MS = 24 * 3600 * 1000
RETRY_MULTIPLIER = 2


class TransactionClient(Protocol):
    async def put_json(self, destination: str, path: str, body: Any, **kw: Any) -> Any: ...


class _Queue:
    def __init__(self) -> None:
        self.edus: deque[dict[str, Any]] = deque(maxlen=MAX_QUEUED_EDUS)
        self.running = False
        self.more = False  # new work arrived while a transaction was in flight
        self.retry_call: Any = None


class FederationSender:
    """Queues PDUs and EDUs per destination and delivers them in transactions."""

    def __init__(self, server_name: str, client: TransactionClient, outbox: OutboxStore,
                 destinations: DestinationStore, clock: Clock) -> None:
        self._server_name = server_name
        self._client = client
        self._outbox = outbox
        self._destinations = destinations
        self._clock = clock
        self._queues: dict[str, _Queue] = {}
        self._txn_counter = 0
        self._stopped = False
        #: Transactions delivered, for tests and metrics.
        self.sent_transactions = 0

    async def start(self) -> None:
        """Resume delivery to every destination with queued PDUs (respecting back-off)."""
        for destination in await self._outbox.load():
            self._kick(destination)

    def stop(self) -> None:
        self._stopped = True
        for q in self._queues.values():
            if q.retry_call is not None and q.retry_call.active():
                q.retry_call.cancel()

    async def send_pdu(self, room_id: str, pdu: dict[str, Any], destinations: list[str]) -> None:
        """Queue a PDU for each destination (durably), then start delivery."""
        dests = sorted({d for d in destinations if d != self._server_name})
        if not dests:
            return
        await self._outbox.enqueue(room_id, pdu, dests)
        for d in dests:
            self._kick(d)

    def send_edu(self, destination: str, edu_type: str, content: dict[str, Any]) -> None:
        """Queue an EDU (in memory; the oldest are dropped past the per-destination bound)."""
        if destination == self._server_name:
            return
        self._queue(destination).edus.append({"edu_type": edu_type, "content": content})
        self._kick(destination)

    def wake(self, destination: str) -> None:
        """The destination contacted us: it is up, so retry now whatever the back-off says."""
        q = self._queues.get(destination)
        if q is not None and q.retry_call is not None and q.retry_call.active():
            q.retry_call.cancel()
            q.retry_call = None
        self._kick(destination, ignore_backoff=True)

    def _queue(self, destination: str) -> _Queue:
        q = self._queues.get(destination)
        if q is None:
            q = self._queues[destination] = _Queue()
        return q

    def _kick(self, destination: str, ignore_backoff: bool = False) -> None:
        if self._stopped:
            return
        q = self._queue(destination)
        if q.running:
            q.more = True
            return
        if q.retry_call is not None and q.retry_call.active() and not ignore_backoff:
            return
        q.running = True
        from twisted.internet import defer

        defer.ensureDeferred(self._run(destination, q, ignore_backoff)).addErrback(
            lambda f: logger.error("sender loop for %s failed: %s", destination, f.value))

    async def _run(self, destination: str, q: _Queue, ignore_backoff: bool) -> None:
        try:
            state = await self._destinations.get(destination)
            now = self._clock.time_msec()
            if (state is not None and state.retry_interval_ms and not ignore_backoff
                    and now < state.retry_last_ts + state.retry_interval_ms):
                self._schedule_retry(destination, q, state.retry_last_ts + state.retry_interval_ms - now)
                return
            while not self._stopped:
                q.more = False
                pdus = await self._outbox.peek(destination, MAX_PDUS_PER_TXN)
                edus = [q.edus.popleft() for _ in range(min(len(q.edus), MAX_EDUS_PER_TXN))]
                if not pdus and not edus:
                    if q.more:
                        continue
                    break
                ok = await self._send_transaction(destination, [p for _s, p in pdus], edus)
                if not ok:
                    q.edus.extendleft(reversed(edus))
                    state = await self._backoff(destination, state)
                    self._schedule_retry(destination, q, state.retry_interval_ms)
                    return
                if pdus:
                    await self._outbox.remove(destination, pdus[-1][0])
                if state is not None and state.retry_interval_ms:
                    state = RetryState(None, 0, 0)
                    await self._destinations.set(destination, state)
        finally:
            q.running = False
        if q.more and not self._stopped:
            self._kick(destination)

    def _schedule_retry(self, destination: str, q: _Queue, delay_ms: int) -> None:
        if q.retry_call is not None and q.retry_call.active():
            q.retry_call.cancel()
        q.retry_call = self._clock.call_later(max(delay_ms, 0) / 1000.0, self._kick, destination, True)

    async def _backoff(self, destination: str, state: RetryState | None) -> RetryState:
        now = self._clock.time_msec()
        interval = MIN_RETRY_MS if state is None or not state.retry_interval_ms else min(
            state.retry_interval_ms * RETRY_MULTIPLIER, MAX_RETRY_MS)
        new = RetryState(state.failure_ts if state and state.failure_ts else now, now, interval)
        await self._destinations.set(destination, new)
        logger.info("backing off %s for %.0fs", destination, interval / 1000)
        return new

    async def _send_transaction(self, destination: str, pdus: list[dict[str, Any]],
                                edus: list[dict[str, Any]]) -> bool:
        self._txn_counter += 1
        txn_id = f"{self._clock.time_msec()}.{self._txn_counter}"
        body = {"origin": self._server_name, "origin_server_ts": self._clock.time_msec(),
                "pdus": pdus, "edus": edus}
        try:
            response = await self._client.put_json(
                destination, encode_path("/_matrix/federation/v1/send/%s", txn_id), body)
        except Exception as e:
            logger.info("transaction %s to %s failed: %s", txn_id, destination, e)
            return False
        results = response.get("pdus") if isinstance(response, dict) else None
        if isinstance(results, dict):
            for eid, result in results.items():
                if isinstance(result, dict) and result.get("error"):
                    logger.info("%s refused %s: %s", destination, eid, result["error"])
        self.sent_transactions += 1
        return True
