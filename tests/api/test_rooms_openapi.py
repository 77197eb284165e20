"""Response shapes of every room endpoint, checked against the spec's OpenAPI.

Each response (successes and errors) is validated with jsonschema against
the schema the spec gives for that path, method and status
(/work/shared/matrix-spec/openapi/client-server.json).
"""
from __future__ import annotations

import json
import os
import re
from urllib.parse import quote

import jsonschema
import pytest
import pytest_twisted

from room_helpers import V1, V3, users

SPEC = os.environ.get("MATRIX_SPEC_OPENAPI", "/work/shared/matrix-spec/openapi/client-server.json")

pytestmark = pytest.mark.skipif(not os.path.exists(SPEC), reason=f"{SPEC} not available")


ERROR_SCHEMA = {"type": "object", "required": ["errcode", "error"],
                "properties": {"errcode": {"type": "string", "pattern": "^M_"}, "error": {"type": "string"}}}


def _load():
    with open(SPEC, encoding="utf-8") as f:
        spec = json.load(f)
    paths = []
    for template, methods in spec["paths"].items():
        regex = re.compile("^" + re.sub(r"\\\{\w+\\\}", "[^/]*", re.escape(template.strip())) + "$")
        paths.append((template, regex, methods))
    return paths


class Checker:
    def __init__(self, client):
        self.client = client
        self.paths = _load()
        self.seen: set[tuple[str, str]] = set()

    def schema_for(self, method: str, path: str, status: int):
        path = path.split("?")[0]
        for template, regex, methods in self.paths:
            if regex.match(path) and method.lower() in methods:
                responses = methods[method.lower()]["responses"]
                resp = responses.get(str(status))
                if resp is None and status >= 400:
                    # Not every endpoint lists every error status: use the standard error shape.
                    return template, ERROR_SCHEMA
                assert resp is not None, f"{method} {template}: status {status} not in the spec ({list(responses)})"
                schema = resp.get("content", {}).get("application/json", {}).get("schema")
                return template, schema
        raise AssertionError(f"{method} {path} is not in the spec")

    async def __call__(self, method: str, path: str, body=None, expect: int = 200, **kw):
        status, resp = await self.client.request(method, path, body, **kw)
        assert status == expect, (method, path, status, resp)
        template, schema = self.schema_for(method, path, status)
        if schema is not None:
            jsonschema.validate(resp, schema, cls=jsonschema.Draft202012Validator)
        self.seen.add((method, template))
        return resp


