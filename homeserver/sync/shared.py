"""Incremental /sync bodies shared by the members of a group, encoded once.

When a message lands in a 500-member group, 500 connections wake with the
same ``since`` token and the same filter, and would each build and encode
the same body: the one new event in that room, the same ``prev_batch``, the
same member count. Only ``unread_notifications`` differs between them. So
the first connection builds its body the ordinary way (:class:`SyncBuilder`)
and :meth:`SharedBodies.remember` keeps it as encoded bytes cut around its
unread counts; the others get ``prefix + their counts + suffix``
(:meth:`SharedBodies.lookup`), a few microseconds instead of a full build.

A body is shared only when it is provably the same for every such member,
which holds when, between ``since`` and ``upto``:

- no stream but the room events moved (no typing, receipt, account data,
  to-device, presence or device-list change anywhere);
- every new event is a non-state event of one room (no membership change, so
  nobody joined, left or was invited, and every member's view of the room is
  the joined view from the recent-events ring);
- the member is joined to that room and sent none of those events from a
  client (their own device would get ``unsigned.transaction_id``);
- the device has no delivered to-device messages that this ``since``
  acknowledges (the ordinary build deletes those);
- the member ignores none of the senders of those events (``m.ignored_user_list``:
  their ordinary build drops those events, and a body built for them is never kept);
- the filter is the same, and the request is not ``full_state``;
- with lazy-loaded members (what Element and matrix-js-sdk ask for): the
  timeline is not limited, redundant members are not asked for, and this
  device already got the member event of every sender in the range (so the
  ordinary build would send no state, and remember nothing new).

Anything else falls back to the ordinary build, which stays the reference:
tests/sync/test_shared_bodies.py checks byte-for-byte equality with it.
"""
from __future__ import annotations

from typing import Any, Callable, Collection

from homeserver.sync.filters import SyncFilter
from homeserver.sync.membership import MembershipIndex
from homeserver.sync.recent import RecentEvents
from homeserver.sync.to_device import ToDeviceService
from homeserver.sync.tokens import STREAMS, StreamToken
from homeserver.sync.unread import UnreadCounter
from homeserver.util import json as jsonutil

#: Entries kept (one per since/upto/filter seen recently); cleared when full.
MAX_ENTRIES = 512
#: Distinct filters given a key; cleared when full (keys are only a cache).
MAX_FILTERS = 10_000

#: Encoded ``unread_notifications`` by (notifications, highlights): most members have the same.
_COUNTS: dict[tuple[int, int], bytes] = {}

_NO_STREAM_BUT_EVENTS = tuple(name for name in STREAMS if name != "events")
_SPLIT = "\x00unread-counts\x00"


class _Entry:
    __slots__ = ("room_id", "txn_senders", "senders", "prefix", "suffix")

    def __init__(self, room_id: str, txn_senders: frozenset[str], senders: frozenset[str]) -> None:
        self.room_id = room_id
        #: Users who sent some of the events from a client (transaction IDs).
        self.txn_senders = txn_senders
        #: Every sender of the events (lazy loading needs their member events).
        self.senders = senders
        self.prefix: bytes | None = None
        self.suffix = b""


#: Marks a (since, upto, filter) whose bodies cannot be shared.
_UNSHARED = _Entry("", frozenset(), frozenset())

#: ``(user_id, device_id, room_id)`` -> members already lazy-loaded to that device, if known.
LazyMembersSent = Callable[[str, "str | None", str], "Collection[str] | None"]
#: ``user_id`` -> the users they ignore (no I/O).
IgnoredBy = Callable[[str], "frozenset[str]"]
#: ``(user_id, account data position)`` -> whether their ignore list changed after it.
IgnoresChanged = Callable[[str, int], bool]


