"""Push rules, pushers and the notification list (client-server API, "Push Notifications")."""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from homeserver.api.errors import MatrixError, forbidden, invalid_param, missing_param, not_found
from homeserver.api.http import ApiRequest, Router
from homeserver.api.validate import get_bool, get_dict, get_list, get_str
from homeserver.push.notifications import NotificationService
from homeserver.push.pushers import PusherPool
from homeserver.push.rule_service import PushRuleService
from homeserver.push.rules import DEFAULTS, KINDS
from homeserver.push.ruleset import client_rule
from homeserver.storage.push import Pusher, RelativeRuleNotFound, TooManyRules
from homeserver.util import json as jsonutil
from homeserver.util.clock import Clock

MAX_RULE_ID = 255
MAX_CONDITIONS = 20
MAX_ACTIONS = 20
MAX_PATTERN = 255
MAX_PUSHERS_PER_USER = 50
MAX_PUSHER_DATA = 4096
NOTIFY_PATH = "/_matrix/push/v1/notify"
LEGACY_ACTIONS = ("notify", "dont_notify", "coalesce")


def _kind(request: ApiRequest) -> str:
    if request.path_params["scope"] != "global":
        raise invalid_param("Unknown push rule scope; only 'global' exists")
    kind = request.path_params["kind"]
    if kind not in KINDS:
        raise invalid_param(f"Unknown push rule kind {kind[:32]!r}")
    return kind


def _is_default_rule(kind: str, rule_id: str) -> bool:
    return any(r["rule_id"] == rule_id for r in DEFAULTS[kind])


def validate_actions(actions: Any) -> list[Any]:
    """Check an actions list: strings ``notify`` (and the ignored historical ones) or ``set_tweak`` objects."""
    if not isinstance(actions, list):
        raise MatrixError(400, "M_BAD_JSON", "'actions' must be a list")
    if len(actions) > MAX_ACTIONS:
        raise invalid_param(f"At most {MAX_ACTIONS} actions")
    for action in actions:
        if isinstance(action, str):
            if action not in LEGACY_ACTIONS:
                raise invalid_param(f"Unknown action {action[:32]!r}")
        elif isinstance(action, dict):
            if not isinstance(action.get("set_tweak"), str) or not action["set_tweak"]:
                raise invalid_param("An action object must have a 'set_tweak' string")
            if len(jsonutil.dumps(action)) > 1024:
                raise invalid_param("Tweak too large")
        else:
            raise invalid_param("Each action must be a string or an object")
    return actions


def validate_conditions(conditions: Any) -> list[Any]:
    if not isinstance(conditions, list):
        raise MatrixError(400, "M_BAD_JSON", "'conditions' must be a list")
    if len(conditions) > MAX_CONDITIONS:
        raise invalid_param(f"At most {MAX_CONDITIONS} conditions")
    for cond in conditions:
        if not isinstance(cond, dict) or not isinstance(cond.get("kind"), str):
            raise invalid_param("Each condition must be an object with a 'kind' string")
        if len(jsonutil.dumps(cond)) > 2048:
            raise invalid_param("Condition too large")
        for field in ("key", "pattern", "is"):
            if field in cond and not isinstance(cond[field], str):
                raise invalid_param(f"Condition '{field}' must be a string")
    return conditions


def validate_pusher_url(url: Any) -> str:
    if not isinstance(url, str):
        raise missing_param("'data.url' is required for http pushers")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path != NOTIFY_PATH:
        raise invalid_param(f"'data.url' must be an http(s) URL with the path {NOTIFY_PATH}")
    return url


