"""A small client for the im.qun WebSocket channel (see docs/websocket.md).

Usage: python ws_client.py http://127.0.0.1:8008 <access token> [room_id]

Prints each message pushed to you, sends "hello" to room_id over the socket,
and reconnects with since=<last next_batch> when the connection drops.
Uses aiohttp (installed with matrix-nio).
"""
from __future__ import annotations

import asyncio
import itertools
import json
import sys

import aiohttp

PATH = "/_matrix/client/unstable/im.qun/ws"


async def run(base: str, token: str, room_id: str | None) -> None:
    since: str | None = None
    ids = itertools.count()
    sent_hello = False
    async with aiohttp.ClientSession() as session:
        while True:
            params = {"since": since} if since else {}
            url = base.replace("http", "ws", 1) + PATH
            try:
                async with session.ws_connect(url, params=params, heartbeat=30,
                                              headers={"Authorization": f"Bearer {token}"}) as ws:
                    if room_id and not sent_hello:
                        await ws.send_json({
                            "type": "request", "id": str(next(ids)), "method": "PUT",
                            "path": f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/hello-{next(ids)}",
                            "body": {"msgtype": "m.text", "body": "hello"}})
                        sent_hello = True
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        frame = json.loads(msg.data)
                        if frame["type"] == "sync":
                            body = frame["body"]
                            for rid, room in body.get("rooms", {}).get("join", {}).items():
                                for event in room.get("timeline", {}).get("events", []):
                                    if event["type"] == "m.room.message":
                                        print(f"{rid} <{event['sender']}> {event['content'].get('body')}")
                            since = body["next_batch"]  # resume point
                        elif frame["type"] == "response":
                            print(f"response {frame['id']}: {frame['status']} {frame['body']}")
                        else:
                            print(f"error: {frame['body']}")
                    print(f"closed ({ws.close_code}); resuming from {since}")
            except aiohttp.WSServerHandshakeError as e:
                if e.status == 401:
                    raise SystemExit("the access token was refused")
                print(f"handshake failed: {e.status}")
            except aiohttp.ClientError as e:
                print(f"connection failed: {e}")
            await asyncio.sleep(1)


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