class SharedBodies:
    def __init__(self, recent: RecentEvents, membership: MembershipIndex, unread: UnreadCounter,
                 to_device: ToDeviceService, lazy_members_sent: LazyMembersSent,
                 ignored_by: IgnoredBy = lambda user_id: frozenset(),
                 ignores_changed: IgnoresChanged = lambda user_id, position: False) -> None:
        self._recent = recent
        self._ignored_by = ignored_by
        self._ignores_changed = ignores_changed
        self._lazy_members_sent = lazy_members_sent
        self._to_device = to_device
        self._membership = membership
        self._unread = unread
        self._entries: dict[tuple[str, str, int], _Entry] = {}
        #: Bodies answered from a shared one, and non-empty bodies built the ordinary way.
        self.shared_count = 0
        self.built_count = 0
        self._filters: dict[SyncFilter, int] = {}
        self._by_identity: dict[int, tuple[SyncFilter, int]] = {}
        #: The last (since, upto, filter) looked up and its entry: the members
        #: woken by one message come one after another with the same three objects.
        self._last: tuple[Any, Any, Any, _Entry | None] = (None, None, None, None)

    def _filter_key(self, f: SyncFilter) -> int:
        # Connections reuse their parsed filter object: look it up by identity
        # before hashing the (nested, frozen) dataclass.
        known = self._by_identity.get(id(f))
        if known is not None and known[0] is f:
            return known[1]
        key = self._filters.get(f)
        if key is None:
            if len(self._filters) >= MAX_FILTERS:
                self._filters.clear()
                self._by_identity.clear()
                self._entries.clear()
            key = self._filters[f] = len(self._filters) + 1
        if len(self._by_identity) >= MAX_FILTERS:
            self._by_identity.clear()
        self._by_identity[id(f)] = (f, key)
        return key

    def _entry(self, since: StreamToken, upto: StreamToken, f: SyncFilter) -> _Entry:
        key = (str(since), str(upto), self._filter_key(f))
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            entry = self._entries[key] = self._classify(since, upto, f)
        return entry

    def _classify(self, since: StreamToken, upto: StreamToken, f: SyncFilter) -> _Entry:
        for name in _NO_STREAM_BUT_EVENTS:
            if getattr(since, name) != getattr(upto, name):
                return _UNSHARED
        span = self._recent.span(since.events, upto.events)
        if span is None:
            return _UNSHARED
        return _Entry(*span)

    @staticmethod
    def _candidate(since: StreamToken | None, upto: StreamToken, f: SyncFilter, full_state: bool) -> bool:
        """The cheap conditions, checked before any memo entry is made."""
        return (since is not None and not full_state and since.events < upto.events
                and not f.state.include_redundant_members)

    def lookup(self, user_id: str, device_id: str | None, since: StreamToken | None, upto: StreamToken,
               f: SyncFilter, full_state: bool = False) -> bytes | None:
        """The encoded body for this member, when one was shared for the same change; else None."""
        parts = self.parts(user_id, device_id, since, upto, f, full_state)
        return None if parts is None else b"".join(parts)

    def parts(self, user_id: str, device_id: str | None, since: StreamToken | None, upto: StreamToken,
              f: SyncFilter, full_state: bool = False) -> tuple[bytes, bytes, bytes] | None:
        """:meth:`lookup` unassembled: (prefix, this member's unread counts, suffix).

        The WebSocket channel joins the pieces into its frame in one go.
        """
        if since is None or full_state:
            return None
        last_since, last_upto, last_f, entry = self._last
        if entry is None or since is not last_since or upto is not last_upto or f is not last_f:
            entry = self._entry(since, upto, f) if self._candidate(since, upto, f, False) else _UNSHARED
            self._last = (since, upto, f, entry)
        prefix = entry.prefix
        if prefix is None or user_id in entry.txn_senders:
            return None
        if self._ignores_a_sender(user_id, entry):
            return None
        if not self._membership.is_joined(entry.room_id, user_id):
            return None
        if self._to_device.acknowledges(user_id, device_id, since.to_device):
            return None
        if f.lazy_load_members:
            known = self._lazy_members_sent(user_id, device_id, entry.room_id)
            if known is None or not all(sender in known for sender in entry.senders):
                return None
        pair = self._unread.counts(user_id, entry.room_id)
        counts = _COUNTS.get(pair)
        if counts is None:
            counts = b'{"notification_count":%d,"highlight_count":%d}' % pair
            if len(_COUNTS) < 4096:
                _COUNTS[pair] = counts
        self.shared_count += 1
        return prefix, counts, entry.suffix

    def _ignores_a_sender(self, user_id: str, entry: _Entry) -> bool:
        ignored = self._ignored_by(user_id)
        return bool(ignored) and not ignored.isdisjoint(entry.senders)

    def remember(self, user_id: str, since: StreamToken | None, upto: StreamToken, f: SyncFilter,
                 body: dict[str, Any], full_state: bool = False) -> None:
        """Keep ``body`` (built for ``user_id``) for the other members, if it is shareable."""
        self.built_count += 1
        if not self._candidate(since, upto, f, full_state):
            return
        assert since is not None
        entry = self._entry(since, upto, f)
        self._last = (since, upto, f, entry)
        if entry is _UNSHARED or entry.prefix is not None or user_id in entry.txn_senders:
            return
        if self._ignores_a_sender(user_id, entry) or self._ignores_changed(user_id, upto.account_data):
            # Their body lacks the ignored senders' events (or was built with a list that
            # changed while it was being built).
            return
        if body.keys() != {"rooms", "next_batch"} or body["next_batch"] != str(upto):
            return
        rooms = body["rooms"]
        if rooms.keys() != {"join"} or rooms["join"].keys() != {entry.room_id}:
            return
        room = rooms["join"][entry.room_id]
        if room.get("ephemeral", {}).get("events") or room.get("account_data", {}).get("events"):
            return
        if "unread_notifications" not in room:
            return
        if f.lazy_load_members and (room["timeline"].get("limited") or room["state"]["events"]):
            return  # a gap, or members sent to this device only
        template = dict(room, unread_notifications=_SPLIT)
        shaped = {"rooms": {"join": {entry.room_id: template}}, "next_batch": body["next_batch"]}
        encoded = jsonutil.dumps_bytes(shaped)
        marker = jsonutil.dumps_bytes(_SPLIT)
        if encoded.count(marker) != 1:
            return
        entry.prefix, _, entry.suffix = encoded.partition(marker)
