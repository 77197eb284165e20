"""Push rule evaluation for one message in a 500-member group (target: < 5 ms in total).

Scenarios (each a fresh event, so nothing is reused between runs):

1. pure evaluation: ``EventContext`` + ``evaluate`` for 499 members, all on
   the default rules, with display names;
2. the same with 50 members (10%) who have rules of their own (a
   do-not-disturb room rule, a keyword content rule, a disabled default);
3. the same event through ``NotificationService.on_events`` (counts,
   notification rows queued for the batch write, pusher hand-off; no I/O);
4. a message with ``m.mentions`` naming 5 members;
5. the batched write of what 20 such messages leave behind
   (``NotificationService.flush`` into a fresh SQLite database, wall time and
   CPU time of the whole process: binding rows holds the GIL that the reactor
   thread needs).

Run: ``python bench/push_bench.py`` from the repository root.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from homeserver.push.evaluator import EventContext, evaluate  # noqa: E402
from homeserver.push.notifications import NotificationService  # noqa: E402
from homeserver.push.ruleset import DEFAULT_COMPILED, DefaultChange, UserRules  # noqa: E402

ROOM = "!bench:example.org"
MEMBERS = [f"@member{i}:example.org" for i in range(500)]
NAMES = {m: f"Member Number {i}" for i, m in enumerate(MEMBERS)}
SENDER = MEMBERS[0]
_n = [0]


def message(content: dict[str, Any] | None = None) -> dict[str, Any]:
    _n[0] += 1
    return {"type": "m.room.message", "room_id": ROOM, "sender": SENDER, "event_id": f"$e{_n[0]}",
            "content": content or {"msgtype": "m.text", "body": f"Lunch at noon today, anyone? ({_n[0]})"}}


def custom_rules() -> dict[str, Any]:
    compiled = {}
    for i, m in enumerate(MEMBERS[1:51]):
        rules = UserRules(own={
            "room": [{"rule_id": ROOM, "enabled": True, "actions": []}] if i % 2 else [],
            "content": [{"rule_id": "kw", "enabled": True, "pattern": "deploy*", "actions": ["notify"]}],
        }, changes={("underride", ".m.rule.message"): DefaultChange(actions=["notify", {"set_tweak": "sound",
                                                                                      "value": "x"}])})
        compiled[m] = rules.compile()
    return compiled


def run_pure(custom: dict[str, Any], content: dict[str, Any] | None = None) -> tuple[float, float]:
    event = message(content)
    start, cpu = time.perf_counter(), time.thread_time()
    ctx = EventContext(event, len(MEMBERS), 0, {"room": 50})
    get = custom.get
    notified = 0
    for user in MEMBERS:
        if user == SENDER:
            continue
        rule = evaluate(ctx, get(user, DEFAULT_COMPILED), user, NAMES.get(user))
        if rule is not None and rule.notify:
            notified += 1
    elapsed = time.perf_counter() - start, time.thread_time() - cpu
    assert notified >= 470, notified
    return elapsed


class _View:
    def local_members(self, room_id): return MEMBERS
    def member_count(self, room_id): return len(MEMBERS)
    def display_names(self, room_id): return NAMES
    def power_level(self, room_id, user_id): return 0
    def notification_levels(self, room_id): return {"room": 50}
    def room_name(self, room_id): return None
    def room_alias(self, room_id): return None


class _Rules:
    def __init__(self, custom): self.custom = custom
    def compiled(self, user_id): return self.custom.get(user_id, DEFAULT_COMPILED)


class _Clock:
    def time_msec(self): return 0
    def call_later(self, *a, **k): return None


class _Event:
    def __init__(self, client, so):
        self.client, self.stream_ordering = client, so
        self.room_id, self.event_id = client["room_id"], client["event_id"]


def run_service(service: NotificationService) -> tuple[float, float]:
    event = _Event(message(), _n[0])
    start, cpu = time.perf_counter(), time.thread_time()
    service.on_events([event])
    elapsed = time.perf_counter() - start, time.thread_time() - cpu
    service._pending_rows.clear()
    return elapsed


def report(name: str, samples: list[tuple[float, float]]) -> None:
    wall = sorted(s[0] * 1000 for s in samples)
    cpu = sorted(s[1] * 1000 for s in samples)
    print(f"{name:56s} wall median {statistics.median(wall):5.2f} ms, p90 {wall[int(len(wall) * 0.9)]:5.2f};"
          f" CPU median {statistics.median(cpu):5.2f} ms")


def main() -> None:
    runs = 200
    custom = custom_rules()
    for _ in range(20):  # warm-up (regex and path caches)
        run_pure({})
        run_pure(custom)
    report("1. 499 members, default rules", [run_pure({}) for _ in range(runs)])
    report("2. 499 members, 50 with their own rules", [run_pure(custom) for _ in range(runs)])
    service = NotificationService(None, _Rules(custom), _View(), _Clock(),  # type: ignore[arg-type]
                                  is_local=lambda u: u.endswith(":example.org"))
    service._schedule = lambda: None  # type: ignore[method-assign]  # no flush in the bench
    for _ in range(20):
        run_service(service)
    report("3. same through NotificationService.on_events (counts)", [run_service(service) for _ in range(runs)])
    mentions = {"msgtype": "m.text", "body": "ping", "m.mentions": {"user_ids": MEMBERS[1:6]}}
    report("4. message with m.mentions of 5 members", [run_pure(custom, mentions) for _ in range(runs)])


def run_flush(messages: int = 20, runs: int = 10) -> None:
    """Scenario 5, on a real database (the store's own SQL), in its own reactor."""
    import tempfile

    from twisted.internet import defer, task, threads

    from homeserver.storage.database import Database, apply_migrations
    from homeserver.storage.push import PushStore

    async def go(reactor: Any) -> None:
        db = Database(f"sqlite:///{tempfile.mkdtemp()}/push.db", reactor)
        db.start()
        await threads.deferToThread(apply_migrations, db)
        service = NotificationService(PushStore(db), _Rules({}), _View(), _Clock(),  # type: ignore[arg-type]
                                      is_local=lambda u: u.endswith(":example.org"))
        service._schedule = lambda: None  # type: ignore[method-assign]
        samples = []
        for i in range(runs + 2):
            service.on_events([_Event(message(), _n[0]) for _ in range(messages)])
            start, cpu = time.perf_counter(), time.process_time()
            await service.flush()
            if i >= 2:  # warm-up
                samples.append((time.perf_counter() - start, time.process_time() - cpu))
        await db.close()
        report(f"5. flush of {messages} messages' notifications (SQLite)", samples)

    task.react(lambda reactor: defer.ensureDeferred(go(reactor)))


if __name__ == "__main__":
    main()
    run_flush()