@pytest_twisted.ensureDeferred
async def test_room_endpoints_match_openapi(hs):
    alice, bob, carol = await users(hs, "alice", "bob", "carol")
    a, b, c = Checker(alice), Checker(bob), Checker(carol)
    room = (await a("POST", f"{V3}/createRoom", {"name": "n", "topic": "t", "room_alias_name": "shapes",
                                                 "preset": "public_chat"}))["room_id"]
    alias = quote("#shapes:test.local")
    await b("POST", f"{V3}/join/{alias}", {})
    await c("POST", f"{V3}/rooms/{room}/join", {})
    msg = (await a("PUT", f"{V3}/rooms/{room}/send/m.room.message/1", {"msgtype": "m.text", "body": "hi"}))["event_id"]
    await a("PUT", f"{V3}/rooms/{room}/state/m.room.topic/", {"topic": "new"})
    await a("GET", f"{V3}/rooms/{room}/state/m.room.topic/")
    await a("GET", f"{V3}/rooms/{room}/state")
    await a("GET", f"{V3}/rooms/{room}/event/{msg}")
    await a("GET", f"{V3}/rooms/{room}/messages?dir=b&limit=5")
    await a("GET", f"{V3}/rooms/{room}/context/{msg}?limit=4")
    await a("GET", f"{V3}/rooms/{room}/members")
    await a("GET", f"{V3}/rooms/{room}/joined_members")
    await a("GET", f"{V3}/joined_rooms")
    thread = {"msgtype": "m.text", "body": "t", "m.relates_to": {"rel_type": "m.thread", "event_id": msg}}
    await b("PUT", f"{V3}/rooms/{room}/send/m.room.message/2", thread)
    await b("PUT", f"{V3}/rooms/{room}/send/m.reaction/3",
            {"m.relates_to": {"rel_type": "m.annotation", "event_id": msg, "key": "+1"}})
    await a("GET", f"{V1}/rooms/{room}/relations/{msg}")
    await a("GET", f"{V1}/rooms/{room}/relations/{msg}/m.thread")
    await a("GET", f"{V1}/rooms/{room}/relations/{msg}/m.annotation/m.reaction")
    await a("GET", f"{V1}/rooms/{room}/threads")
    await a("GET", f"{V3}/rooms/{room}/event/{msg}")  # now with bundled aggregations
    await a("PUT", f"{V3}/directory/room/{quote('#other:test.local')}", {"room_id": room})
    await b("GET", f"{V3}/directory/room/{alias}")
    await a("GET", f"{V3}/rooms/{room}/aliases")
    await a("DELETE", f"{V3}/directory/room/{quote('#other:test.local')}")
    await a("PUT", f"{V3}/directory/list/room/{room}", {"visibility": "public"})
    await b("GET", f"{V3}/directory/list/room/{room}")
    await b("GET", f"{V3}/publicRooms?limit=5")
    await b("POST", f"{V3}/publicRooms", {"filter": {"generic_search_term": "n"}})
    await b("GET", f"{V1}/room_summary/{alias}")
    await a("PUT", f"{V3}/rooms/{room}/redact/{msg}/4", {"reason": "x"})
    await a("POST", f"{V3}/rooms/{room}/kick", {"user_id": carol.user_id, "reason": "r"})
    await a("POST", f"{V3}/rooms/{room}/ban", {"user_id": carol.user_id})
    await a("POST", f"{V3}/rooms/{room}/unban", {"user_id": carol.user_id})
    await a("POST", f"{V3}/rooms/{room}/invite", {"user_id": carol.user_id})
    await c("POST", f"{V3}/rooms/{room}/leave", {})
    await c("POST", f"{V3}/rooms/{room}/forget", {})
    knock_room = (await a("POST", f"{V3}/createRoom", {"initial_state": [
        {"type": "m.room.join_rules", "content": {"join_rule": "knock"}}]}))["room_id"]
    await c("POST", f"{V3}/knock/{knock_room}", {})
    # errors have the spec's shapes too
    await c("PUT", f"{V3}/rooms/{knock_room}/send/m.room.message/5", {"msgtype": "m.text", "body": "x"}, expect=403)
    private = (await a("POST", f"{V3}/createRoom", {}))["room_id"]
    await c("GET", f"{V3}/rooms/{private}/messages", expect=403)
    await a("GET", f"{V3}/rooms/{room}/event/$missing", expect=404)
    await a("GET", f"{V3}/directory/room/{quote('#nope:test.local')}", expect=404)
    await a("POST", f"{V3}/createRoom", {"room_version": "nope"}, expect=400)
    await b("POST", f"{V3}/rooms/{room}/kick", {"user_id": alice.user_id}, expect=403)

    covered = {(m, t.strip()) for m, t in a.seen | b.seen | c.seen}
    expected = {(m.upper(), t.strip()) for t, _, methods in a.paths for m in methods if _in_scope(t)}
    assert expected - covered == set()


def _in_scope(template: str) -> bool:
    t = template.strip()
    scope = ("/createRoom", "/join/", "/knock/", "/joined_rooms", "/publicRooms", "/room_summary/",
             "/directory/room/", "/directory/list/room/", "/relations/", "/threads")
    room_paths = ("/ban", "/unban", "/kick", "/invite", "/leave", "/forget", "/join", "/send/", "/state",
                  "/redact/", "/event/", "/messages", "/context/", "/members", "/joined_members", "/aliases")
    if "/appservice/" in t:
        return False
    if any(s in t for s in scope):
        return True
    return "/rooms/{roomId}" in t and any(t.endswith(p) or p + "{" in t for p in room_paths)
