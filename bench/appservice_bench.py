"""Application-service benchmarks.

1. Interest filtering: events per second through ``Interest.services_for``
   with 10 registered services (2 user regexes and 1 alias regex each),
   1 000 rooms of 50 members.
2. Pushing: a real homeserver (SQLite, loopback) and a minimal application
   service; a human sends N messages into a room with a puppet (20 at a
   time); we measure how long until the service has acknowledged every one,
   and how many transactions carried them.

Run: ``python bench/appservice_bench.py [N]`` from the repository root.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import treq  # noqa: E402
import yaml  # noqa: E402
from twisted.internet import defer, task  # noqa: E402
from twisted.web import resource, server  # noqa: E402

from appservice.interest import Interest  # noqa: E402
from appservice.registration import parse_registration  # noqa: E402
from homeserver import Config, HomeServer  # noqa: E402


def bench_interest() -> None:
    services = [parse_registration({
        "id": f"s{i}", "url": "http://x", "as_token": f"a{i}", "hs_token": f"h{i}", "sender_localpart": f"bot{i}",
        "namespaces": {"users": [{"exclusive": True, "regex": f"@b{i}_.*:hs"},
                                 {"exclusive": False, "regex": f"@x{i}_[0-9]+:hs"}],
                       "aliases": [{"exclusive": True, "regex": f"#b{i}_.*:hs"}]}}, "hs") for i in range(10)]
    interest = Interest(services)
    rooms = [(f"!r{r}:hs", frozenset(f"@u{r}_{m}:hs" for m in range(49)) | {f"@b{r % 10}_p:hs"})
             for r in range(1000)]
    events = [(SimpleNamespace(room_id=rooms[i % 1000][0], sender=f"@u{i % 1000}_1:hs", type="m.room.message",
                               state_key=None, content={}), rooms[i % 1000][1]) for i in range(100_000)]
    for label in ("cold (caches filling)", "warm"):
        start = time.perf_counter()
        matched = sum(len(interest.services_for(ev, joined)) for ev, joined in events)
        elapsed = time.perf_counter() - start
        print(f"interest, {label}: {len(events) / elapsed:,.0f} events/s with 10 services ({matched} deliveries)")


class Counter(resource.Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.events = 0
        self.transactions = 0
        self.done: defer.Deferred[None] | None = None
        self.target = 0

    def render_PUT(self, request: server.Request) -> bytes:
        body = json.loads(request.content.read())
        self.transactions += 1
        self.events += sum(1 for e in body["events"] if e["type"] == "m.room.message")
        if self.done is not None and self.events >= self.target and not self.done.called:
            self.done.callback(None)
        return b"{}"


async def bench_push(reactor: Any, n: int) -> None:
    app = Counter()
    as_port = reactor.listenTCP(0, server.Site(app), interface="127.0.0.1")
    tmp = tempfile.mkdtemp()
    reg = Path(tmp) / "as.yaml"
    reg.write_text(yaml.safe_dump({
        "id": "bench", "url": f"http://127.0.0.1:{as_port.getHost().port}", "as_token": "bench-as",
        "hs_token": "bench-hs", "sender_localpart": "benchbot",
        "namespaces": {"users": [{"exclusive": True, "regex": "@bench_.*:bench.local"}]}, "rate_limited": False}))
    config = Config.from_dict({
        "server_name": "bench.local", "data_dir": tmp, "database": {"url": f"sqlite:///{tmp}/hs.db"},
        "listeners": [{"bind": "127.0.0.1", "port": 0}], "enable_registration": True, "bcrypt_rounds": 4,
        "rate_limiting": {"enabled": False}, "access_log": False, "app_service_config_files": [str(reg)]},
        base_dir=tmp)
    hs = HomeServer(config, reactor)
    await hs.start()
    base = f"http://127.0.0.1:{hs.ports[0]}/_matrix/client/v3"

    async def call(method: str, path: str, body: Any, token: str, params: Any = None) -> Any:
        resp = await treq.request(method, base + path, data=json.dumps(body).encode(), params=params,
                                  headers={"Authorization": [f"Bearer {token}"]})
        return json.loads(await resp.content())

    first = await call("POST", "/register", {"username": "human", "password": "pw-123456"}, "")
    reg_body = await call("POST", "/register", {"username": "human", "password": "pw-123456",
                                                "auth": {"type": "m.login.dummy", "session": first["session"]}}, "")
    token = reg_body["access_token"]
    await call("POST", "/register", {"type": "m.login.application_service", "username": "bench_p",
                                     "inhibit_login": True}, "bench-as")
    room_id = (await call("POST", "/createRoom", {"preset": "public_chat"}, token))["room_id"]
    await call("POST", f"/join/{quote(room_id)}", {}, "bench-as", {"user_id": "@bench_p:bench.local"})

    app.target, app.done = n, defer.Deferred()
    start = time.perf_counter()
    sem = defer.DeferredSemaphore(20)
    await defer.gatherResults([sem.run(lambda i=i: defer.Deferred.fromCoroutine(call(
        "PUT", f"/rooms/{quote(room_id)}/send/m.room.message/t{i}", {"msgtype": "m.text", "body": str(i)}, token)))
        for i in range(n)])
    sent = time.perf_counter() - start
    await app.done
    delivered = time.perf_counter() - start
    print(f"push: {n} messages sent in {sent:.2f}s; all acknowledged by the service after {delivered:.2f}s "
          f"({n / delivered:,.0f} events/s) in {app.transactions} transactions")
    await hs.stop()
    await as_port.stopListening()


def main(reactor: Any, n: int) -> defer.Deferred[None]:
    bench_interest()
    return defer.Deferred.fromCoroutine(bench_push(reactor, n))


if __name__ == "__main__":
    task.react(main, [int(sys.argv[1]) if len(sys.argv) > 1 else 2000])
