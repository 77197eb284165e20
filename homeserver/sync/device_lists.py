"""Device list changes, for ``device_lists.changed`` / ``left`` in /sync.

The accounts and keys code announce a change with :meth:`DeviceListTracker.on_device_change`
(new device, deleted device, new keys). Users who share a room with the
changed user are woken. Remote changes (the ``m.device_list_update`` EDU)
come in through the same method.
"""
from __future__ import annotations

import bisect

from homeserver.storage.device_lists import DeviceListStore
from homeserver.sync.membership import MembershipIndex
from homeserver.sync.notifier import Notifier

RECENT = 100_000


class DeviceListTracker:
    def __init__(self, store: DeviceListStore, membership: MembershipIndex, notifier: Notifier) -> None:
        self._store = store
        self._membership = membership
        self._notifier = notifier
        self._recent_pos: list[int] = []
        self._recent_users: list[str] = []

    def position(self) -> int:
        return self._store.stream.current()

    async def on_device_change(self, user_id: str) -> None:
        """Announce that ``user_id``'s devices or device keys changed."""
        def visible(pos: int) -> None:
            self._recent_pos.append(pos)
            self._recent_users.append(user_id)
            if len(self._recent_pos) > RECENT:
                del self._recent_pos[:RECENT // 2]
                del self._recent_users[:RECENT // 2]
            self._notifier.notify("device_lists", pos, users=self._membership.co_members(user_id))

        await self._store.add_change(user_id, visible)

    async def changed_for(self, user_id: str, since: int, upto: int) -> set[str]:
        """Users sharing a room with ``user_id`` (or themself) whose devices changed in (since, upto]."""
        if since >= upto:
            return set()
        if self._recent_pos and since >= self._recent_pos[0] - 1 and since >= self._store.changes.earliest:
            start = bisect.bisect_right(self._recent_pos, since)
            end = bisect.bisect_right(self._recent_pos, upto)
            return {u for u in self._recent_users[start:end] if self._membership.share_room(user_id, u)}
        if not self._recent_pos and since >= self._store.changes.earliest:
            return set()
        return await self._store.changed_among(sorted(self._membership.co_members(user_id)), since, upto)
