"""Pushers: validation, a real push gateway process (down, then up), rejected pushkeys, backoff."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import task

import support
from homeserver.push.notifications import Notification
from homeserver.push.pushers import HttpPusher, PusherConfig, PusherPool, build_payload
from homeserver.storage.push import Pusher
from push_support import FakeEvent, FakeRoomView, check

ROOM = "!group:test.local"
TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pusher_body(url: str, pushkey: str = "key-1", **extra: Any) -> dict[str, Any]:
    return {"kind": "http", "app_id": "org.example.app", "pushkey": pushkey, "app_display_name": "App",
            "device_display_name": "Phone", "lang": "en", "data": {"url": url, **extra.pop("data", {})},
            **extra}


async def _eventually(fn, timeout_s: float = 20.0):
    from twisted.internet import reactor
    waited = 0.0
    while True:
        result = await fn()
        if result:
            return result
        if waited > timeout_s:
            raise AssertionError("condition not reached")
        await task.deferLater(reactor, 0.05, lambda: None)
        waited += 0.05


@pytest_twisted.ensureDeferred
async def test_pusher_set_validation_and_listing(client_factory):
    c = client_factory()
    await c.register("alice")
    url = "https://push.example.org/_matrix/push/v1/notify"
    bad = [
        ({"app_id": "a", "pushkey": "k"}, "M_MISSING_PARAM"),
        (_pusher_body("https://push.example.org/notify"), "M_INVALID_PARAM"),
        (_pusher_body("ftp://push.example.org/_matrix/push/v1/notify"), "M_INVALID_PARAM"),
        (_pusher_body(url, kind="carrier-pigeon"), "M_INVALID_PARAM"),
        (_pusher_body(url, data={"format": "full"}), "M_INVALID_PARAM"),
        ({k: v for k, v in _pusher_body(url).items() if k != "lang"}, "M_MISSING_PARAM"),
        (_pusher_body(url, pushkey="k" * 513), "M_INVALID_PARAM"),
        ({**_pusher_body(url), "data": {}}, "M_MISSING_PARAM"),
    ]
    for body, errcode in bad:
        status, resp = await c.post("/_matrix/client/v3/pushers/set", body)
        assert (status, resp["errcode"]) == (400, errcode), (body, resp)
    status, resp = await c.post("/_matrix/client/v3/pushers/set",
                                _pusher_body(url, profile_tag="tag", data={"format": "event_id_only", "x": 1}))
    assert status == 200, resp
    check("/pushers/set", "post", 200, resp)
    status, resp = await c.post("/_matrix/client/v3/pushers/set", _pusher_body(url, pushkey="key-2"))
    status, listing = await c.get("/_matrix/client/v3/pushers")
    assert status == 200
    check("/pushers", "get", 200, listing)
    assert [p["pushkey"] for p in listing["pushers"]] == ["key-1", "key-2"]
    assert listing["pushers"][0]["data"] == {"url": url, "format": "event_id_only", "x": 1}
    assert listing["pushers"][0]["profile_tag"] == "tag"
    # replace: the same app_id + pushkey updates in place
    await c.post("/_matrix/client/v3/pushers/set", _pusher_body(url, app_display_name="App 2"))
    _, listing = await c.get("/_matrix/client/v3/pushers")
    assert [p["app_display_name"] for p in listing["pushers"]] == ["App 2", "App"]
    # another user taking the pushkey removes ours unless append is set
    bob = client_factory()
    await bob.register("bob")
    await bob.post("/_matrix/client/v3/pushers/set", _pusher_body(url, pushkey="key-2", append=True))
    _, listing = await c.get("/_matrix/client/v3/pushers")
    assert len(listing["pushers"]) == 2
    await bob.post("/_matrix/client/v3/pushers/set", _pusher_body(url, pushkey="key-2"))
    _, listing = await c.get("/_matrix/client/v3/pushers")
    assert [p["pushkey"] for p in listing["pushers"]] == ["key-1"]
    # kind null removes
    status, _ = await c.post("/_matrix/client/v3/pushers/set",
                             {"kind": None, "app_id": "org.example.app", "pushkey": "key-1"})
    assert status == 200
    assert (await c.get("/_matrix/client/v3/pushers"))[1] == {"pushers": []}


@pytest.fixture
def gateway_port():
    port = _free_port()
    procs: list[subprocess.Popen] = []

    def start() -> None:
        proc = subprocess.Popen([sys.executable, os.path.join(TESTS, "push_gateway.py"), str(port)],
                                stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        procs.append(proc)

    yield port, start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


@pytest_twisted.ensureDeferred
async def test_real_gateway_down_then_up_and_rejected_pushkey(tmp_path, database_url, gateway_port):
    port, start_gateway = gateway_port
    config = support.make_config(tmp_path, database_url,
                                 push={"initial_backoff": 0.05, "max_backoff": 0.2, "flush_delay": 0.01})
    hs = await support.start_homeserver(config)
    try:
        view = FakeRoomView()
        view.add_room(ROOM, ["@alice:test.local", "@bob:test.local", "@carol:test.local"],
                      names={"@bob:test.local": "Bob"}, name="Lunch group")
        hs.notifications._rooms = view
        hs.pushers.rooms = view
        alice = support.Client(hs)
        await alice.register("alice")
        url = f"http://127.0.0.1:{port}/_matrix/push/v1/notify"
        status, _ = await alice.post("/_matrix/client/v3/pushers/set", _pusher_body(url, data={"custom": "x"}))
        assert status == 200
        event = FakeEvent(ROOM, "@bob:test.local", "lunch, alice?")
        hs.notifications.on_events([event])
        pusher = hs.pushers.pushers_of("@alice:test.local")[0]

        async def failed_twice() -> bool:
            return pusher.backoff_s >= 0.1  # the gateway is down: at least two attempts failed
        await _eventually(failed_twice)
        assert pusher.sent == 0
        start_gateway()

        async def received() -> list:
            resp = await treq.get(f"http://127.0.0.1:{port}/received")
            return await resp.json()
        got = await _eventually(received)
        assert len(got) == 1
        note = got[0]["notification"]
        assert note["event_id"] == event.event_id and note["room_id"] == ROOM
        assert note["type"] == "m.room.message" and note["sender"] == "@bob:test.local"
        assert note["sender_display_name"] == "Bob" and note["room_name"] == "Lunch group"
        assert note["content"] == {"msgtype": "m.text", "body": "lunch, alice?"}
        assert note["prio"] == "high" and note["counts"] == {"unread": 1, "missed_calls": 0}
        device = note["devices"][0]
        assert device["app_id"] == "org.example.app" and device["pushkey"] == "key-1"
        assert device["data"] == {"custom": "x"}  # everything but the url
        assert device["tweaks"] == {"sound": "default", "highlight": True}
        assert isinstance(device["pushkey_ts"], int)

        # a rejected pushkey removes its pusher; event_id_only sends no event fields
        await alice.post("/_matrix/client/v3/pushers/set",
                         _pusher_body(url, pushkey="reject-me", append=True, data={"format": "event_id_only"}))
        hs.notifications.on_events([FakeEvent(ROOM, "@carol:test.local", "more")])

        async def removed() -> bool:
            _, listing = await alice.get("/_matrix/client/v3/pushers")
            return [p["pushkey"] for p in listing["pushers"]] == ["key-1"]
        await _eventually(removed)
        got = await received()
        slim = [g["notification"] for g in got if g["notification"]["devices"][0]["pushkey"] == "reject-me"]
        assert slim and "type" not in slim[0] and "content" not in slim[0]
        assert slim[0]["counts"] == {"unread": 2, "missed_calls": 0}
        assert set(slim[0]) == {"event_id", "room_id", "counts", "devices", "prio"}
    finally:
        await hs.stop()


class _Notifications:
    def __init__(self) -> None:
        self.listeners: list = []
        self.read: set[str] = set()

    def is_read(self, n: Notification) -> bool:
        return n.event_id in self.read

    def totals(self, user_id: str) -> tuple[int, int]:
        return (3, 1)


@pytest_twisted.ensureDeferred
async def test_backoff_read_check_and_give_up_with_a_fake_clock():
    from homeserver.util.clock import Clock
    clock = task.Clock()
    calls: list[tuple[str, dict]] = []
    answers: list[Any] = [ConnectionRefusedError(), (503, None), (200, {})]

    async def post_json(url: str, body: dict) -> tuple[int, Any]:
        calls.append((url, body))
        answer = answers.pop(0) if answers else (200, {})
        if isinstance(answer, Exception):
            raise answer
        return answer

    notes = _Notifications()
    view = FakeRoomView()
    pool = PusherPool(None, notes, view, Clock(clock), post_json,  # type: ignore[arg-type]
                      PusherConfig(initial_backoff_s=1, max_backoff_s=8, give_up_after_s=100))
    p = Pusher("@a:test.local", "app", "key", "http", "App", "Phone", None, "en",
               {"url": "http://gw/_matrix/push/v1/notify"}, 0)
    pool._add(p)
    http = pool.pushers_of("@a:test.local")[0]

    def note(i: int) -> Notification:
        return Notification(ROOM, "@a:test.local", f"$e{i}", i, {"type": "m.room.message", "content": {}},
                            ("notify",), False, clock.seconds() * 1000)
    pool.on_notifications([note(1), note(2)])
    assert len(calls) == 1 and http.backoff_s == 1
    notes.read.add("$e2")  # read while waiting: never sent
    clock.advance(1)
    assert len(calls) == 2 and http.backoff_s == 2
    clock.advance(2)
    assert len(calls) == 3 and http.sent == 1 and not http.queue
    assert calls[2][1]["notification"]["counts"] == {"unread": 3, "missed_calls": 1}
    # give up after give_up_after_s
    answers.extend([(500, None)] * 50)
    pool.on_notifications([note(3)])
    for _ in range(20):
        clock.advance(8)
    assert not http.queue and http.sent == 1
    http.stop()
    assert isinstance(http, HttpPusher)


def test_payload_priority_low_for_other_events():
    view = FakeRoomView()
    p = Pusher("@a:test.local", "app", "key", "http", "App", "Phone", None, "en",
               {"url": "http://gw/_matrix/push/v1/notify"}, 5000)
    n = Notification(ROOM, "@a:test.local", "$t", 1, {"type": "m.room.tombstone", "state_key": "",
                                                       "content": {}}, ("notify",), False, 0)
    assert build_payload(n, p, (0, 0), view)["notification"]["prio"] == "low"
    invite = Notification(ROOM, "@a:test.local", "$i", 2, {"type": "m.room.member", "state_key": "@a:test.local",
                                                           "content": {"membership": "invite"}}, ("notify",), False, 0)
    body = build_payload(invite, p, (0, 0), view)["notification"]
    assert body["prio"] == "high" and body["user_is_target"] is True
    assert body["devices"][0]["pushkey_ts"] == 5
