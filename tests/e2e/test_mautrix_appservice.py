"""mautrix-python's application-service framework, unmodified, against the homeserver over loopback.

The bridge registers a puppet (m.login.application_service), joins a room as
it, sends with a massaged timestamp, receives a human's message through a
pushed transaction, pings, and creates a portal room on an alias query.
"""
from __future__ import annotations

import asyncio
import socket
from urllib.parse import quote

import pytest_twisted
import yaml
from mautrix.appservice import AppService
from mautrix.appservice.state_store.file import FileASStateStore
from mautrix.types import (EventType, MessageEvent, MessageType, RoomAlias, RoomCreatePreset,
                           TextMessageEventContent)

import support
from fake_appservice import AS_TOKEN, HS_TOKEN, registration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest_twisted.ensureDeferred
async def test_mautrix_bridge_round_trip(tmp_path, database_url):
    port = _free_port()
    path = tmp_path / "wechat.yaml"
    path.write_text(yaml.safe_dump(registration(f"http://127.0.0.1:{port}")))
    hs = await support.start_homeserver(support.make_config(tmp_path, database_url,
                                                            app_service_config_files=[str(path)]))
    received: list[MessageEvent] = []
    got_message = asyncio.Event()

    async def query_alias(alias: RoomAlias):
        localpart = alias[1:].split(":")[0]
        room_id = await appservice.intent.create_room(alias_localpart=localpart, preset=RoomCreatePreset.PUBLIC)
        return {"room_id": room_id}  # mautrix answers 404 to a falsy result

    appservice = AppService(server=support.base_url(hs), domain="test.local", as_token=AS_TOKEN,
                            hs_token=HS_TOKEN, bot_localpart="wechatbot", id="wechat",
                            state_store=FileASStateStore(str(tmp_path / "mx-state.json"), binary=False),
                            query_alias=query_alias, ephemeral_events=True)

    @appservice.matrix_event_handler
    async def on_event(evt) -> None:
        if evt.type == EventType.ROOM_MESSAGE:
            received.append(evt)
            if evt.content.body == "hello from matrix":
                got_message.set()

    await support.aio(appservice.start("127.0.0.1", port))
    try:
        assert await support.aio(appservice.ping_self("mautrix-ping")) >= 0

        puppet = appservice.intent.user("@wechat_alice:test.local")
        await support.aio(puppet.ensure_registered())
        human = support.Client(hs)
        await human.register("alice")
        status, body = await human.post("/_matrix/client/v3/createRoom", {"preset": "private_chat"})
        room_id = body["room_id"]
        await human.post(f"/_matrix/client/v3/rooms/{quote(room_id)}/invite", {"user_id": puppet.mxid})
        await support.aio(puppet.join_room_by_id(room_id))
        await support.aio(puppet.send_message(room_id, TextMessageEventContent(msgtype=MessageType.TEXT, body="from wechat"),
                                              timestamp=1_600_000_000_000))
        await human.put(f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/t1",
                        {"msgtype": "m.text", "body": "hello from matrix"})
        await support.aio(asyncio.wait_for(got_message.wait(), 30))
        bodies = [(e.sender, e.content.body, e.timestamp) for e in received]
        assert (puppet.mxid, "from wechat", 1_600_000_000_000) in bodies
        assert bodies[-1][:2] == ("@alice:test.local", "hello from matrix")

        # a portal room made on demand when a human joins its alias
        status, body = await human.post(f"/_matrix/client/v3/join/{quote('#wechat_portal:test.local')}", {})
        assert status == 200, body
    finally:
        await support.aio(appservice.stop())
        await hs.stop()