class PushServlets:
    def __init__(self, rules: PushRuleService, notifications: NotificationService, pushers: PusherPool,
                 clock: Clock) -> None:
        self._rules = rules
        self._notifications = notifications
        self._pushers = pushers
        self._clock = clock

    def register(self, router: Router) -> None:
        for path in ("/pushrules/", "/pushrules"):
            router.add_client("GET", path, self.get_all)
        for path in ("/pushrules/global/", "/pushrules/global"):
            router.add_client("GET", path, self.get_global)
        rule = "/pushrules/{scope}/{kind}/{rule_id}"
        router.add_client("GET", rule, self.get_rule)
        router.add_client("PUT", rule, self.put_rule)
        router.add_client("DELETE", rule, self.delete_rule)
        for attr in ("enabled", "actions"):
            router.add_client("GET", f"{rule}/{attr}", self.get_attr)
            router.add_client("PUT", f"{rule}/{attr}", self.put_attr)
        router.add_client("GET", "/pushers", self.get_pushers)
        router.add_client("POST", "/pushers/set", self.set_pusher)
        router.add_client("GET", "/notifications", self.get_notifications)

    # --- push rules --------------------------------------------------------------

    async def get_all(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/pushrules/ -- all the user's push rules (the ``global`` scope)."""
        user_id = request.requester.user_id
        return {"global": self._rules.rules(user_id).to_client(user_id)}

    async def get_global(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/pushrules/global/ -- the user's global ruleset."""
        user_id = request.requester.user_id
        return self._rules.rules(user_id).to_client(user_id)

    def _find(self, request: ApiRequest) -> tuple[str, str, dict[str, Any]]:
        kind = _kind(request)
        rule_id = request.path_params["rule_id"]
        rule = self._rules.rules(request.requester.user_id).find(kind, rule_id)
        if rule is None:
            raise not_found("The push rule was not found.")
        return kind, rule_id, rule

    async def get_rule(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId} -- one push rule."""
        kind, _, rule = self._find(request)
        return client_rule(kind, rule, request.requester.user_id)

    async def put_rule(self, request: ApiRequest) -> dict[str, Any]:
        """PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId} -- create or update a user-defined rule,
        placed by ``before`` / ``after``."""
        kind = _kind(request)
        rule_id = request.path_params["rule_id"]
        if rule_id.startswith("."):
            raise invalid_param("Rule IDs starting with '.' are reserved for server-default rules")
        if not rule_id or "/" in rule_id or "\\" in rule_id or len(rule_id) > MAX_RULE_ID:
            raise invalid_param("Invalid rule ID")
        if kind == "room" and not rule_id.startswith("!"):
            raise invalid_param("The ID of a room rule must be a room ID")
        if kind == "sender" and not rule_id.startswith("@"):
            raise invalid_param("The ID of a sender rule must be a user ID")
        before, after = request.query("before"), request.query("after")
        for rel in (before, after):
            if rel is not None and (rel.startswith(".") or rel == rule_id):
                raise MatrixError(400, "M_UNKNOWN", f"before/after rule not valid: {rel[:64]}")
        body = request.json()
        actions = validate_actions(get_list(body, "actions"))
        conditions: list[Any] | None = None
        pattern: str | None = None
        if kind in ("override", "underride"):
            conditions = validate_conditions(body.get("conditions", []))
        elif kind == "content":
            pattern = get_str(body, "pattern", max_len=MAX_PATTERN)
        try:
            await self._rules.put_rule(request.requester.user_id, kind, rule_id, conditions, pattern,
                                       actions, before, after)
        except RelativeRuleNotFound as e:
            raise MatrixError(400, "M_UNKNOWN", f"before/after rule not found: {e.rule_id[:64]}") from None
        except TooManyRules:
            raise forbidden("Too many push rules") from None
        return {}

    async def delete_rule(self, request: ApiRequest) -> dict[str, Any]:
        """DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId} -- remove a user-defined rule."""
        kind = _kind(request)
        rule_id = request.path_params["rule_id"]
        if _is_default_rule(kind, rule_id):
            raise invalid_param("Server-default rules cannot be deleted (disable them instead)")
        if not await self._rules.delete_rule(request.requester.user_id, kind, rule_id):
            raise not_found("The push rule was not found.")
        return {}

    async def get_attr(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/(enabled|actions) -- one field of a rule."""
        kind, _, rule = self._find(request)
        shown = client_rule(kind, rule, request.requester.user_id)
        attr = request.path.rsplit("/", 1)[1]
        return {attr: shown[attr]}

    async def put_attr(self, request: ApiRequest) -> dict[str, Any]:
        """PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/(enabled|actions) -- enable/disable a rule
        or set its actions (server-default rules included)."""
        kind, rule_id, rule = self._find(request)
        attr = request.path.rsplit("/", 1)[1]
        body = request.json()
        value: Any = get_bool(body, "enabled") if attr == "enabled" else validate_actions(
            get_list(body, "actions"))
        if not await self._rules.set_field(request.requester.user_id, kind, rule_id, attr, value,
                                           default=bool(rule.get("default"))):
            raise not_found("The push rule was not found.")
        return {}

    # --- pushers -------------------------------------------------------------------

    async def get_pushers(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/pushers -- the user's pushers."""
        pushers = await self._pushers.store.get_pushers(request.requester.user_id)
        return {"pushers": [p.to_client() for p in pushers]}

    async def set_pusher(self, request: ApiRequest) -> dict[str, Any]:
        """POST /_matrix/client/v3/pushers/set -- add, replace or (``kind: null``) remove a pusher."""
        user_id = request.requester.user_id
        body = request.json()
        if "kind" not in body:
            raise missing_param("Missing parameter: kind")
        kind = get_str(body, "kind", allow_none=True)
        app_id = get_str(body, "app_id", max_len=64)
        pushkey = get_str(body, "pushkey")
        if len(pushkey.encode("utf-8")) > 512:
            raise invalid_param("'pushkey' is longer than 512 bytes")
        if not app_id or not pushkey:
            raise invalid_param("'app_id' and 'pushkey' must not be empty")
        if kind is None:
            await self._pushers.delete_pusher(user_id, app_id, pushkey)
            return {}
        if kind != "http":
            raise invalid_param(f"Unsupported pusher kind {kind[:32]!r}; this server supports 'http'")
        missing = [k for k in ("app_display_name", "device_display_name", "lang", "data") if k not in body]
        if missing:
            raise missing_param("Missing parameters: " + ", ".join(missing))
        app_display_name = get_str(body, "app_display_name", max_len=256)
        device_display_name = get_str(body, "device_display_name", max_len=256)
        lang = get_str(body, "lang", max_len=64)
        profile_tag = get_str(body, "profile_tag", None, max_len=256, allow_none=True)
        data = get_dict(body, "data")
        if len(jsonutil.dumps(data)) > MAX_PUSHER_DATA:
            raise invalid_param(f"'data' is larger than {MAX_PUSHER_DATA} bytes")
        validate_pusher_url(data.get("url"))
        if "format" in data and data["format"] != "event_id_only":
            raise invalid_param("'data.format' must be 'event_id_only' when given")
        append = get_bool(body, "append", False)
        known = {p.key for p in self._pushers.pushers_of(user_id)}
        if (app_id, pushkey, user_id) not in known and len(known) >= MAX_PUSHERS_PER_USER:
            raise forbidden("Too many pushers")
        await self._pushers.set_pusher(Pusher(
            user_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang,
            data, self._clock.time_msec()), append)
        return {}

    # --- notifications -------------------------------------------------------------

    async def get_notifications(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/notifications -- events the user was notified about, newest first."""
        raw_from = request.query("from")
        before: int | None = None
        if raw_from is not None:
            if not raw_from.isdigit() or len(raw_from) > 19:
                raise invalid_param("Invalid 'from' token")
            before = int(raw_from)
        limit = request.query_int("limit", 20, minimum=1, maximum=100)
        only = request.query("only")
        rows, next_from = await self._notifications.notifications(
            request.requester.user_id, before, limit, only == "highlight")
        out: dict[str, Any] = {"notifications": rows}
        if next_from is not None:
            out["next_token"] = str(next_from)
        return out
