"""Push rule CRUD over HTTP: ordering, enabled, actions, errors and response shapes."""
from __future__ import annotations

from urllib.parse import quote

import pytest_twisted

from push_support import check

RULES = "/_matrix/client/v3/pushrules"


async def _user(client_factory, name="alice"):
    c = client_factory()
    await c.register(name)
    return c


def _ids(ruleset, kind):
    return [r["rule_id"] for r in ruleset[kind] if not r["default"]]


@pytest_twisted.ensureDeferred
async def test_get_all_rules_has_the_defaults_in_spec_shape(client_factory):
    c = await _user(client_factory)
    status, body = await c.get(RULES + "/")
    assert status == 200, body
    check("/pushrules/", "get", 200, body)
    glob = body["global"]
    assert [r["rule_id"] for r in glob["override"]][:3] == [
        ".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me"]
    invite = glob["override"][2]
    assert invite["conditions"][2] == {"key": "state_key", "kind": "event_match", "pattern": c.user_id}
    mention = next(r for r in glob["override"] if r["rule_id"] == ".m.rule.is_user_mention")
    assert mention["conditions"][0]["value"] == c.user_id
    assert glob["content"][0]["pattern"] == "alice"
    assert [r["rule_id"] for r in glob["underride"]][-1] == ".m.rule.encrypted"
    status, body2 = await c.get(RULES + "/global/")
    assert status == 200 and body2 == glob
    check("/pushrules/global/", "get", 200, body2)


@pytest_twisted.ensureDeferred
async def test_crud_with_before_and_after(client_factory):
    c = await _user(client_factory)
    for rule_id in ("a", "b"):
        status, body = await c.put(f"{RULES}/global/content/{rule_id}",
                                   {"pattern": f"cake{rule_id}", "actions": ["notify"]})
        assert status == 200, body
        check("/pushrules/global/{kind}/{ruleId}", "put", 200, body)
    _, rs = await c.get(RULES + "/global/")
    assert _ids(rs, "content") == ["b", "a"]  # new rules are the most important
    await c.put(f"{RULES}/global/content/c", {"pattern": "x", "actions": []}, params={"after": "a"})
    await c.put(f"{RULES}/global/content/d", {"pattern": "y", "actions": []}, params={"before": "a"})
    _, rs = await c.get(RULES + "/global/")
    assert _ids(rs, "content") == ["b", "d", "a", "c"]
    # moving an existing rule; an update without before/after keeps its place
    await c.put(f"{RULES}/global/content/c", {"pattern": "x2", "actions": []}, params={"before": "b"})
    await c.put(f"{RULES}/global/content/a", {"pattern": "cakea2", "actions": ["notify"]})
    _, rs = await c.get(RULES + "/global/")
    assert _ids(rs, "content") == ["c", "b", "d", "a"]
    status, rule = await c.get(f"{RULES}/global/content/a")
    assert status == 200 and rule == {"rule_id": "a", "default": False, "enabled": True,
                                      "actions": ["notify"], "pattern": "cakea2"}
    check("/pushrules/global/{kind}/{ruleId}", "get", 200, rule)
    status, body = await c.request("DELETE", f"{RULES}/global/content/a")
    assert status == 200
    check("/pushrules/global/{kind}/{ruleId}", "delete", 200, body)
    status, body = await c.get(f"{RULES}/global/content/a")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    check("/pushrules/global/{kind}/{ruleId}", "get", 404, body)


@pytest_twisted.ensureDeferred
async def test_override_and_room_rules(client_factory):
    c = await _user(client_factory)
    cond = [{"kind": "event_match", "key": "content.msgtype", "pattern": "m.emote"}]
    status, _ = await c.put(f"{RULES}/global/override/emotes", {"conditions": cond, "actions": ["notify"]})
    assert status == 200
    _, rs = await c.get(RULES + "/global/")
    ids = [r["rule_id"] for r in rs["override"]]
    assert ids[:2] == [".m.rule.master", "emotes"]  # master first, then user rules, then defaults
    room = quote("!group:test.local")
    status, _ = await c.put(f"{RULES}/global/room/{room}", {"actions": []})
    assert status == 200
    status, rule = await c.get(f"{RULES}/global/room/{room}")
    assert status == 200 and rule == {"rule_id": "!group:test.local", "default": False, "enabled": True,
                                      "actions": []}


@pytest_twisted.ensureDeferred
async def test_enabled_and_actions(client_factory):
    c = await _user(client_factory)
    path = f"{RULES}/global/override/.m.rule.master"
    status, body = await c.get(path + "/enabled")
    assert status == 200 and body == {"enabled": False}
    check("/pushrules/global/{kind}/{ruleId}/enabled", "get", 200, body)
    status, body = await c.put(path + "/enabled", {"enabled": True})
    assert status == 200
    check("/pushrules/global/{kind}/{ruleId}/enabled", "put", 200, body)
    assert (await c.get(path + "/enabled"))[1] == {"enabled": True}
    msg = f"{RULES}/global/underride/.m.rule.message"
    status, body = await c.put(msg + "/actions", {"actions": ["notify", {"set_tweak": "sound", "value": "x"}]})
    assert status == 200
    check("/pushrules/global/{kind}/{ruleId}/actions", "put", 200, body)
    status, body = await c.get(msg + "/actions")
    assert body == {"actions": ["notify", {"set_tweak": "sound", "value": "x"}]}
    check("/pushrules/global/{kind}/{ruleId}/actions", "get", 200, body)
    status, rule = await c.get(msg)
    assert rule["default"] is True and rule["enabled"] is True
    # user rule
    await c.put(f"{RULES}/global/sender/{quote('@bob:test.local')}", {"actions": ["notify"]})
    await c.put(f"{RULES}/global/sender/{quote('@bob:test.local')}/enabled", {"enabled": False})
    _, rule = await c.get(f"{RULES}/global/sender/{quote('@bob:test.local')}")
    assert rule["enabled"] is False
    # another user sees none of it
    other = client_factory()
    await other.register("bob")
    assert (await other.get(path + "/enabled"))[1] == {"enabled": False}


