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

_MAX_CACHED_ROOMS = 1_000_000


class Interest:
    """Decides interest cheaply: per room and service, whether a member is in the namespace is cached
    and recomputed only when a namespaced user's membership changes."""

    def __init__(self, services: Sequence[ApplicationService], aliases_of: AliasLookup | None = None) -> None:
        self.services = list(services)
        self._aliases_of = aliases_of or (lambda room_id: ())
        self._has_member: dict[tuple[str, str], bool] = {}

    def services_for(self, event: Any, joined: Iterable[str]) -> list[ApplicationService]:
        """The services interested in ``event`` given the room's joined members after it."""
        return [s for s in self.services if self.is_interested(s, event, joined)]

    def is_interested(self, s: ApplicationService, event: Any, joined: Iterable[str]) -> bool:
        room_id = event.room_id
        member_event = event.type == "m.room.member" and isinstance(event.state_key, str)
        if s.is_interested_in_user(event.sender):
            return True
        if member_event and s.is_interested_in_user(event.state_key):
            self._has_member.pop((s.id, room_id), None)  # a namespaced user's membership changed
            return True
        if s.rooms and s.is_interested_in_room_id(room_id):
            return True
        if s.aliases and self._has_alias(s, room_id, event):
            return True
        return self._member_in_namespace(s, room_id, joined)

    def _member_in_namespace(self, s: ApplicationService, room_id: str, joined: Iterable[str]) -> bool:
        key = (s.id, room_id)
        cached = self._has_member.get(key)
        if cached is None:
            cached = any(s.is_interested_in_user(u) for u in joined)
            if len(self._has_member) >= _MAX_CACHED_ROOMS:
                self._has_member.clear()
            self._has_member[key] = cached
        return cached

    def _has_alias(self, s: ApplicationService, room_id: str, event: Any) -> bool:
        if event.type == "m.room.canonical_alias" and event.state_key == "":
            content = event.content
            names = [content.get("alias")] + list(content.get("alt_aliases") or [])
            if any(isinstance(a, str) and s.is_interested_in_alias(a) for a in names):
                return True
        return any(s.is_interested_in_alias(a) for a in self._aliases_of(room_id))

    def is_interested_in_room(self, s: ApplicationService, room_id: str, joined: Iterable[str]) -> bool:
        """Interest in a room as such (for typing and receipts): room ID, alias or a joined user."""
        if s.rooms and s.is_interested_in_room_id(room_id):
            return True
        if s.aliases and any(s.is_interested_in_alias(a) for a in self._aliases_of(room_id)):
            return True
        return self._member_in_namespace(s, room_id, joined)

    def forget_room(self, room_id: str) -> None:
        for s in self.services:
            self._has_member.pop((s.id, room_id), None)


class AliasIndex:
    """Room → local aliases, kept in memory for the aliases some service's namespace covers."""

    def __init__(self, services: Sequence[ApplicationService]) -> None:
        self._services = [s for s in services if s.aliases]
        self._by_room: dict[str, set[str]] = {}
        self._room_of: dict[str, str] = {}

    def load(self, pairs: Iterable[tuple[str, str]]) -> None:
        for alias, room_id in pairs:
            self.on_alias(alias, room_id)

    def on_alias(self, alias: str, room_id: str | None) -> None:
        """Directory listener: ``alias`` now points at ``room_id`` (None: deleted)."""
        old = self._room_of.pop(alias, None)
        if old is not None:
            self._by_room.get(old, set()).discard(alias)
        if room_id is not None and any(s.is_interested_in_alias(alias) for s in self._services):
            self._room_of[alias] = room_id
            self._by_room.setdefault(room_id, set()).add(alias)

    def aliases_of(self, room_id: str) -> Iterable[str]:
        return self._by_room.get(room_id, ())
