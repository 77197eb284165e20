"""A user's whole rule set: their own rules merged with the server defaults (pure).

:class:`UserRules` is what storage holds for one user (their rules per kind,
most important first, and their changes to server-default rules); it builds
both the client JSON (``GET /pushrules/``) and the compiled form the
evaluator runs. Unchanged default rules compile to shared objects, so their
static conditions are evaluated once per event for everyone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from homeserver.push import rules as defaults
from homeserver.push.evaluator import CompiledRule, CompiledRules

#: (kind, rule_id) -> compiled default rule, shared by every user who has not changed it.
_SHARED: dict[tuple[str, str], CompiledRule] = {
    (kind, rule["rule_id"]): CompiledRule(kind, rule)
    for kind, rules in defaults.DEFAULTS.items() for rule in rules
}


@dataclass
class DefaultChange:
    """A user's change to a server-default rule: None means unchanged."""

    enabled: bool | None = None
    actions: list[Any] | None = None


@dataclass
class UserRules:
    """One user's stored push rule data."""

    #: kind -> the user's own rules of that kind, most important first. Each
    #: rule is ``{"rule_id", "enabled", "actions", "conditions"?, "pattern"?}``.
    own: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: (kind, rule_id) -> change to that server-default rule.
    changes: dict[tuple[str, str], DefaultChange] = field(default_factory=dict)

    def _default(self, kind: str, rule: dict[str, Any]) -> dict[str, Any]:
        change = self.changes.get((kind, rule["rule_id"]))
        if change is None:
            return rule
        out = dict(rule)
        if change.enabled is not None:
            out["enabled"] = change.enabled
        if change.actions is not None:
            out["actions"] = change.actions
        return out

    def ordered(self) -> list[tuple[str, dict[str, Any]]]:
        """Every rule as ``(kind, rule)`` in evaluation order (placeholders unfilled)."""
        out: list[tuple[str, dict[str, Any]]] = [("override", self._default("override", defaults.MASTER))]
        for kind in defaults.KINDS:
            for rule in self.own.get(kind, ()):
                out.append((kind, {**rule, "default": False}))
            for rule in defaults.DEFAULTS[kind]:
                if rule is not defaults.MASTER:
                    out.append((kind, self._default(kind, rule)))
        return out

    def compile(self) -> CompiledRules:
        compiled = []
        for kind, rule in self.ordered():
            if rule.get("default") and (kind, rule["rule_id"]) not in self.changes:
                compiled.append(_SHARED[(kind, rule["rule_id"])])
            else:
                compiled.append(CompiledRule(kind, rule))
        return CompiledRules(compiled)

    def to_client(self, user_id: str) -> dict[str, list[dict[str, Any]]]:
        """The ``global`` ruleset for ``GET /pushrules/``: kind -> rules, placeholders filled."""
        out: dict[str, list[dict[str, Any]]] = {kind: [] for kind in defaults.KINDS}
        for kind, rule in self.ordered():
            out[kind].append(client_rule(kind, rule, user_id))
        return out

    def find(self, kind: str, rule_id: str) -> dict[str, Any] | None:
        for k, rule in self.ordered():
            if k == kind and rule["rule_id"] == rule_id:
                return rule
        return None


def client_rule(kind: str, rule: dict[str, Any], user_id: str) -> dict[str, Any]:
    """A rule as the client API shows it."""
    if rule.get("default"):
        rule = defaults.substitute(rule, user_id)
    out: dict[str, Any] = {
        "rule_id": rule["rule_id"],
        "default": bool(rule.get("default")),
        "enabled": bool(rule.get("enabled", True)),
        "actions": list(rule.get("actions") or []),
    }
    if kind in ("override", "underride"):
        out["conditions"] = list(rule.get("conditions") or [])
    elif kind == "content":
        out["pattern"] = rule.get("pattern", "")
    return out


EMPTY = UserRules()
#: The compiled rules of a user with no rules of their own and no changes.
DEFAULT_COMPILED = EMPTY.compile()
