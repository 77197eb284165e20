"""HTTP pushers: notifications sent to push gateways (``POST /_matrix/push/v1/notify``).

The :class:`PusherPool` listens to the notification service. Each pusher has
a bounded queue and sends one request at a time, in order; a failure (no
connection, a non-2xx status) is retried with exponential backoff, up to
``give_up_after_s`` after the notification was made, after which it is
dropped. Before each attempt the user's read position is checked: nothing is
sent for an event the user has read meanwhile. A pushkey the gateway lists
in ``rejected`` removes that pusher.
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from twisted.internet import defer

from homeserver.push.evaluator import tweaks_of
from homeserver.push.notifications import Notification, NotificationService, RoomView
from homeserver.storage.push import Pusher, PushStore
from homeserver.util.clock import Clock

logger = logging.getLogger(__name__)

#: Event types whose notifications are sent with priority high (with highlights).
HIGH_PRIORITY_TYPES = frozenset({"m.room.message", "m.room.encrypted", "m.sticker", "m.call.invite"})
#: Notifications waiting per pusher (the oldest are dropped beyond this).
MAX_QUEUE = 100
#: Largest event content copied into a push (bigger content is left out).
MAX_CONTENT_BYTES = 4096

#: ``async (url, body) -> (status, parsed JSON body or None)``; raises on connection errors.
PostJson = Callable[[str, dict[str, Any]], Awaitable[tuple[int, Any]]]


@dataclass(frozen=True)
class PusherConfig:
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 600.0
    give_up_after_s: float = 24 * 3600.0
    request_timeout_s: float = 30.0


def make_post_json(reactor: Any, timeout_s: float) -> PostJson:
    """A treq client with a persistent connection pool, made by the first push.

    treq brings Twisted's HTTP client and with it the TLS stack (about 14 MB
    resident), which a server without pushers never needs.
    """
    client: list[Any] = []

    def get_client() -> Any:
        if not client:
            import treq
            from twisted.web.client import Agent, HTTPConnectionPool

            pool = HTTPConnectionPool(reactor, persistent=True)
            pool.maxPersistentPerHost = 4
            client.append(treq.client.HTTPClient(Agent(reactor, pool=pool, connectTimeout=timeout_s)))  # type: ignore[arg-type]
            post_json.pool = pool  # type: ignore[attr-defined]
        return client[0]

    async def post_json(url: str, body: dict[str, Any]) -> tuple[int, Any]:
        resp = await get_client().post(url, json=body, timeout=timeout_s)
        raw = await resp.content()
        try:
            from homeserver.util import json as jsonutil
            parsed = jsonutil.loads(raw) if raw else None
        except ValueError:
            parsed = None
        return resp.code, parsed

    post_json.pool = None  # type: ignore[attr-defined]
    return post_json


def priority(n: Notification) -> str:
    event = n.event
    if n.highlight or event.get("type") in HIGH_PRIORITY_TYPES:
        return "high"
    if event.get("type") == "m.room.member" and event.get("state_key") == n.user_id:
        return "high"  # an invite for the user
    return "low"


def build_payload(n: Notification, pusher: Pusher, counts: tuple[int, int], rooms: RoomView) -> dict[str, Any]:
    """The ``/notify`` request body for one notification to one pusher."""
    data = {k: v for k, v in pusher.data.items() if k != "url"}
    device = {"app_id": pusher.app_id, "pushkey": pusher.pushkey, "pushkey_ts": pusher.pushkey_ts // 1000,
              "data": data, "tweaks": tweaks_of(n.actions)}
    note: dict[str, Any] = {"event_id": n.event_id, "room_id": n.room_id, "prio": priority(n),
                            "counts": {"unread": counts[0], "missed_calls": counts[1]},
                            "devices": [device]}
    if pusher.data.get("format") == "event_id_only":
        return {"notification": note}
    event = n.event
    sender = event.get("sender", "")
    note["type"] = event.get("type")
    note["sender"] = sender
    name = rooms.display_names(n.room_id).get(sender)
    if name:
        note["sender_display_name"] = name
    room_name = rooms.room_name(n.room_id)
    if room_name:
        note["room_name"] = room_name
    alias = rooms.room_alias(n.room_id)
    if alias:
        note["room_alias"] = alias
    if event.get("type") == "m.room.member":
        note["user_is_target"] = event.get("state_key") == n.user_id
    content = event.get("content")
    if isinstance(content, dict) and len(repr(content)) <= MAX_CONTENT_BYTES:
        note["content"] = content
    return {"notification": note}


class HttpPusher:
    """One pusher: a queue of notifications sent one at a time, with backoff."""

    def __init__(self, pusher: Pusher, pool: "PusherPool") -> None:
        self.pusher = pusher
        self._pool = pool
        self.queue: deque[Notification] = deque(maxlen=MAX_QUEUE)
        self.backoff_s = 0.0
        self._running = False
        self._stopped = False
        self._sleep: Any = None
        self.sent = 0

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.pusher.app_id, self.pusher.pushkey, self.pusher.user_id)

    def enqueue(self, n: Notification) -> None:
        self.queue.append(n)
        if not self._running and not self._stopped:
            defer.ensureDeferred(self._run())

    def stop(self) -> None:
        self._stopped = True
        if self._sleep is not None:
            call, d = self._sleep
            self._sleep = None
            if call.active():
                call.cancel()
            d.cancel()  # ends the send loop with CancelledError

    async def _wait(self, seconds: float) -> None:
        d: defer.Deferred[None] = defer.Deferred()
        self._sleep = (self._pool.clock.call_later(seconds, d.callback, None), d)
        try:
            await d
        finally:
            self._sleep = None

    async def _run(self) -> None:
        self._running = True
        cfg = self._pool.config
        try:
            while self.queue and not self._stopped:
                n = self.queue[0]
                if self._pool.notifications.is_read(n):
                    self.queue.popleft()
                    continue
                if self._pool.clock.time_msec() - n.ts > cfg.give_up_after_s * 1000:
                    logger.info("giving up pushing %s to %s", n.event_id, self.pusher.app_id)
                    self.queue.popleft()
                    continue
                outcome = await self._send(n)
                if outcome == "ok":
                    self.queue.popleft()
                    self.backoff_s = 0.0
                    self.sent += 1
                elif outcome == "rejected":
                    await self._pool.remove_rejected(self)
                    return
                else:
                    self.backoff_s = min(max(self.backoff_s * 2, cfg.initial_backoff_s), cfg.max_backoff_s)
                    try:
                        await self._wait(self.backoff_s)
                    except defer.CancelledError:  # stop() during the backoff
                        return
        finally:
            self._running = False

    async def _send(self, n: Notification) -> str:
        totals = self._pool.notifications.totals(n.user_id)
        body = build_payload(n, self.pusher, totals, self._pool.rooms)
        url = self.pusher.data["url"]
        try:
            status, result = await self._pool.post_json(url, body)
        except Exception as e:
            logger.info("push to %s failed: %s", url, e)
            return "retry"
        if not 200 <= status < 300:
            logger.info("push gateway %s answered %d", url, status)
            return "retry"
        rejected = result.get("rejected") if isinstance(result, dict) else None
        if isinstance(rejected, list) and self.pusher.pushkey in rejected:
            return "rejected"
        return "ok"


class PusherPool:
    """Every pusher of every local user, fed by the notification service."""

    def __init__(self, store: PushStore, notifications: NotificationService, rooms: RoomView,
                 clock: Clock, post_json: PostJson, config: PusherConfig = PusherConfig()) -> None:
        self.store = store
        self.notifications = notifications
        self.rooms = rooms
        self.clock = clock
        self.post_json = post_json
        self.config = config
        self._by_user: dict[str, dict[tuple[str, str, str], HttpPusher]] = {}
        notifications.listeners.append(self.on_notifications)
        notifications.wanted = self._by_user

    async def start(self) -> None:
        for pusher in await self.store.get_pushers():
            self._add(pusher)

    async def stop(self) -> None:
        for pushers in self._by_user.values():
            for p in pushers.values():
                p.stop()
        self._by_user.clear()
        pool = getattr(self.post_json, "pool", None)
        if pool is not None:
            await pool.closeCachedConnections()

    def pushers_of(self, user_id: str) -> list[HttpPusher]:
        return list(self._by_user.get(user_id, {}).values())

    def _add(self, pusher: Pusher) -> None:
        if pusher.kind != "http":
            return
        pushers = self._by_user.setdefault(pusher.user_id, {})
        key = (pusher.app_id, pusher.pushkey, pusher.user_id)
        old = pushers.get(key)
        new = HttpPusher(pusher, self)
        if old is not None:
            old.stop()
            new.queue.extend(old.queue)
        pushers[key] = new

    def _drop(self, user_id: str, app_id: str, pushkey: str) -> None:
        pushers = self._by_user.get(user_id)
        if not pushers:
            return
        p = pushers.pop((app_id, pushkey, user_id), None)
        if p is not None:
            p.stop()
        if not pushers:
            del self._by_user[user_id]

    async def set_pusher(self, pusher: Pusher, append: bool) -> None:
        removed = await self.store.set_pusher(pusher, append)
        for old in removed:
            self._drop(old.user_id, old.app_id, old.pushkey)
        self._add(pusher)

    async def delete_pusher(self, user_id: str, app_id: str, pushkey: str) -> None:
        await self.store.delete_pusher(user_id, app_id, pushkey)
        self._drop(user_id, app_id, pushkey)

    async def remove_rejected(self, pusher: HttpPusher) -> None:
        p = pusher.pusher
        logger.info("push gateway rejected pushkey of %s (%s); removing the pusher", p.user_id, p.app_id)
        self._drop(p.user_id, p.app_id, p.pushkey)
        await self.store.delete_pusher(p.user_id, p.app_id, p.pushkey)

    def on_notifications(self, notifications: list[Notification]) -> None:
        by_user = self._by_user
        for n in notifications:
            pushers = by_user.get(n.user_id)
            if pushers:
                for p in list(pushers.values()):
                    p.enqueue(n)

