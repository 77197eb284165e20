"""Users' push rules: CRUD over the store, and compiled rule sets kept in memory.

Users who never changed a rule (almost everyone) share
:data:`~homeserver.push.ruleset.DEFAULT_COMPILED`; the rules of the others
are loaded at start-up and recompiled after each change, so evaluating an
event never waits for the database.
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable

from homeserver.push.evaluator import CompiledRules
from homeserver.push.ruleset import DEFAULT_COMPILED, UserRules
from homeserver.storage.push import PushStore


class PushRuleService:
    def __init__(self, store: PushStore) -> None:
        self._store = store
        self._rules: dict[str, UserRules] = {}
        self._compiled: dict[str, CompiledRules] = {}
        #: ``async fn(user_id, content)`` after a user's rules changed; server.py wires it to
        #: the ``m.push_rules`` account data (content ``{"global": ...}``) that /sync sends.
        self.on_change: Callable[[str, dict[str, Any]], Awaitable[Any]] | None = None

    async def load(self) -> None:
        """Load every user who has rules of their own or changed a default rule."""
        users = await self._store.db.run(lambda txn: [r[0] for r in txn.query(
            "SELECT DISTINCT user_id FROM push_rules UNION SELECT DISTINCT user_id FROM push_rule_defaults")])
        for user_id in users:
            await self.reload(user_id)

    async def reload(self, user_id: str) -> None:
        rules = await self._store.get_user_rules(user_id)
        if rules.own or rules.changes:
            self._rules[user_id] = rules
            self._compiled[user_id] = rules.compile()
        else:
            self._rules.pop(user_id, None)
            self._compiled.pop(user_id, None)

    def compiled(self, user_id: str) -> CompiledRules:
        """The user's compiled rules (no I/O)."""
        return self._compiled.get(user_id, DEFAULT_COMPILED)

    def rules(self, user_id: str) -> UserRules:
        return self._rules.get(user_id) or UserRules()

    # --- changes (each followed by a reload of that user) -----------------------

    async def put_rule(self, user_id: str, kind: str, rule_id: str, conditions: list[Any] | None,
                       pattern: str | None, actions: list[Any], before: str | None,
                       after: str | None) -> None:
        await self._store.put_rule(user_id, kind, rule_id, conditions, pattern, actions, before, after)
        await self._changed(user_id)

    async def delete_rule(self, user_id: str, kind: str, rule_id: str) -> bool:
        deleted = await self._store.delete_rule(user_id, kind, rule_id)
        if deleted:
            await self._changed(user_id)
        return deleted

    async def set_field(self, user_id: str, kind: str, rule_id: str, field: str, value: Any,
                        default: bool) -> bool:
        """Set ``enabled`` / ``actions`` of a rule; False when the user-defined rule is missing."""
        if default:
            await self._store.set_default_field(user_id, kind, rule_id, field, value)
            found = True
        else:
            found = await self._store.set_own_field(user_id, kind, rule_id, field, value)
        if found:
            await self._changed(user_id)
        return found

    async def _changed(self, user_id: str) -> None:
        await self.reload(user_id)
        if self.on_change is not None:
            await self.on_change(user_id, {"global": self.rules(user_id).to_client(user_id)})

