"""Asking services about unknown users and aliases (spec: application-service-api "Querying").

When a client touches a local user or alias that does not exist and a
service's namespace covers it, the service is asked; it may create the
entity before answering 200, after which the lookup is retried. Concurrent
lookups of the same ID share one query.
"""
from __future__ import annotations

from typing import Awaitable, Callable, Sequence

from twisted.internet import defer

from homeserver.storage.users import UserStore

from appservice.api import AppserviceApi
from appservice.registration import ApplicationService


class AppserviceQueries:
    def __init__(self, services: Sequence[ApplicationService], api: AppserviceApi, users: UserStore,
                 server_name: str) -> None:
        # Exclusive owners first: they are the ones expected to create the entity.
        self._services = [s for s in services if s.url is not None]
        self._api = api
        self._users = users
        self._server_name = server_name
        self._inflight: dict[str, list[defer.Deferred[bool]]] = {}

    def _candidates(self, matches: Callable[[ApplicationService], bool],
                    exclusive: Callable[[ApplicationService], bool]) -> list[ApplicationService]:
        found = [s for s in self._services if matches(s)]
        return sorted(found, key=lambda s: not exclusive(s))

    async def _shared(self, key: str, run: Callable[[], Awaitable[bool]]) -> bool:
        waiters = self._inflight.get(key)
        if waiters is not None:
            d: defer.Deferred[bool] = defer.Deferred()
            waiters.append(d)
            return await d
        self._inflight[key] = []
        try:
            result = await run()
        except Exception as e:
            for w in self._inflight.pop(key):
                w.errback(e)
            raise
        for w in self._inflight.pop(key):
            w.callback(result)
        return result

    async def query_alias(self, alias: str) -> bool:
        """``MembershipService.alias_queries`` hook: True when a service says it created ``alias``."""
        services = self._candidates(lambda s: s.is_interested_in_alias(alias), lambda s: s.is_exclusive_alias(alias))
        if not services:
            return False

        async def run() -> bool:
            for s in services:
                if await self._api.query_alias(s, alias):
                    return True
            return False
        return await self._shared("#" + alias, run)

    async def query_user(self, user_id: str) -> None:
        """``MembershipService.user_queries`` hook: let a service create an unknown user of its namespace."""
        if not user_id.endswith(":" + self._server_name):
            return
        services = self._candidates(lambda s: s.is_interested_in_user(user_id) and user_id != s.sender,
                                    lambda s: s.is_exclusive_user(user_id))
        if not services or await self._users.get_user(user_id) is not None:
            return

        async def run() -> bool:
            for s in services:
                if await self._api.query_user(s, user_id):
                    return True
            return False
        await self._shared("@" + user_id, run)

