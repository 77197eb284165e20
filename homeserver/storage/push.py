"""Push rules, pushers, notifications and read positions (tables of ``070_push.sql``, ``071_push_grouped``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from homeserver.push.ruleset import DefaultChange, UserRules
from homeserver.storage.database import Database, Txn, insert_many
from homeserver.util import json as jsonutil


class RelativeRuleNotFound(Exception):
    """``before`` / ``after`` names no user-defined rule of that kind."""

    def __init__(self, rule_id: str) -> None:
        super().__init__(rule_id)
        self.rule_id = rule_id


class TooManyRules(Exception):
    pass


@dataclass(frozen=True)
class Pusher:
    user_id: str
    app_id: str
    pushkey: str
    kind: str
    app_display_name: str
    device_display_name: str
    profile_tag: str | None
    lang: str
    data: dict[str, Any]
    pushkey_ts: int

    def to_client(self) -> dict[str, Any]:
        out = {"pushkey": self.pushkey, "kind": self.kind, "app_id": self.app_id,
               "app_display_name": self.app_display_name,
               "device_display_name": self.device_display_name, "lang": self.lang,
               "data": self.data}
        if self.profile_tag is not None:
            out["profile_tag"] = self.profile_tag
        return out


@dataclass(frozen=True)
class NotificationRow:
    room_id: str
    user_id: str
    stream_ordering: int
    event_id: str
    actions: Sequence[Any]
    highlight: bool
    is_call: bool
    ts: int


_PUSHER_COLS = ("user_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag,"
                " lang, data, pushkey_ts")


def _pusher(row: tuple) -> Pusher:
    return Pusher(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7],
                  jsonutil.loads(row[8]), int(row[9]))


class PushStore:
    def __init__(self, db: Database, max_rules_per_user: int = 2000) -> None:
        self.db = db
        self.max_rules_per_user = max_rules_per_user

    # --- rules -------------------------------------------------------------------

    async def get_user_rules(self, user_id: str) -> UserRules:
        def fn(txn: Txn) -> UserRules:
            rules = UserRules(own={})
            for kind, rule_id, conditions, pattern, actions, enabled in txn.query(
                    "SELECT kind, rule_id, conditions, pattern, actions, enabled FROM push_rules"
                    " WHERE user_id = ? ORDER BY kind, priority DESC", (user_id,)):
                rule: dict[str, Any] = {"rule_id": rule_id, "enabled": bool(enabled),
                                        "actions": jsonutil.loads(actions)}
                if conditions is not None:
                    rule["conditions"] = jsonutil.loads(conditions)
                if pattern is not None:
                    rule["pattern"] = pattern
                rules.own.setdefault(kind, []).append(rule)
            for kind, rule_id, enabled, actions in txn.query(
                    "SELECT kind, rule_id, enabled, actions FROM push_rule_defaults WHERE user_id = ?",
                    (user_id,)):
                rules.changes[(kind, rule_id)] = DefaultChange(
                    None if enabled is None else bool(enabled),
                    None if actions is None else jsonutil.loads(actions))
            return rules
        return await self.db.run(fn)

    async def put_rule(self, user_id: str, kind: str, rule_id: str, conditions: list[Any] | None,
                       pattern: str | None, actions: list[Any], before: str | None,
                       after: str | None) -> None:
        """Create or update a user-defined rule, placing it by ``before`` / ``after``.

        Raises:
            RelativeRuleNotFound: ``before`` / ``after`` is not a rule of this kind.
            TooManyRules: the user is at :attr:`max_rules_per_user`.
        """
        def fn(txn: Txn) -> None:
            rows = txn.query("SELECT rule_id, enabled FROM push_rules WHERE user_id = ? AND kind = ?"
                             " ORDER BY priority DESC", (user_id, kind))
            order = [r[0] for r in rows]
            enabled = {r[0]: bool(r[1]) for r in rows}
            existing = rule_id in enabled
            if not existing and txn.scalar("SELECT COUNT(*) FROM push_rules WHERE user_id = ?",
                                           (user_id,)) >= self.max_rules_per_user:
                raise TooManyRules()
            old_index = order.index(rule_id) if existing else 0
            if existing:
                order.remove(rule_id)
            if before is not None:
                if before not in order:
                    raise RelativeRuleNotFound(before)
                index = order.index(before)
            elif after is not None:
                if after not in order:
                    raise RelativeRuleNotFound(after)
                index = order.index(after) + 1
            else:
                index = old_index
            order.insert(index, rule_id)
            txn.execute(
                "INSERT INTO push_rules (user_id, kind, rule_id, priority, conditions, pattern, actions,"
                " enabled) VALUES (?, ?, ?, 0, ?, ?, ?, ?) ON CONFLICT (user_id, kind, rule_id) DO UPDATE"
                " SET conditions = excluded.conditions, pattern = excluded.pattern,"
                " actions = excluded.actions",
                (user_id, kind, rule_id, None if conditions is None else jsonutil.dumps(conditions),
                 pattern, jsonutil.dumps(actions), True))
            n = len(order)
            txn.executemany("UPDATE push_rules SET priority = ? WHERE user_id = ? AND kind = ? AND rule_id = ?",
                            [(n - i, user_id, kind, rid) for i, rid in enumerate(order)])
        await self.db.run(fn)

    async def delete_rule(self, user_id: str, kind: str, rule_id: str) -> bool:
        def fn(txn: Txn) -> bool:
            txn.execute("DELETE FROM push_rules WHERE user_id = ? AND kind = ? AND rule_id = ?",
                        (user_id, kind, rule_id))
            return txn.rowcount > 0
        return await self.db.run(fn)

    async def set_own_field(self, user_id: str, kind: str, rule_id: str, field: str, value: Any) -> bool:
        """Set ``enabled`` or ``actions`` of a user-defined rule. False when there is none."""
        column = {"enabled": "enabled", "actions": "actions"}[field]
        stored = jsonutil.dumps(value) if field == "actions" else bool(value)

        def fn(txn: Txn) -> bool:
            txn.execute(f"UPDATE push_rules SET {column} = ? WHERE user_id = ? AND kind = ? AND rule_id = ?",
                        (stored, user_id, kind, rule_id))
            return txn.rowcount > 0
        return await self.db.run(fn)

    async def set_default_field(self, user_id: str, kind: str, rule_id: str, field: str, value: Any) -> None:
        """Change ``enabled`` or ``actions`` of a server-default rule for one user."""
        column = {"enabled": "enabled", "actions": "actions"}[field]
        stored = jsonutil.dumps(value) if field == "actions" else bool(value)

        def fn(txn: Txn) -> None:
            txn.execute(
                f"INSERT INTO push_rule_defaults (user_id, kind, rule_id, {column}) VALUES (?, ?, ?, ?)"
                f" ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET {column} = excluded.{column}",
                (user_id, kind, rule_id, stored))
        await self.db.run(fn)

    # --- pushers -----------------------------------------------------------------

    async def get_pushers(self, user_id: str | None = None) -> list[Pusher]:
        """One user's pushers, or every pusher (at start-up)."""
        def fn(txn: Txn) -> list[Pusher]:
            if user_id is None:
                rows = txn.query(f"SELECT {_PUSHER_COLS} FROM pushers")
            else:
                rows = txn.query(f"SELECT {_PUSHER_COLS} FROM pushers WHERE user_id = ?"
                                 " ORDER BY pushkey_ts, app_id, pushkey", (user_id,))
            return [_pusher(r) for r in rows]
        return await self.db.run(fn)

    async def count_pushers(self, user_id: str) -> int:
        return await self.db.run(lambda txn: int(txn.scalar(
            "SELECT COUNT(*) FROM pushers WHERE user_id = ?", (user_id,))))

    async def set_pusher(self, pusher: Pusher, append: bool) -> list[Pusher]:
        """Add or replace a pusher. Without ``append``, the same app_id/pushkey of other
        users is removed. Returns the pushers removed that way."""
        def fn(txn: Txn) -> list[Pusher]:
            removed: list[Pusher] = []
            if not append:
                removed = [_pusher(r) for r in txn.query(
                    f"SELECT {_PUSHER_COLS} FROM pushers WHERE app_id = ? AND pushkey = ? AND user_id <> ?",
                    (pusher.app_id, pusher.pushkey, pusher.user_id))]
                txn.execute("DELETE FROM pushers WHERE app_id = ? AND pushkey = ? AND user_id <> ?",
                            (pusher.app_id, pusher.pushkey, pusher.user_id))
            txn.execute(
                f"INSERT INTO pushers ({_PUSHER_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (app_id, pushkey, user_id) DO UPDATE SET kind = excluded.kind,"
                " app_display_name = excluded.app_display_name,"
                " device_display_name = excluded.device_display_name, profile_tag = excluded.profile_tag,"
                " lang = excluded.lang, data = excluded.data",
                (pusher.user_id, pusher.app_id, pusher.pushkey, pusher.kind, pusher.app_display_name,
                 pusher.device_display_name, pusher.profile_tag, pusher.lang,
                 jsonutil.dumps(pusher.data), pusher.pushkey_ts))
            return removed
        return await self.db.run(fn)

    async def delete_pusher(self, user_id: str, app_id: str, pushkey: str) -> bool:
        def fn(txn: Txn) -> bool:
            txn.execute("DELETE FROM pushers WHERE user_id = ? AND app_id = ? AND pushkey = ?",
                        (user_id, app_id, pushkey))
            return txn.rowcount > 0
        return await self.db.run(fn)

    # --- notifications and read positions ---------------------------------------

    async def add_notifications(self, groups: Sequence[tuple],
                                read_positions: Iterable[tuple[str, str, int]]) -> None:
        """One transaction for a batch of notification groups and read positions.

        A group is ``(room_id, stream_ordering, grp, event_id, actions JSON,
        highlight, is_call, ts, user_ids)``: the members notified about one event
        with the same actions, ``user_ids`` as made by :func:`join_user_ids`.
        """
        positions = list(read_positions)

        def fn(txn: Txn) -> None:
            insert_many(txn, "push_notification_groups (room_id, stream_ordering, grp, event_id, actions,"
                        " highlight, is_call, ts, user_ids)", groups,
                        "ON CONFLICT (room_id, stream_ordering, grp) DO NOTHING")
            txn.executemany(
                "INSERT INTO push_read_positions (room_id, user_id, stream_ordering) VALUES (?, ?, ?)"
                " ON CONFLICT (room_id, user_id) DO UPDATE SET stream_ordering = excluded.stream_ordering"
                " WHERE push_read_positions.stream_ordering < excluded.stream_ordering",
                positions)
        await self.db.run(fn)

    async def get_notifications(self, user_id: str, room_ids: Sequence[str] | None, before: int | None,
                                limit: int, only_highlight: bool) -> list[NotificationRow]:
        """A user's notifications, newest first, strictly before stream position ``before``.

        Args:
            room_ids: the rooms to look in (those the user is or was in); ``None``
                looks in every room (one scan of the whole table in stream order:
                fine for small servers and tests, see docs/push.md).
        """
        needle = "\n" + user_id + "\n"
        # Exact, case-sensitive substring search (SQLite's LIKE ignores ASCII case).
        contains = "instr(user_ids, ?) > 0" if self.db.engine_name == "sqlite" else "strpos(user_ids, ?) > 0"
        cols = "room_id, stream_ordering, event_id, actions, highlight, is_call, ts"

        def where(room: bool, floor: int | None) -> tuple[str, list[Any]]:
            sql, args = contains, [needle]
            if room:
                sql += " AND room_id = ?"
            if before is not None:
                sql += " AND stream_ordering < ?"
                args.append(before)
            if floor is not None:
                sql += " AND stream_ordering > ?"
                args.append(floor)
            if only_highlight:
                sql += " AND highlight = ?"
                args.append(True)
            return sql, args

        def fn(txn: Txn) -> list[tuple]:
            if room_ids is None:
                cond, args = where(False, None)
                return txn.query(f"SELECT {cols} FROM push_notification_groups WHERE {cond}"
                                 " ORDER BY stream_ordering DESC LIMIT ?", [*args, limit])
            # Per room, an index scan of (room_id, stream_ordering) backwards that stops
            # at ``limit`` matches; UNION ALL of up to _ROOMS_PER_QUERY rooms per statement.
            # Once ``limit`` rows are in hand, later statements only look above the
            # oldest of them.
            best: list[tuple] = []
            for i in range(0, len(room_ids), _ROOMS_PER_QUERY):
                floor = best[-1][1] if len(best) >= limit else None
                cond, args = where(True, floor)
                parts, params = [], []
                for room_id in room_ids[i:i + _ROOMS_PER_QUERY]:
                    parts.append(f"SELECT * FROM (SELECT {cols} FROM push_notification_groups WHERE {cond}"
                                 " ORDER BY stream_ordering DESC LIMIT ?) AS r")
                    params += [args[0], room_id, *args[1:], limit]
                best += txn.query(" UNION ALL ".join(parts), params)
                best.sort(key=lambda r: -int(r[1]))
                del best[limit:]
            return best

        rows = await self.db.run(fn) if room_ids is None or room_ids else []
        return [NotificationRow(r[0], user_id, int(r[1]), r[2], jsonutil.loads(r[3]), bool(r[4]), bool(r[5]),
                                int(r[6])) for r in rows]

    async def load_unread(self, since_ts: int) -> tuple[dict[tuple[str, str], int],
                                                       list[tuple[str, int, bool, bool, list[str]]]]:
        """Read positions, and the notifications after them (for counts at start-up).

        Returns:
            ``{(room_id, user_id): read position}`` and, for each group newer than
            ``since_ts`` with members who have not read it, ``(room_id,
            stream_ordering, highlight, is_call, those members)``, oldest first.
        """
        def fn(txn: Txn) -> tuple[dict[tuple[str, str], int], list[tuple[str, int, bool, bool, list[str]]]]:
            read = {(r[0], r[1]): int(r[2]) for r in txn.query(
                "SELECT room_id, user_id, stream_ordering FROM push_read_positions")}
            out = []
            get = read.get
            for room_id, so, highlight, is_call, user_ids in txn.query(
                    "SELECT room_id, stream_ordering, highlight, is_call, user_ids FROM push_notification_groups"
                    " WHERE ts >= ? ORDER BY stream_ordering, grp", (since_ts,)):
                so = int(so)
                unread = [u for u in split_user_ids(user_ids) if so > get((room_id, u), 0)]
                if unread:
                    out.append((room_id, so, bool(highlight), bool(is_call), unread))
            return read, out
        return await self.db.run(fn)

    async def prune_notifications(self, before_ts: int) -> int:
        def fn(txn: Txn) -> int:
            txn.execute("DELETE FROM push_notification_groups WHERE ts < ?", (before_ts,))
            return txn.rowcount
        return await self.db.run(fn)


#: Rooms per statement in :meth:`PushStore.get_notifications` (SQLite allows 500 UNION terms).
_ROOMS_PER_QUERY = 100


def join_user_ids(user_ids: Iterable[str]) -> str:
    """The ``user_ids`` column: each ID between newlines (IDs cannot contain one)."""
    return "\n" + "\n".join(user_ids) + "\n"


def split_user_ids(value: str) -> list[str]:
    return value.strip("\n").split("\n")
