"""Which application services an event is for (spec: "Registration", namespaces).

A service is interested in an event when its sender, or the target of a
membership event, is one of its users (its sender or a local user in its user
namespaces); when the room ID is in its room namespaces; when the room has an
alias in its alias namespaces; or when one of its users is *joined* to the
room (the spec's rule; an invited user sees the invite itself, as its target).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

from appservice.registration import ApplicationService

AliasLookup = Callable[[str], Iterable[str]]

_MAX_CACHED = 500_000


class Interest:
    """Decides interest with two caches, so a message costs a few dict lookups:

    * user → the services interested in that user (namespaces never change);
    * room → the services interested in the room as such (room ID, alias, a joined
      user), dropped when a namespaced user's membership or the room's aliases change.
    """

    def __init__(self, services: Sequence[ApplicationService], aliases_of: AliasLookup | None = None) -> None:
        self.services = list(services)
        self._aliases_of = aliases_of or (lambda room_id: ())
        self._by_user: dict[str, tuple[ApplicationService, ...]] = {}
        self._by_room: dict[str, tuple[ApplicationService, ...]] = {}

    def services_for(self, event: Any, joined: Iterable[str]) -> list[ApplicationService]:
        """The services interested in ``event`` given the room's joined members after it."""
        if not self.services:
            return []
        senders = self._users(event.sender)
        etype = event.type
        if etype != "m.room.member" and etype != "m.room.canonical_alias":
            room = self._room(event.room_id, joined)
            if not senders:  # the common case: a message, judged by the room alone
                return list(room)
            return [s for s in self.services if s in senders or s in room]
        found = set(senders)
        if event.type == "m.room.member" and isinstance(event.state_key, str):
            targets = self._users(event.state_key)
            if targets:  # a namespaced user's membership changed: the room's answer may too
                self._by_room.pop(event.room_id, None)
                found.update(targets)
        elif event.type == "m.room.canonical_alias":
            self._by_room.pop(event.room_id, None)
            if event.state_key == "":
                found.update(self._by_canonical_alias(event.content))
        found.update(self._room(event.room_id, joined))
        return [s for s in self.services if s in found]

    def is_interested(self, s: ApplicationService, event: Any, joined: Iterable[str]) -> bool:
        return s in self.services_for(event, joined)

    def is_interested_in_room(self, s: ApplicationService, room_id: str, joined: Iterable[str]) -> bool:
        """Interest in a room as such (for typing and receipts): room ID, alias or a joined user."""
        return s in self._room(room_id, joined)

    def _users(self, user_id: str) -> tuple[ApplicationService, ...]:
        hit = self._by_user.get(user_id)
        if hit is None:
            hit = tuple(s for s in self.services if s.is_interested_in_user(user_id))
            if len(self._by_user) >= _MAX_CACHED:
                self._by_user.clear()
            self._by_user[user_id] = hit
        return hit

    def _room(self, room_id: str, joined: Iterable[str]) -> tuple[ApplicationService, ...]:
        hit = self._by_room.get(room_id)
        if hit is None:
            members: set[ApplicationService] = set()
            for user_id in joined:
                members.update(self._users(user_id))
            aliases = list(self._aliases_of(room_id))
            hit = tuple(s for s in self.services
                        if s in members
                        or (s.rooms and s.is_interested_in_room_id(room_id))
                        or (s.aliases and any(s.is_interested_in_alias(a) for a in aliases)))
            if len(self._by_room) >= _MAX_CACHED:
                self._by_room.clear()
            self._by_room[room_id] = hit
        return hit

    def _by_canonical_alias(self, content: Any) -> list[ApplicationService]:
        if not isinstance(content, dict):
            return []
        alt = content.get("alt_aliases")
        names = [content.get("alias")] + (list(alt) if isinstance(alt, list) else [])
        return [s for s in self.services
                if s.aliases and any(isinstance(a, str) and s.is_interested_in_alias(a) for a in names)]

    def forget_room(self, room_id: str) -> None:
        """Drop the room's cached answer (its aliases changed)."""
        self._by_room.pop(room_id, None)


class AliasIndex:
    """Room → local aliases, kept in memory for the aliases some service's namespace covers."""

    def __init__(self, services: Sequence[ApplicationService]) -> None:
        self._services = [s for s in services if s.aliases]
        self._by_room: dict[str, set[str]] = {}
        self._room_of: dict[str, str] = {}
        #: Called with a room ID whose aliases changed (``Interest.forget_room``).
        self.listeners: list[Callable[[str], None]] = []

    def load(self, pairs: Iterable[tuple[str, str]]) -> None:
        for alias, room_id in pairs:
            self.on_alias(alias, room_id)

    def on_alias(self, alias: str, room_id: str | None) -> None:
        """Directory listener: ``alias`` now points at ``room_id`` (None: deleted)."""
        old = self._room_of.pop(alias, None)
        if old is not None:
            self._by_room.get(old, set()).discard(alias)
            for listener in self.listeners:
                listener(old)
        if room_id is not None and any(s.is_interested_in_alias(alias) for s in self._services):
            self._room_of[alias] = room_id
            self._by_room.setdefault(room_id, set()).add(alias)
            for listener in self.listeners:
                listener(room_id)

    def aliases_of(self, room_id: str) -> Iterable[str]:
        return self._by_room.get(room_id, ())
