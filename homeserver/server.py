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

from homeserver.api.admin.register import AdminRegisterServlets
from homeserver.api.client.account import AccountServlets
from homeserver.api.admin.media import AdminMediaServlets
from homeserver.api.client.devices import DeviceServlets
from homeserver.api.client.login import LoginServlets
from homeserver.api.client.media import UPLOAD_PREFIXES, MediaServlets
from homeserver.api.client.profile import ProfileServlets
from homeserver.api.client.register import RegisterServlets
from homeserver.api.client.versions import VersionsServlets
from homeserver.api.http import HttpSite, Router
from homeserver.api.metrics import Metrics
from homeserver.api.ratelimit import RateLimiter
from homeserver.config import Config
from homeserver.api.client.directory import DirectoryServlets
from homeserver.api.client.groups import GroupServlets
from homeserver.groups.config import GroupsConfig
from homeserver.groups.face_to_face import FaceToFace
from homeserver.groups.invite_codes import InviteCodes
from homeserver.groups.policy import GroupPolicy
from homeserver.groups.qr import QrRenderer
from homeserver.groups.service import GroupService
from homeserver.storage.groups import GroupStore
from homeserver.api.client.rooms import RoomServlets
from homeserver.rooms.builder import EventBuilder
from homeserver.rooms.create import RoomCreator
from homeserver.rooms.directory import Directory
from homeserver.rooms.history import RoomHistory
from homeserver.rooms.membership import MembershipService, RemoteMembership
from homeserver.rooms.persist import Persister
from homeserver.rooms.redact import Redactor
from homeserver.rooms.relations import Relations
from homeserver.rooms.send import EventSender
from homeserver.rooms.state_cache import StateCache
from homeserver.rooms.stream import EventStream
from homeserver.rooms.visibility import Visibility
from homeserver.storage.database import Database, StreamIdGenerator, apply_migrations
from homeserver.storage.events import EventStore
from homeserver.storage.rooms import RoomStore
from homeserver.storage.state import StateStore
from homeserver.media.config import MediaConfig
from homeserver.media.preview import UrlPreviewer
from homeserver.media.service import MediaService
from homeserver.media.storage import LocalFileStorage
from homeserver.storage.media import MediaStore
from homeserver.storage.users import UserStore
from homeserver.users.accounts import AccountService
from homeserver.users.auth import Authenticator
from homeserver.users.passwords import PasswordHasher
from homeserver.users.profiles import ProfileService
from homeserver.users.uia import UiaManager
from homeserver.util.clock import Clock
from homeserver.util.ids import random_string

