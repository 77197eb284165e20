"""THE composition root: builds every service and wires them together.

Nothing else constructs services or looks them up; collaborators are passed
into constructors. Embedding the homeserver is::

    from homeserver import Config, HomeServer
    hs = HomeServer(config, reactor)
    await hs.start()      # migrations, listeners
    ...
    await hs.stop()
"""
from __future__ import annotations

import logging
import os
from typing import Any

from signedjson.key import generate_signing_key, read_signing_keys, write_signing_keys
from twisted.internet import defer, threads
from twisted.internet.interfaces import IListeningPort

from homeserver.api.client.account import AccountServlets
from homeserver.api.client.account_data import AccountDataServlets
from homeserver.api.client.login import LoginServlets
from homeserver.api.client.presence import PresenceServlets
from homeserver.api.client.receipts import ReceiptServlets
from homeserver.api.client.register import RegisterServlets
from homeserver.api.client.sync import SyncServlets
from homeserver.api.client.tags import TagServlets
from homeserver.api.client.to_device import ToDeviceServlets
from homeserver.api.client.typing import TypingServlets
from homeserver.api.client.versions import VersionsServlets
from homeserver.api.http import HttpSite, Router
from homeserver.api.metrics import Metrics
from homeserver.api.ratelimit import RateLimiter
from homeserver.config import Config
from homeserver.push.websocket import WebSocketChannel
from homeserver.storage.account_data import AccountDataStore
from homeserver.storage.database import Database, apply_migrations
from homeserver.storage.device_lists import DeviceListStore
from homeserver.storage.filters import FilterStore
from homeserver.storage.presence import PresenceStore
from homeserver.storage.receipts import ReceiptStore
from homeserver.storage.to_device import ToDeviceStore
from homeserver.storage.users import UserStore
from homeserver.sync.account_data import AccountDataService
from homeserver.sync.builder import SyncBuilder
from homeserver.sync.config import SyncConfig
from homeserver.sync.device_lists import DeviceListTracker
from homeserver.sync.membership import MembershipIndex
from homeserver.sync.notifier import Notifier
from homeserver.sync.presence import PresenceService
from homeserver.sync.receipts import ReceiptService
from homeserver.sync.recent import RecentEvents
from homeserver.sync.service import SyncService
from homeserver.sync.to_device import ToDeviceService
from homeserver.sync.typing import TypingService
from homeserver.sync.unread import DefaultUnreadCounter
from homeserver.sync.user_rooms import UserRooms
from homeserver.users.accounts import AccountService
from homeserver.users.auth import Authenticator
from homeserver.users.passwords import PasswordHasher
from homeserver.users.uia import UiaManager
from homeserver.util.clock import Clock
from homeserver.util.ids import random_string

logger = logging.getLogger(__name__)

#: How long shutdown waits for in-flight requests before closing the database.
SHUTDOWN_GRACE_S = 10.0


def load_or_create_signing_key(path: str) -> Any:
    """The server's ed25519 signing key, generated on first use."""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            keys = read_signing_keys(f)
        if not keys:
            raise ValueError(f"signing key file {path} holds no key")
        return keys[0]
    key = generate_signing_key("a_" + random_string(4))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        write_signing_keys(f, [key])
    return key


