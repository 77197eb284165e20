"""Push rule evaluation: pure, no Twisted, no storage.

Evaluating one event for every member of a 500-member group must be cheap,
so the work is split three ways:

* **Per rule set, once** (:func:`compile_rules`): every condition is parsed
  into a small checker object (dotted paths split, globs turned into
  compiled regexes, ``room_member_count`` parsed). A condition is *static*
  when its result depends only on the event (``type == m.room.message``),
  or *per-user* when it names "the user" (``invite_for_me``'s state key,
  ``is_user_mention``, display name and user name matches). The service
  caches compiled rule sets and shares the compiled default rules between
  users who have not changed them.
* **Per event, once** (:class:`EventContext`): property lookups by path are
  memoised, as are static condition results, and for each distinct rule set
  the list of *candidate* rules (enabled, all static conditions true) is
  computed once. A plain message in a group has four candidates out of
  eighteen default rules.
* **Per member**: walk the candidates and check only the per-user
  conditions (a set membership test, a substring search of the lowered body
  for the display name).

The result for a member is the first matching :class:`CompiledRule` (its
``actions``, ``notify`` and ``highlight``) or None.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, Iterable, Mapping, Sequence

from homeserver.push.rules import LEGACY_MENTION_RULES, LOCALPART, USER_ID

_MISSING: Any = object()
_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_IGNORED_ACTIONS = ("dont_notify", "coalesce")
_MAX_SAFE_INT = 2 ** 53 - 1


# --- paths and globs ---------------------------------------------------------

@lru_cache(maxsize=4096)
def split_path(key: str) -> tuple[str, ...]:
    r"""``content.m\.relates_to.rel_type`` -> ``("content", "m.relates_to", "rel_type")``.

    A backslash escapes a dot or a backslash; any other escape is kept as is
    (a literal backslash followed by the character).
    """
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(key):
        ch = key[i]
        if ch == "\\" and i + 1 < len(key) and key[i + 1] in ".\\":
            current.append(key[i + 1])
            i += 2
            continue
        if ch == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return tuple(parts)


_NOT_WORD_BEFORE = r"(?<![A-Za-z0-9_])"
_NOT_WORD_AFTER = r"(?![A-Za-z0-9_])"


def _segment_regex(segment: str, prefix: str = "", suffix: str = "") -> Any:
    """A fixed-width segment of a glob (``?`` = any one character) as a compiled regex."""
    body = "".join("." if ch == "?" else re.escape(ch) for ch in segment)
    return re.compile(prefix + body + suffix, re.IGNORECASE | re.DOTALL)


class GlobMatcher:
    """A glob (``*``, ``?``) matched without regex backtracking.

    The pattern is split at ``*`` into fixed-width segments, which are placed
    left to right at their earliest possible position (earliest is always
    best: it leaves the most room for the rest). So the cost is linear in the
    text per segment, whatever the number of ``*``; a regex with several
    ``.*`` would backtrack polynomially on a long body.
    """

    __slots__ = ("segments", "head", "head_words", "tail", "tail_words", "middle", "exact")

    def __init__(self, pattern: str) -> None:
        self.segments = pattern.split("*")
        self.exact = len(self.segments) == 1
        head, tail = self.segments[0], self.segments[-1]
        self.head = _segment_regex(head)
        self.head_words = _segment_regex(head, _NOT_WORD_BEFORE)
        self.tail = _segment_regex(tail, "", r"\Z")
        self.tail_words = _segment_regex(tail, "", _NOT_WORD_AFTER)
        self.middle = [_segment_regex(m) for m in self.segments[1:-1] if m]

    def fullmatch(self, text: str) -> bool:
        if self.exact:
            return self.head.fullmatch(text) is not None
        m = self.head.match(text)
        if m is None:
            return False
        pos = m.end()
        for seg in self.middle:
            m = seg.search(text, pos)
            if m is None:
                return False
            pos = m.end()
        tail_len = len(self.segments[-1])
        return len(text) - tail_len >= pos and self.tail.match(text, len(text) - tail_len) is not None

    def search_words(self, text: str) -> bool:
        """Does a substring starting and ending at word boundaries match?"""
        if self.exact:
            return _segment_regex(self.segments[0], _NOT_WORD_BEFORE, _NOT_WORD_AFTER).search(text) is not None
        pos = 0
        if self.segments[0]:
            m = self.head_words.search(text)
            if m is None:
                return False
            pos = m.end()
        for seg in self.middle:
            m = seg.search(text, pos)
            if m is None:
                return False
            pos = m.end()
        if not self.segments[-1]:
            return True  # a trailing * runs to the end of the text, a boundary
        return self.tail_words.search(text, pos) is not None


@lru_cache(maxsize=4096)
def glob_matcher(pattern: str, words: bool) -> Any:
    """A matcher for a glob: ``fn(text) -> bool`` on the whole value, or (``words``) any
    word-bounded substring; case-insensitive."""
    matcher = GlobMatcher(pattern)
    if words and matcher.exact:
        regex = _segment_regex(pattern, _NOT_WORD_BEFORE, _NOT_WORD_AFTER)
        return lambda text: regex.search(text) is not None
    return matcher.search_words if words else matcher.fullmatch


def contains_words(haystack_lower: str, needle: str) -> bool:
    """Does ``needle`` occur in the (lowered) text, starting and ending at word boundaries?"""
    needle = needle.lower()
    if not needle:
        return False
    start = haystack_lower.find(needle)
    n = len(needle)
    while start != -1:
        end = start + n
        before_ok = start == 0 or haystack_lower[start - 1] not in _WORD_CHARS
        after_ok = end == len(haystack_lower) or haystack_lower[end] not in _WORD_CHARS
        if before_ok and after_ok:
            return True
        start = haystack_lower.find(needle, start + 1)
    return False


def _is_simple_value(value: Any) -> bool:
    if value is None or isinstance(value, (str, bool)):
        return True
    return isinstance(value, int) and -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT


def _same_value(a: Any, b: Any) -> bool:
    """Exact equality of non-compound JSON values: no casts (1 != true, 1 != "1")."""
    return type(a) is type(b) and a == b


# --- the per-event context ----------------------------------------------------

class EventContext:
    """One event with what rules need to know about its room, memoised for many users.

    Args:
        event: The event as a mapping (PDU or client format): ``type``,
            ``content``, ``sender``, ``state_key``, ``room_id``.
        member_count: Joined members of the room (``room_member_count``).
        sender_power_level: The sender's power level in the room.
        notification_levels: The ``notifications`` object of the power
            levels (``{"room": 50}`` when absent).
    """

    __slots__ = ("event", "room_id", "sender", "member_count", "sender_power_level",
                 "notification_levels", "has_mentions", "body_lower", "_values", "memo", "_candidates")

    def __init__(self, event: Mapping[str, Any], member_count: int, sender_power_level: int = 0,
                 notification_levels: Mapping[str, Any] | None = None) -> None:
        self.event = event
        self.room_id = event.get("room_id")
        self.sender = event.get("sender")
        self.member_count = member_count
        self.sender_power_level = sender_power_level
        self.notification_levels = notification_levels or {}
        content = event.get("content")
        self.has_mentions = isinstance(content, dict) and "m.mentions" in content
        body = content.get("body") if isinstance(content, dict) else None
        self.body_lower: str | None = body.lower() if isinstance(body, str) else None
        self._values: dict[tuple[str, ...], Any] = {}
        #: Static results, keyed by the id of a condition or a rule (both live as long as the rule set).
        self.memo: dict[int, bool] = {}
        self._candidates: dict[int, list[CompiledRule]] = {}

    def get(self, path: tuple[str, ...]) -> Any:
        """The value at a split path, or ``_MISSING``; memoised."""
        value = self._values.get(path, _MISSING)
        if value is _MISSING and path not in self._values:
            value = self.event
            for part in path:
                if not isinstance(value, Mapping):
                    value = _MISSING
                    break
                value = value.get(part, _MISSING)
                if value is _MISSING:
                    break
            self._values[path] = value
        return value

    def candidates(self, rules: "CompiledRules") -> list["CompiledRule"]:
        """The rules of a rule set that can match some user: enabled, static conditions true."""
        key = id(rules)
        found = self._candidates.get(key)
        if found is None:
            # Rules are memoised by identity too: a user's rule set mostly holds the
            # shared default rule objects, already judged for another user.
            memo = self.memo
            found = []
            for rule in rules.rules:
                ok = memo.get(id(rule))
                if ok is None:
                    ok = memo[id(rule)] = self._possible(rule)
                if ok:
                    found.append(rule)
            self._candidates[key] = found
        return found

    def _possible(self, rule: "CompiledRule") -> bool:
        if not rule.enabled:
            return False
        if self.has_mentions and rule.default and rule.rule_id in LEGACY_MENTION_RULES:
            return False
        return all(self._static(c) for c in rule.static) and all(c.possible(self) for c in rule.dynamic)

    def _static(self, cond: "Condition") -> bool:
        key = id(cond)
        result = self.memo.get(key)
        if result is None:
            result = self.memo[key] = cond.matches(self)
        return result


# --- conditions -----------------------------------------------------------------

class Condition:
    """A compiled condition. Static ones implement :meth:`matches`, per-user ones :meth:`for_user`."""

    dynamic = False

    def matches(self, ctx: EventContext) -> bool:
        return False

    def possible(self, ctx: EventContext) -> bool:
        """For per-user conditions: can it match anyone for this event? (cheap pre-check)"""
        return True

    def for_user(self, ctx: EventContext, user_id: str, display_name: str | None) -> bool:
        return False


class Never(Condition):
    """Unknown or malformed conditions never match (the spec's rule for unrecognised kinds)."""


class EventMatch(Condition):
    def __init__(self, key: str, pattern: str) -> None:
        self.path = split_path(key)
        self.words = key == "content.body"
        self.pattern = pattern
        self.literal = "*" not in pattern and "?" not in pattern
        self.lower = pattern.lower()
        self.match = glob_matcher(pattern, self.words)

    def matches(self, ctx: EventContext) -> bool:
        if self.words:
            if ctx.body_lower is None:
                return False
            if self.literal:
                return contains_words(ctx.body_lower, self.lower)
            return self.match(ctx.body_lower)
        value = ctx.get(self.path)
        if not isinstance(value, str):
            return False
        if self.literal:
            return value.lower() == self.lower
        return self.match(value)


class EventMatchUser(Condition):
    """``event_match`` whose pattern is the evaluated user's ID (``invite_for_me``)."""

    dynamic = True

    def __init__(self, key: str) -> None:
        self.path = split_path(key)

    def possible(self, ctx: EventContext) -> bool:
        return isinstance(ctx.get(self.path), str)

    def for_user(self, ctx: EventContext, user_id: str, display_name: str | None) -> bool:
        value = ctx.get(self.path)
        return isinstance(value, str) and value.lower() == user_id.lower()


class PropertyIs(Condition):
    def __init__(self, key: str, value: Any) -> None:
        self.path = split_path(key)
        self.value = value

    def matches(self, ctx: EventContext) -> bool:
        value = ctx.get(self.path)
        return value is not _MISSING and _is_simple_value(value) and _same_value(value, self.value)


class PropertyContains(Condition):
    def __init__(self, key: str, value: Any) -> None:
        self.path = split_path(key)
        self.value = value

    def matches(self, ctx: EventContext) -> bool:
        values = ctx.get(self.path)
        return isinstance(values, list) and any(
            _same_value(v, self.value) and _is_simple_value(v) for v in values)


class PropertyContainsUser(Condition):
    """``event_property_contains`` of the evaluated user's ID (``is_user_mention``)."""

    dynamic = True

    def __init__(self, key: str) -> None:
        self.path = split_path(key)

    def possible(self, ctx: EventContext) -> bool:
        return isinstance(ctx.get(self.path), list)

    def for_user(self, ctx: EventContext, user_id: str, display_name: str | None) -> bool:
        values = ctx.get(self.path)
        return isinstance(values, list) and user_id in values


class ContainsDisplayName(Condition):
    dynamic = True

    def possible(self, ctx: EventContext) -> bool:
        return ctx.body_lower is not None

    def for_user(self, ctx: EventContext, user_id: str, display_name: str | None) -> bool:
        return bool(display_name) and ctx.body_lower is not None and contains_words(
            ctx.body_lower, display_name)  # type: ignore[arg-type]


class BodyContainsLocalpart(Condition):
    """The default content rule ``.m.rule.contains_user_name``."""

    dynamic = True

    def possible(self, ctx: EventContext) -> bool:
        return ctx.body_lower is not None

    def for_user(self, ctx: EventContext, user_id: str, display_name: str | None) -> bool:
        return ctx.body_lower is not None and contains_words(ctx.body_lower, user_id[1:].split(":", 1)[0])


_COUNT_RE = re.compile(r"^(==|<=|>=|<|>)?([0-9]+)$")


class MemberCount(Condition):
    def __init__(self, op: str, number: int) -> None:
        self.op = op
        self.number = number

    def matches(self, ctx: EventContext) -> bool:
        n, op, x = ctx.member_count, self.op, self.number
        if op == "==":
            return n == x
        if op == "<":
            return n < x
        if op == ">":
            return n > x
        if op == "<=":
            return n <= x
        return n >= x


class SenderPermission(Condition):
    def __init__(self, key: str) -> None:
        self.key = key

    def matches(self, ctx: EventContext) -> bool:
        required = ctx.notification_levels.get(self.key, 50)
        if isinstance(required, str):  # old rooms may carry string levels
            try:
                required = int(required)
            except ValueError:
                return False
        if isinstance(required, bool) or not isinstance(required, int):
            required = 50
        return ctx.sender_power_level >= required


#: Compiled conditions interned by their JSON: equal conditions of different users are one
#: object, so their per-event result is memoised once for everybody.
_INTERNED: dict[str, Condition] = {}
_MAX_INTERNED = 20000


def compile_condition(cond: Any) -> Condition:
    """A checker for one condition dict (shared with equal conditions); malformed ones never match."""
    try:
        key = json.dumps(cond, sort_keys=True)
    except (TypeError, ValueError):
        return Never()
    found = _INTERNED.get(key)
    if found is None:
        if len(_INTERNED) >= _MAX_INTERNED:
            _INTERNED.clear()
        found = _INTERNED[key] = _compile_condition(cond)
    return found


def _compile_condition(cond: Any) -> Condition:
    if not isinstance(cond, Mapping):
        return Never()
    kind = cond.get("kind")
    key = cond.get("key")
    if kind == "event_match":
        pattern = cond.get("pattern")
        if not isinstance(key, str) or not isinstance(pattern, str):
            return Never()
        if pattern == USER_ID:
            return EventMatchUser(key)
        return EventMatch(key, pattern)
    if kind == "event_property_is":
        value = cond.get("value", _MISSING)
        if not isinstance(key, str) or value is _MISSING or not _is_simple_value(value):
            return Never()
        return PropertyIs(key, value)
    if kind == "event_property_contains":
        value = cond.get("value", _MISSING)
        if not isinstance(key, str) or value is _MISSING or not _is_simple_value(value):
            return Never()
        if value == USER_ID:
            return PropertyContainsUser(key)
        return PropertyContains(key, value)
    if kind == "contains_display_name":
        return ContainsDisplayName()
    if kind == "room_member_count":
        spec = cond.get("is")
        m = _COUNT_RE.match(spec) if isinstance(spec, str) else None
        if m is None:
            return Never()
        return MemberCount(m.group(1) or "==", int(m.group(2)))
    if kind == "sender_notification_permission":
        if not isinstance(key, str):
            return Never()
        return SenderPermission(key)
    return Never()


# --- rules and rule sets --------------------------------------------------------

def normalise_actions(actions: Iterable[Any]) -> tuple[Any, ...]:
    """Actions with the historical ``dont_notify`` / ``coalesce`` stripped."""
    return tuple(a for a in actions if a not in _IGNORED_ACTIONS)


def highlight_of(actions: Iterable[Any]) -> bool:
    for action in actions:
        if isinstance(action, Mapping) and action.get("set_tweak") == "highlight":
            return action.get("value", True) is not False
    return False


def tweaks_of(actions: Iterable[Any]) -> dict[str, Any]:
    """The ``set_tweak`` actions as a tweaks dict (``highlight`` without a value is true)."""
    tweaks: dict[str, Any] = {}
    for action in actions:
        if isinstance(action, Mapping) and isinstance(action.get("set_tweak"), str):
            name = action["set_tweak"]
            tweaks[name] = action.get("value", True) if name == "highlight" else action.get("value")
    return tweaks


class CompiledRule:
    __slots__ = ("kind", "rule_id", "default", "enabled", "static", "dynamic", "actions",
                 "notify", "highlight", "source", "actions_json")

    def __init__(self, kind: str, rule: Mapping[str, Any]) -> None:
        self.kind = kind
        self.rule_id: str = rule["rule_id"]
        self.default = bool(rule.get("default"))
        self.enabled = bool(rule.get("enabled", True))
        conds: list[Condition]
        if kind in ("override", "underride"):
            conds = [compile_condition(c) for c in rule.get("conditions") or ()]
        elif kind == "content":
            pattern = rule.get("pattern")
            if pattern == LOCALPART:
                conds = [BodyContainsLocalpart()]
            else:
                conds = [compile_condition({"kind": "event_match", "key": "content.body", "pattern": pattern})]
        elif kind == "room":
            conds = [compile_condition({"kind": "event_property_is", "key": "room_id", "value": self.rule_id})]
        elif kind == "sender":
            conds = [compile_condition({"kind": "event_property_is", "key": "sender", "value": self.rule_id})]
        else:
            conds = [Never()]
        self.static = tuple(c for c in conds if not c.dynamic)
        self.dynamic = tuple(c for c in conds if c.dynamic)
        self.actions = normalise_actions(rule.get("actions") or ())
        self.notify = "notify" in self.actions
        self.highlight = highlight_of(self.actions)
        self.source = rule
        #: The actions as stored with each notification (encoded once).
        self.actions_json = json.dumps(list(self.actions), separators=(",", ":"), ensure_ascii=False)

    def __repr__(self) -> str:
        return f"<CompiledRule {self.kind} {self.rule_id}>"


class CompiledRules:
    """A user's rules in evaluation order, compiled."""

    __slots__ = ("rules", "__weakref__")

    def __init__(self, rules: Sequence[CompiledRule]) -> None:
        self.rules = tuple(rules)


def compile_rules(ordered: Iterable[tuple[str, Mapping[str, Any]]]) -> CompiledRules:
    """Compile ``(kind, rule)`` pairs, already in evaluation order."""
    return CompiledRules([CompiledRule(kind, rule) for kind, rule in ordered])


def evaluate(ctx: EventContext, rules: CompiledRules, user_id: str,
             display_name: str | None = None) -> CompiledRule | None:
    """The first rule of ``rules`` matching the event for ``user_id``, or None."""
    candidates = ctx._candidates.get(id(rules))
    if candidates is None:
        candidates = ctx.candidates(rules)
    for rule in candidates:
        if not rule.dynamic:
            return rule
        for cond in rule.dynamic:
            if not cond.for_user(ctx, user_id, display_name):
                break
        else:
            return rule
    return None