@pytest_twisted.ensureDeferred
async def test_errors(client_factory):
    c = await _user(client_factory)
    cases = [
        ("PUT", f"{RULES}/global/content/.mine", {"pattern": "x", "actions": []}, None, 400, "M_INVALID_PARAM"),
        ("PUT", f"{RULES}/global/nope/x", {"actions": []}, None, 400, "M_INVALID_PARAM"),
        ("PUT", f"{RULES}/device/content/x", {"pattern": "x", "actions": []}, None, 400, "M_INVALID_PARAM"),
        ("PUT", f"{RULES}/global/content/x", {"actions": []}, None, 400, "M_MISSING_PARAM"),
        ("PUT", f"{RULES}/global/content/x", {"pattern": "x"}, None, 400, "M_MISSING_PARAM"),
        ("PUT", f"{RULES}/global/content/x", {"pattern": "x", "actions": ["shout"]}, None, 400,
         "M_INVALID_PARAM"),
        ("PUT", f"{RULES}/global/override/x", {"conditions": [{"key": "type"}], "actions": []}, None, 400,
         "M_INVALID_PARAM"),
        ("PUT", f"{RULES}/global/room/notaroom", {"actions": []}, None, 400, "M_INVALID_PARAM"),
        ("PUT", f"{RULES}/global/content/x", {"pattern": "x", "actions": []}, {"before": "missing"}, 400,
         "M_UNKNOWN"),
        ("PUT", f"{RULES}/global/override/x", {"actions": []}, {"after": ".m.rule.master"}, 400, "M_UNKNOWN"),
        ("GET", f"{RULES}/global/content/missing", None, None, 404, "M_NOT_FOUND"),
        ("DELETE", f"{RULES}/global/content/missing", None, None, 404, "M_NOT_FOUND"),
        ("DELETE", f"{RULES}/global/override/.m.rule.master", None, None, 400, "M_INVALID_PARAM"),
        ("PUT", f"{RULES}/global/content/missing/enabled", {"enabled": True}, None, 404, "M_NOT_FOUND"),
        ("PUT", f"{RULES}/global/override/.m.rule.master/enabled", {"enabled": "yes"}, None, 400, "M_BAD_JSON"),
        ("PUT", f"{RULES}/global/override/.m.rule.master/actions", {"actions": "notify"}, None, 400,
         "M_BAD_JSON"),
        ("GET", f"{RULES}/global/override/.m.rule.nope/actions", None, None, 404, "M_NOT_FOUND"),
    ]
    for method, path, body, params, status, errcode in cases:
        got, resp = await c.request(method, path, body, params=params)
        assert (got, resp.get("errcode")) == (status, errcode), (method, path, body, params, resp)
    _, rs = await c.get(RULES + "/global/")
    assert all(not _ids(rs, k) for k in rs)  # nothing was created
    status, _ = await c.get(RULES + "/", token="bogus")
    assert status == 401


@pytest_twisted.ensureDeferred
async def test_changes_are_announced_for_account_data(hs, client_factory):
    seen = []

    async def on_change(user_id, content):
        seen.append((user_id, content))
    hs.push_rules.on_change = on_change
    c = await _user(client_factory)
    await c.put(f"{RULES}/global/content/kw", {"pattern": "cake", "actions": ["notify"]})
    await c.put(f"{RULES}/global/override/.m.rule.master/enabled", {"enabled": True})
    await c.request("DELETE", f"{RULES}/global/content/missing")
    assert [u for u, _ in seen] == [c.user_id, c.user_id]
    content = seen[-1][1]
    assert content["global"]["override"][0] == {
        "rule_id": ".m.rule.master", "default": True, "enabled": True, "conditions": [], "actions": []}
    assert _ids(content["global"], "content") == ["kw"]


@pytest_twisted.ensureDeferred
async def test_rules_and_pushers_survive_a_restart(hs, client_factory):
    from homeserver.push.notifications import NotificationService
    from homeserver.push.pushers import PusherPool
    from homeserver.push.rule_service import PushRuleService
    from homeserver.push.ruleset import DEFAULT_COMPILED

    c = await _user(client_factory)
    await c.put(f"{RULES}/global/room/{quote('!g:test.local')}", {"actions": []})
    await c.put(f"{RULES}/global/underride/.m.rule.message/actions", {"actions": []})
    await c.post("/_matrix/client/v3/pushers/set", {
        "kind": "http", "app_id": "a", "pushkey": "k", "app_display_name": "A", "device_display_name": "D",
        "lang": "en", "data": {"url": "https://gw.example/_matrix/push/v1/notify"}})
    rules = PushRuleService(hs.push_store)
    await rules.load()
    assert rules.rules(c.user_id).to_client(c.user_id) == hs.push_rules.rules(c.user_id).to_client(c.user_id)
    assert rules.compiled(c.user_id) is not DEFAULT_COMPILED
    assert rules.compiled("@nobody:test.local") is DEFAULT_COMPILED
    service = NotificationService(hs.push_store, rules, hs.push_rooms, hs.clock, lambda u: True)
    pool = PusherPool(hs.push_store, service, hs.push_rooms, hs.clock, None)  # type: ignore[arg-type]
    await pool.start()
    assert [p.pusher.pushkey for p in pool.pushers_of(c.user_id)] == ["k"]
    assert c.user_id in service.wanted
    await pool.stop()