class HomeServer:
    """One homeserver: its config, database, services and HTTP listeners."""

    def __init__(self, config: Config, reactor: Any = None, clock: Clock | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.config = config
        self.reactor = reactor
        self.clock = clock or Clock(reactor)
        self.server_name = config.server_name
        self.signing_key = load_or_create_signing_key(config.signing_key_path)

        # storage
        self.db = Database(config.database.url, reactor, config.database.pool_size)
        self.users = UserStore(self.db)

        # users
        self.auth = Authenticator(self.users, self.clock)
        self.hasher = PasswordHasher(config.bcrypt_rounds)
        self.accounts = AccountService(self.server_name, self.users, self.auth, self.hasher, self.clock)
        self.uia = UiaManager(self.clock)

        # realtime: streams, notifier, /sync builder (see docs/sync.md)
        self.sync_config = SyncConfig.parse(config.section("sync"))
        self.membership = MembershipIndex()
        self.notifier = Notifier(self.clock, self.membership.joined_members)
        self.user_rooms = UserRooms()
        self.recent_events = RecentEvents(capacity=self.sync_config.recent_events_per_room)
        self.account_data_store = AccountDataStore(self.db)
        self.receipt_store = ReceiptStore(self.db)
        self.to_device_store = ToDeviceStore(self.db)
        self.device_list_store = DeviceListStore(self.db)
        self.filter_store = FilterStore(self.db)
        self.account_data = AccountDataService(self.account_data_store, self.notifier)
        self.receipts = ReceiptService(self.receipt_store, self.membership, self.notifier, self.clock)
        self.typing = TypingService(self.clock, self.membership, self.notifier)
        self.presence = PresenceService(PresenceStore(self.db), self.membership, self.notifier, self.clock,
                                        config.presence_enabled)
        self.to_device = ToDeviceService(self.to_device_store, self.notifier, self.clock, self.server_name,
                                         self._device_ids)
        self.device_lists = DeviceListTracker(self.device_list_store, self.membership, self.notifier)
        self.unread = DefaultUnreadCounter(self.db, self.clock, self.recent_events,
                                           self.membership.joined_members)
        self.receipts.listeners.append(
            lambda room_id, user_id, _type, event_id: self.unread.on_receipt(room_id, user_id, event_id))
        self.sync_builder = SyncBuilder(
            membership=self.membership, user_rooms=self.user_rooms, recent=self.recent_events, rooms=None,
            account_data=self.account_data, receipts=self.receipts, typing=self.typing,
            presence=self.presence, to_device=self.to_device, device_lists=self.device_lists,
            unread=self.unread)
        self.sync = SyncService(self.sync_builder, self.notifier, self.presence, self.filter_store, self.clock)

        # HTTP
        rl = config.rate_limiting
        self.login_limiter = RateLimiter(self.clock, rl.login, rl.enabled)
        self.register_limiter = RateLimiter(self.clock, rl.register, rl.enabled)
        self.message_limiter = RateLimiter(self.clock, rl.message, rl.enabled)
        self.router = Router(self.auth)
        self.metrics = Metrics() if config.metrics_enabled else None
        self.versions = VersionsServlets(config)
        self.login = LoginServlets(self.accounts, self.login_limiter)
        self.registration = RegisterServlets(self.accounts, self.uia, self.register_limiter,
                                             config.enable_registration)
        self.sync_servlets = SyncServlets(self.sync, self.filter_store)
        for servlets in (self.versions, self.login, self.registration, AccountServlets(),
                         self.sync_servlets, ReceiptServlets(self.receipts, self.account_data, self.membership),
                         TypingServlets(self.typing), PresenceServlets(self.presence, self.membership),
                         AccountDataServlets(self.account_data), TagServlets(self.account_data),
                         ToDeviceServlets(self.to_device)):
            servlets.register(self.router)
        if self.metrics is not None:
            self.metrics.register(self.router)
        self.site = HttpSite(self.router, config.max_request_body_size, self.metrics, config.access_log)
        self.websocket = WebSocketChannel(self.router, self.auth, self.sync_servlets, self.sync_builder,
                                          self.notifier, self.presence, self.clock, self.sync_config,
                                          config.max_request_body_size)
        self.websocket.install(self.site)

        self._ports: list[IListeningPort] = []
        self._stopping = False

    @property
    def ports(self) -> list[int]:
        """The TCP ports the client listeners are bound to (useful with port 0)."""
        return [p.getHost().port for p in self._ports]

    async def start(self, listen: bool = True) -> None:
        """Open the database, apply migrations and start listening."""
        self.db.start()
        await threads.deferToThread(apply_migrations, self.db)
        await self._start_streams()
        if listen:
            for listener in self.config.listeners:
                port = self.reactor.listenTCP(listener.port, self.site, interface=listener.bind)
                self._ports.append(port)
                logger.info("listening on http://%s:%d", listener.bind, port.getHost().port)

    async def _start_streams(self) -> None:
        """Load stream positions into the notifier (after migrations, before listening)."""
        for store in (self.account_data_store, self.receipt_store, self.to_device_store,
                      self.device_list_store):
            await store.load()
        self.notifier.set_position("account_data", self.account_data_store.stream.current())
        self.notifier.set_position("receipts", self.receipt_store.stream.current())
        self.notifier.set_position("to_device", self.to_device_store.stream.current())
        self.notifier.set_position("device_lists", self.device_list_store.stream.current())
        await self.unread.load()
        await self.presence.start()

    async def _device_ids(self, user_id: str) -> list[str]:
        return [d.device_id for d in await self.users.get_devices(user_id)]

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish, close the database."""
        if self._stopping:
            return
        self._stopping = True
        await defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in self._ports])
        self._ports.clear()
        self.websocket.close_all()
        drain = defer.Deferred.fromCoroutine(self.site.drain())
        drain.addTimeout(SHUTDOWN_GRACE_S, self.reactor)
        try:
            await drain
        except defer.TimeoutError:
            logger.warning("shutting down with requests still in flight")
        await self.presence.stop()
        await self.unread.stop()
        await self.db.close()
