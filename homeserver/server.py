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

import functools
import inspect
import logging
import os
from typing import Any

from signedjson.key import generate_signing_key, read_signing_keys, write_signing_keys
from twisted.internet import defer, threads
from twisted.internet.interfaces import IListeningPort

from appservice.api import AppserviceApi
from appservice.client import LOGIN_TYPE, AppserviceClientApi
from appservice.config import AppserviceConfig
from appservice.interest import AliasIndex, Interest
from appservice.queries import AppserviceQueries
from appservice.scheduler import AppserviceScheduler
from appservice.source import ClientFormatter, DatabaseCatchUp
from appservice.store import AppserviceStore
from appservice.thirdparty import ThirdPartyServlets
from federation.backfill import Backfiller
from federation.config import FederationConfig
from federation.edus import EphemeralBridge
from federation.discovery import ServerResolver, srv_lookup_with_twisted_names
from federation.inbound import EduRegistry, TransactionHandler
from federation.keys import KeyServlets, Keyring, OwnKeys
from federation.membership import FederationMembership, MembershipServlets
from federation.queries import QueryServlets, remote_profile_lookup
from federation.rooms import FanOut, RoomsBridge, fetch_missing_events
from federation.sender import FederationSender
from federation.storage import DestinationStore, KeyStore, OutboxStore, TransactionStore
from federation.transport.auth import RequestVerifier
from federation.transport.client import Connector, FederationClient, WellKnownFetcher
from federation.transport.server import FederationRoutes, FederationSite, TransactionServlets
from homeserver import __version__
from homeserver.api.admin.register import AdminRegisterServlets
from homeserver.api.client.account import AccountServlets
from homeserver.api.admin.media import AdminMediaServlets
from homeserver.api.client.account_data import AccountDataServlets
from homeserver.api.client.devices import DeviceServlets
from homeserver.api.client.login import LoginServlets
from homeserver.api.client.media import RAW_PREFIXES, UPLOAD_PREFIXES, MediaServlets
from homeserver.api.client.push import PushServlets
from homeserver.api.client.presence import PresenceServlets
from homeserver.api.client.profile import ProfileServlets
from homeserver.api.client.receipts import ReceiptServlets
from homeserver.api.client.register import RegisterServlets
from homeserver.api.client.sync import LeanSync, SyncServlets
from homeserver.api.client.tags import TagServlets
from homeserver.api.client.to_device import ToDeviceServlets
from homeserver.api.client.typing import TypingServlets
from homeserver.api.client.versions import VersionsServlets
from homeserver.api.fasthttp import ClientSite
from homeserver.api.http import Router
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
from homeserver.rooms.format import client_event
from homeserver.rooms.history import RoomHistory
from homeserver.rooms.membership import MembershipService, RemoteMembership
from homeserver.rooms.persist import Persister
from homeserver.rooms.redact import Redactor
from homeserver.rooms.restricted import RestrictedJoins
from homeserver.rooms.relations import Relations
from homeserver.rooms.send import EventSender
from homeserver.rooms.state_cache import StateCache
from homeserver.rooms.stream import EventStream
from homeserver.rooms.visibility import Visibility
from homeserver.push.config import PushConfig
from homeserver.push.notifications import NotificationService
from homeserver.push.pushers import PusherPool, make_post_json
from homeserver.push.room_view import StateCacheRoomView
from homeserver.push.rule_service import PushRuleService
from homeserver.storage.database import Database, StreamIdGenerator, apply_migrations
from homeserver.storage.push import PushStore
from homeserver.storage.events import EventStore
from homeserver.storage.rooms import RoomStore
from homeserver.storage.state import StateStore
from homeserver.media.config import MediaConfig
from homeserver.media.preview import UrlPreviewer
from homeserver.media.service import MediaService
from homeserver.media.storage import LocalFileStorage
from homeserver.storage.media import MediaStore
from homeserver.push.websocket import WebSocketChannel
from homeserver.storage.account_data import AccountDataStore
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
from homeserver.sync.room_source import RoomFeed, StoredRoomSource
from homeserver.sync.service import SyncService
from homeserver.sync.to_device import ToDeviceService
from homeserver.sync.typing import TypingService
from homeserver.sync.user_rooms import UserRooms
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
        # Registrations are validated before anything opens: a bad file stops start-up with one line.
        self.appservices = AppserviceConfig.parse(config).load(self.server_name)

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
        self.restricted_joins = RestrictedJoins(self.server_name, self.room_states)
        self.membership = MembershipService(self.server_name, self.event_sender, self.state_store,
                                            self.room_store, self.users, self.restricted_joins,
                                            self.remote_membership)
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

        # push: rules, unread counts, pushers
        push_config = PushConfig.parse(config.section("push"))
        self.push_store = PushStore(self.db)
        self.push_rules = PushRuleService(self.push_store)
        self.push_rooms = StateCacheRoomView(self.room_states, self.server_name)
        self.notifications = NotificationService(
            self.push_store, self.push_rules, self.push_rooms, self.clock,
            is_local=lambda user_id: user_id.endswith(":" + self.server_name),
            flush_delay_s=push_config.flush_delay_s)
        self.pushers = PusherPool(self.push_store, self.notifications, self.push_rooms, self.clock,
                                  make_post_json(reactor, push_config.pushers.request_timeout_s),
                                  push_config.pushers)
        self.notifications.position_of = self._event_position
        self.notifications.fetch_events = self._client_events
        self.notifications.rooms_of = self._rooms_ever_in

        # realtime: streams, notifier, /sync builder (see docs/sync.md)
        self.sync_config = SyncConfig.parse(config.section("sync"))
        self.member_index = MembershipIndex()
        self.notifier = Notifier(self.clock, self.member_index.joined_members)
        self.user_rooms = UserRooms()
        self.recent_events = RecentEvents(capacity=self.sync_config.recent_events_per_room)
        self.account_data_store = AccountDataStore(self.db)
        self.receipt_store = ReceiptStore(self.db)
        self.to_device_store = ToDeviceStore(self.db)
        self.device_list_store = DeviceListStore(self.db)
        self.filter_store = FilterStore(self.db)
        self.account_data = AccountDataService(self.account_data_store, self.notifier)
        self.notifications.ignored_by = self.room_history.ignored_by = self.account_data.ignored_by
        self.receipts = ReceiptService(self.receipt_store, self.member_index, self.notifier, self.clock)
        self.typing = TypingService(self.clock, self.member_index, self.notifier)
        self.presence = PresenceService(PresenceStore(self.db), self.member_index, self.notifier, self.clock,
                                        config.presence_enabled)
        self.to_device = ToDeviceService(self.to_device_store, self.notifier, self.clock, self.server_name,
                                         self._device_ids)
        self.device_lists = DeviceListTracker(self.device_list_store, self.member_index, self.notifier)
        # Deleted devices change the user's device list (new devices: keys upload announces them).
        self.accounts.on_devices_deleted.append(
            lambda user_id, _device_ids: self.device_lists.on_device_change(user_id))
        # the push module's counts, from each member's push rules (homeserver/push/notifications.py)
        self.unread = self.notifications
        self.receipts.listeners.append(
            lambda room_id, user_id, _type, event_id: self.unread.on_receipt(room_id, user_id, event_id))
        self.room_source = StoredRoomSource(self.db, self.event_store, self.state_store, self.room_states,
                                            self.visibility)
        self.user_rooms.loader = self.room_source.load_memberships
        self.receipts.event_exists = self.room_source.event_exists
        self.room_feed = RoomFeed(self.event_store, self.room_states, self.recent_events, self.member_index,
                                  self.user_rooms, self.unread, self.notifier)
        self.event_stream.subscribe(self.room_feed.on_persisted)
        self.sync_builder = SyncBuilder(
            membership=self.member_index, user_rooms=self.user_rooms, recent=self.recent_events,
            rooms=self.room_source,
            account_data=self.account_data, receipts=self.receipts, typing=self.typing,
            presence=self.presence, to_device=self.to_device, device_lists=self.device_lists,
            unread=self.unread)
        self.sync = SyncService(self.sync_builder, self.notifier, self.presence, self.filter_store, self.clock)
        self.push_rules.on_change = lambda user_id, content: self.account_data.put(
            user_id, None, "m.push_rules", content, internal=True)

        # HTTP
        rl = config.rate_limiting
        self.login_limiter = RateLimiter(self.clock, rl.login, rl.enabled)
        self.register_limiter = RateLimiter(self.clock, rl.register, rl.enabled)
        self.message_limiter = RateLimiter(self.clock, rl.message, rl.enabled)
        self.router = Router(self.auth)
        self.metrics: Any = None
        if config.metrics_enabled:
            # prometheus_client (about 1 MB resident) only when metrics are on (off by default).
            from homeserver.api.metrics import Metrics

            self.metrics = Metrics()
        self.versions = VersionsServlets(config)
        self.versions.unstable_features["im.qun.groups"] = True
        self.versions.capabilities["im.qun.groups"] = {
            "max_members": self.groups_config.max_members, "max_admins": self.groups_config.max_admins,
            "recall_window_ms": self.groups_config.recall_window_ms}
        self.login = LoginServlets(self.accounts, self.login_limiter)
        self.registration = RegisterServlets(self.accounts, self.uia, self.register_limiter,
                                             config.enable_registration)
        self.push_servlets = PushServlets(self.push_rules, self.notifications, self.pushers, self.clock)
        self.sync_servlets = SyncServlets(self.sync, self.filter_store)
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
                         AdminMediaServlets(self.media, self.users),
                         self.sync_servlets,
                         ReceiptServlets(self.receipts, self.account_data, self.member_index),
                         TypingServlets(self.typing), PresenceServlets(self.presence, self.member_index),
                         AccountDataServlets(self.account_data), TagServlets(self.account_data),
                         ToDeviceServlets(self.to_device), self.push_servlets):
            servlets.register(self.router)
        self._wire_appservices()
        if self.metrics is not None:
            self.metrics.register(self.router)
            shared = self.sync_builder.shared
            self.metrics.count_from("homeserver_sync_bodies", "Incremental sync bodies: shared or built",
                                    "how", lambda: {"shared": shared.shared_count, "built": shared.built_count})
        self.site = ClientSite(self.router, config.max_request_body_size, self.metrics, config.access_log)
        self.site.serve_with_twisted(RAW_PREFIXES)
        LeanSync(self.site, self.auth, self.sync, self.sync_servlets)
        self.site.body_limits.extend((prefix, self.media_config.max_upload_size) for prefix in UPLOAD_PREFIXES)
        self.websocket = WebSocketChannel(self.router, self.auth, self.sync_servlets, self.sync_builder,
                                          self.notifier, self.presence, self.clock, self.sync_config,
                                          config.max_request_body_size)
        self.websocket.install(self.site)

        self._build_federation()
        self._ports: list[IListeningPort] = []
        self._stopping = False

    def _wire_appservices(self) -> None:
        """Application services plug in through hooks: auth, accounts, login, register, aliases,
        membership, and the event stream (see docs/appservices.md)."""
        services = self.appservices
        self.appservice_api = AppserviceApi(self.reactor, self.clock)
        self.appservice_client = AppserviceClientApi(services, self.users, self.accounts, self.appservice_api)
        self.appservice_client.register_routes(self.router)
        ThirdPartyServlets(services, self.appservice_api).register(self.router)
        self.appservice_aliases = AliasIndex(services)
        interest = Interest(services, self.appservice_aliases.aliases_of)
        self.appservice_aliases.listeners.append(interest.forget_room)
        self.appservice_scheduler = AppserviceScheduler(
            services, AppserviceStore(self.db), self.appservice_api, self.clock, interest,
            ClientFormatter(self.clock), DatabaseCatchUp(self.event_store, self.room_states))
        if not services:
            return
        client = self.appservice_client
        self.auth.resolvers.append(client.resolve_token)
        self.auth.claimed.append(client.claims_token)
        self.accounts.exclusive_checks.append(client.check_user_id)
        self.login.flows.append({"type": LOGIN_TYPE})
        self.login.extra_types[LOGIN_TYPE] = client.login
        self.login.rate_limit_exempt.add(LOGIN_TYPE)
        self.registration.extra_types[LOGIN_TYPE] = client.register
        for owner in (self.directory, self.room_creator):
            owner.alias_checks.append(client.check_alias)
            owner.alias_listeners.append(self.appservice_aliases.on_alias)
        queries = AppserviceQueries(services, self.appservice_api, self.users, self.server_name)
        self.membership.alias_queries.append(queries.query_alias)
        self.membership.user_queries.append(queries.query_user)
        self.profiles.user_queries.append(queries.query_user)
        # Ephemeral data for services with receive_ephemeral: typing, public receipts, presence.
        sched, members = self.appservice_scheduler, self.member_index
        self.typing.outbound.append(lambda room_id, _user, _typing, _timeout: sched.on_room_ephemeral(
            room_id, self.typing.event(room_id), members.joined_members(room_id)))
        self.receipts.listeners.append(lambda room_id, user_id, rtype, event_id: sched.on_room_ephemeral(
            room_id, {"type": "m.receipt", "content": {event_id: {rtype: {user_id: {"ts": self.clock.time_msec()}}}}},
            members.joined_members(room_id)))
        self.presence.outbound.append(lambda edu: sched.on_presence(
            edu["sender"], edu, members.co_members(edu["sender"])))
        self.appservice_queries = queries
        client.ping_listeners.append(self.appservice_scheduler.retry_now)
        self.event_stream.subscribe(self.appservice_scheduler.on_events)
    def _build_federation(self) -> None:
        """Federation: keys, discovery, signed client, inbound transactions, sender.

        The federation listener has its own router and site (server-server
        and key endpoints only). ``self.federation_edus`` is where other
        services register EDU handlers; ``self.federation_sender`` sends.
        """
        config, clock = self.config, self.clock
        fed = self.federation_config = FederationConfig.parse(config.section("federation"))
        if fed.insecure:
            logger.warning("federation.insecure is on: self-signed certificates and private/loopback "
                           "destinations are accepted. Use this only for tests and local development.")
        self.federation_connector = Connector(self.reactor, fed.insecure)
        self.server_resolver = ServerResolver(clock, WellKnownFetcher(self.reactor, self.federation_connector),
                                              srv_lookup_with_twisted_names)
        self.federation_client = FederationClient(self.reactor, self.server_name, self.signing_key,
                                                  self.server_resolver, self.federation_connector)
        self.own_keys = OwnKeys(self.server_name, self.signing_key, fed.old_verify_keys, clock,
                                fed.key_validity_ms)
        self.keyring = Keyring(self.own_keys, KeyStore(self.db), self.federation_client, clock,
                               fed.trusted_key_servers)
        self.federation_sender = FederationSender(self.server_name, self.federation_client,
                                                  OutboxStore(self.db), DestinationStore(self.db), clock)
        self.federation_edus = EduRegistry()
        self.federation_rooms = RoomsBridge(self.server_name, self.room_states, self.event_store, self.state_store,
                                            self.persister)
        self.federation_transactions = TransactionHandler(
            TransactionStore(self.db), clock, self.keyring.get_verify_key, self.federation_edus,
            self.federation_rooms, functools.partial(fetch_missing_events, self.federation_client))
        self.federation_fanout = FanOut(self.server_name, self.federation_sender, self.room_states)
        self.federation_backfill = Backfiller(self.server_name, self.federation_client, self.federation_rooms,
                                              self.keyring.get_verify_key, clock)
        self.federation_router = Router(None)
        verifier = RequestVerifier(self.server_name, self.keyring.get_verify_key)
        self.federation_routes = FederationRoutes(self.federation_router, verifier, self.federation_sender.wake)
        KeyServlets(self.own_keys, self.keyring, clock).register(self.federation_router)
        TransactionServlets(self.federation_transactions, __version__).register(
            self.federation_routes, self.federation_router)
        MembershipServlets(self.server_name, self.federation_rooms, self.event_builder, self.keyring.get_verify_key,
                           self.federation_fanout, clock, self.restricted_joins, self.signing_key,
                           self.visibility).register(self.federation_routes)
        self.federation_queries = QueryServlets(self.server_name, self.signing_key, self.federation_rooms,
                                                self.room_store, self.profiles, self.directory,
                                                self.keyring.get_verify_key, self.federation_rooms.persist_invite)
        self.federation_queries.register(self.federation_routes)
        if fed.enabled:
            self.profiles.remote_lookup = functools.partial(remote_profile_lookup, self.federation_client)
            EphemeralBridge(self.server_name, self.federation_sender, self.member_index, self.typing,
                            self.receipts, self.presence, self.to_device).wire(self.federation_edus)
            # Only a server others can reach takes part in rooms on other servers.
            self.federation_fanout.subscribe(self.event_stream)
            self.membership.remote = FederationMembership(self.server_name, self.signing_key, self.federation_client,
                                                      self.federation_rooms, self.keyring.get_verify_key, clock,
                                                      self.federation_backfill, fed.join_backfill_limit)
            self.room_history.remote = self.federation_backfill
        self.federation_site = FederationSite(self.federation_router, fed.max_transaction_size, self.metrics,
                                        config.access_log)
        self._federation_port: IListeningPort | None = None

    @property
    def federation_port(self) -> int | None:
        """The TCP port of the federation TLS listener, when it runs."""
        return self._federation_port.getHost().port if self._federation_port is not None else None

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
        await self.push_rules.load()
        await self.notifications.load()
        await self._start_streams()
        await self.groups.start()
        self.invite_codes.start()
        await self.pushers.start()
        await self.appservice_client.ensure_senders()
        if self.appservices:
            self.appservice_aliases.load(await self.room_store.all_aliases())
            await self.appservice_scheduler.start(self.event_stream.current_position())
        if listen:
            for listener in self.config.listeners:
                port = self.reactor.listenTCP(listener.port, self.site, interface=listener.bind)
                self._ports.append(port)
                logger.info("listening on http://%s:%d", listener.bind, port.getHost().port)
            fed = self.federation_config
            if fed.enabled:
                # pyOpenSSL and cryptography only when there is a TLS listener (see cli.py).
                from federation.tls import ensure_self_signed, server_context_factory

                cert = fed.tls_certificate_path or os.path.join(self.config.data_dir, "federation.crt")
                key = fed.tls_private_key_path or os.path.join(self.config.data_dir, "federation.key")
                if fed.tls_certificate_path is None:
                    host = self.server_name.rsplit(":", 1)[0] if not self.server_name.endswith("]") else self.server_name
                    await threads.deferToThread(ensure_self_signed, cert, key, host.strip("[]"))
                self._federation_port = self.reactor.listenSSL(
                    fed.port, self.federation_site, server_context_factory(cert, key), interface=fed.bind)
                logger.info("federation listening on https://%s:%d", fed.bind, self.federation_port)
        await self.federation_sender.start()
        # Answers to received transactions are kept a day for replays, then dropped.
        self._federation_prune = self.clock.looping_call(
            lambda: defer.ensureDeferred(self.federation_transactions.prune()), 3600)

    async def _event_position(self, room_id: str, event_id: str) -> int | None:
        stored = await self.event_store.get_event(event_id, allow_outlier=False)
        return stored.stream_ordering if stored is not None and stored.event.room_id == room_id else None

    async def _rooms_ever_in(self, user_id: str) -> list[str]:
        """Rooms where GET /notifications looks: every membership but forgotten ones."""
        rows = await self.state_store.get_rooms_for_user(user_id, ("join", "invite", "leave", "ban", "knock"))
        return [m.room_id for m in rows]

    async def _client_events(self, event_ids: list[str]) -> dict[str, dict[str, Any]]:
        found = await self.event_store.get_events(event_ids, allow_outlier=False)
        now = self.clock.time_msec()
        return {eid: client_event(stored, now) for eid, stored in found.items()}

    def _load_positions(self) -> None:
        """Continue stream orderings and state group IDs after what is stored."""
        self.event_stream_ids.load_from(self.db, "events", "stream_ordering")
        self.event_stream.reset(self.event_stream_ids.current())
        self.state_store.load_ids()
        lowest = self.db.run_blocking(lambda txn: txn.scalar("SELECT MIN(stream_ordering) FROM events"))
        self.persister.set_backfill_start(int(lowest or 0))
        self.event_store.load_recent_txn_ids(self.clock.time_msec())

    async def _start_streams(self) -> None:
        """Load stream positions into the notifier (after migrations, before listening)."""
        for store in (self.account_data_store, self.receipt_store, self.to_device_store,
                      self.device_list_store):
            await store.load()
        await self.account_data.load()
        self.notifier.set_position("account_data", self.account_data_store.stream.current())
        self.notifier.set_position("receipts", self.receipt_store.stream.current())
        self.notifier.set_position("to_device", self.to_device_store.stream.current())
        self.notifier.set_position("device_lists", self.device_list_store.stream.current())
        events_position = self.event_stream.current_position()
        self.recent_events.reset(events_position)
        self.notifier.set_position("events", events_position)
        self.room_feed.seed(await self.room_source.joined_memberships())
        await self.unread.load()
        await self.presence.start()

    async def _device_ids(self, user_id: str) -> list[str]:
        return [d.device_id for d in await self.users.get_devices(user_id)]

    async def _drain_sites(self) -> None:
        await self.site.drain()
        await self.federation_site.drain()

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish, close the database.

        Each step runs whatever happened in the one before: a step that fails is
        logged, and the database is closed in any case (its pool thread would
        otherwise keep the process from exiting).
        """
        if self._stopping:
            return
        self._stopping = True
        ports = self._ports + ([self._federation_port] if self._federation_port is not None else [])
        logger.info("stopping: closing listeners, %d request(s) in flight", self.site.in_flight)
        try:
            for step in (self.federation_sender.stop, self._stop_federation_prune, self.media.stop,
                         self.groups.stop, self.invite_codes.stop, self.face_to_face.stop,
                         lambda: defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports]),
                         self.websocket.close_all, self.site.close_after_answers, self.notifier.expire_waiters,
                         self._drain_within_grace, self.pushers.stop,
                         self.federation_site.close_connections, self.federation_client.close,
                         self.presence.stop, self.unread.stop, self.appservice_scheduler.stop,
                         self.appservice_api.close):
                try:
                    result = step()
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    logger.exception("stopping: %s failed; going on", getattr(step, "__qualname__", step))
            self._ports.clear()
            self._federation_port = None
        finally:
            await self.db.close()
        logger.info("stopped: requests drained, database closed")

    def _stop_federation_prune(self) -> None:
        if getattr(self, "_federation_prune", None) is not None and self._federation_prune.running:
            self._federation_prune.stop()

    async def _drain_within_grace(self) -> None:
        drain = defer.Deferred.fromCoroutine(self._drain_sites())
        drain.addTimeout(self.config.shutdown_grace_period, self.reactor)
        try:
            await drain
        except defer.TimeoutError:
            logger.warning("shutting down with requests still in flight")