logger = logging.getLogger(__name__)



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
        self.event_store = EventStore(self.db)
        self.state_store = StateStore(self.db)
        self.room_store = RoomStore(self.db)
        #: Global event stream positions; loaded from the database in start().
        self.event_stream_ids = StreamIdGenerator(0)

        # users
        self.auth = Authenticator(self.users, self.clock)
        self.hasher = PasswordHasher(config.bcrypt_rounds)
        self.accounts = AccountService(self.server_name, self.users, self.auth, self.hasher, self.clock)
        self.uia = UiaManager(self.clock)
        #: profile changes; rooms append to ``profiles.on_profile_change``
        self.profiles = ProfileService(self.server_name, self.users)

        # rooms: in-memory state, the persister and the event stream
        self.event_stream = EventStream()
        self.room_states = StateCache(self.room_store, self.event_store, self.state_store)
        self.persister = Persister(self.db, self.event_store, self.state_store, self.room_store,
                                   self.room_states, self.event_stream, self.event_stream_ids, self.clock)
        # groups: member cap and @room rule on every local event, recall window on redactions
        self.groups_config = GroupsConfig.parse(config.section("groups"))
        self.group_policy = GroupPolicy(self.groups_config, self.clock)
        self.event_builder = EventBuilder(self.server_name, self.signing_key, self.clock,
                                          checks=[self.group_policy.check_event])
        self.event_sender = EventSender(self.event_builder, self.room_states, self.persister, self.event_store)
        #: Federation plugs remote joins/invites/knocks in here (None: federation off).
        self.remote_membership: RemoteMembership | None = None
        self.membership = MembershipService(self.server_name, self.event_sender, self.state_store,
                                            self.room_store, self.users, self.remote_membership)
        self.room_creator = RoomCreator(self.server_name, config.default_room_version, self.event_sender,
                                        self.membership, self.room_store, self.clock)
        self.redactor = Redactor(self.event_sender, checks=[self.group_policy.check_redaction])
        self.visibility = Visibility(self.event_store, self.state_store)
        self.relations = Relations(self.event_store)
        self.room_history = RoomHistory(self.room_states, self.event_store, self.state_store, self.visibility,
                                        self.relations, self.clock)
        self.directory = Directory(self.server_name, self.room_store, self.room_states, self.membership)
        self.group_store = GroupStore(self.db)
        self.groups = GroupService(self.server_name, self.groups_config, self.group_store, self.event_sender,
                                   self.membership, self.clock)
        self.invite_codes = InviteCodes(self.groups, self.group_store, self.clock, self.server_name,
                                        config.public_baseurl)
        self.face_to_face = FaceToFace(self.groups, self.room_creator, self.clock,
                                       self.groups_config.face_to_face_radius_m,
                                       self.groups_config.face_to_face_window_ms)
        # media (remote_fetcher is set by federation wiring when it exists)
        self.media_config = MediaConfig.parse(config.section("media"), config.data_dir)
        self.media_store = MediaStore(self.db)
        self.media = MediaService(self.server_name, self.media_config, self.media_store,
                                  LocalFileStorage(self.media_config.store_path), self.clock,
                                  remote_fetcher=None)
        self.url_previewer = (UrlPreviewer(self.media_config.url_preview, self.media, self.clock,
                                           threads.deferToThread, self.media_config.max_upload_size)
                              if self.media_config.url_preview.enabled else None)

        # HTTP
        rl = config.rate_limiting
        self.login_limiter = RateLimiter(self.clock, rl.login, rl.enabled)
        self.register_limiter = RateLimiter(self.clock, rl.register, rl.enabled)
        self.message_limiter = RateLimiter(self.clock, rl.message, rl.enabled)
        self.router = Router(self.auth)
        self.metrics = Metrics() if config.metrics_enabled else None
        self.versions = VersionsServlets(config)
        self.versions.unstable_features["im.qun.groups"] = True
        self.versions.capabilities["im.qun.groups"] = {
            "max_members": self.groups_config.max_members, "max_admins": self.groups_config.max_admins,
            "recall_window_ms": self.groups_config.recall_window_ms}
        self.login = LoginServlets(self.accounts, self.login_limiter)
        self.registration = RegisterServlets(self.accounts, self.uia, self.register_limiter,
                                             config.enable_registration)
        self.admin_registration = AdminRegisterServlets(self.accounts, self.profiles,
                                                        config.registration_shared_secret, self.clock)
        self.room_servlets = RoomServlets(self.room_creator, self.event_sender, self.membership, self.redactor,
                                          self.room_history, self.message_limiter)
        self.directory_servlets = DirectoryServlets(self.directory, self.users)
        self.group_servlets = GroupServlets(self.groups, self.invite_codes, self.face_to_face, self.groups_config,
                                            QrRenderer(threads.deferToThread))
        self.media_servlets = MediaServlets(self.server_name, self.media_config, self.media,
                                            self.url_previewer)
        for servlets in (self.versions, self.login, self.registration, AccountServlets(self.accounts, self.uia),
                         DeviceServlets(self.accounts, self.uia), ProfileServlets(self.profiles),
                         self.admin_registration, self.room_servlets,
                         self.directory_servlets, self.media_servlets, self.group_servlets,
                         AdminMediaServlets(self.media, self.users)):
            servlets.register(self.router)
        if self.metrics is not None:
            self.metrics.register(self.router)
        self.site = HttpSite(self.router, config.max_request_body_size, self.metrics, config.access_log)
        self.site.body_limits.extend((prefix, self.media_config.max_upload_size) for prefix in UPLOAD_PREFIXES)

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
        await threads.deferToThread(self._load_positions)
        self.media.start()
        await self.groups.start()
        self.invite_codes.start()
        if listen:
            for listener in self.config.listeners:
                port = self.reactor.listenTCP(listener.port, self.site, interface=listener.bind)
                self._ports.append(port)
                logger.info("listening on http://%s:%d", listener.bind, port.getHost().port)

    def _load_positions(self) -> None:
        """Continue stream orderings and state group IDs after what is stored."""
        loaded = StreamIdGenerator.load(self.db, "events", "stream_ordering")
        self.event_stream_ids.__init__(loaded.current())  # type: ignore[misc]  # same object, wired already
        self.event_stream.reset(loaded.current())
        self.state_store.load_ids()
        lowest = self.db.run_blocking(lambda txn: txn.scalar("SELECT MIN(stream_ordering) FROM events"))
        self.persister.set_backfill_start(int(lowest or 0))
        self.event_store.load_recent_txn_ids(self.clock.time_msec())

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish, close the database."""
        if self._stopping:
            return
        self._stopping = True
        logger.info("stopping: closing listeners, %d request(s) in flight", self.site.in_flight)
        self.media.stop()
        self.groups.stop()
        self.invite_codes.stop()
        self.face_to_face.stop()
        await defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in self._ports])
        self._ports.clear()
        drain = defer.Deferred.fromCoroutine(self.site.drain())
        drain.addTimeout(self.config.shutdown_grace_period, self.reactor)
        try:
            await drain
        except defer.TimeoutError:
            logger.warning("shutting down with requests still in flight")
        await self.db.close()
        logger.info("stopped: requests drained, database closed")
