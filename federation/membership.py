"""Joining and leaving across servers, both sides, and the read endpoints that go with them.

Served (each behind X-Matrix): ``make_join`` / v2 ``send_join``,
``make_leave`` / v2 ``send_leave``, ``event``, ``state_ids``, ``backfill``
and ``get_missing_events``. The last three serve only to a server with a
member (joined or invited) in the room, and apply history visibility for
that server (:meth:`Visibility.hidden_from_server`): events it may not see
go out redacted, with their hashes and signatures, so they still verify. Outbound, :class:`RemoteMembership` is the hook
``homeserver.rooms.membership`` calls when a local user joins or leaves a
room this server is not (or no longer) in: make_join → fill in, hash and
sign → send_join → check every returned state and auth-chain event
(format, signatures, hash, auth against its own auth events) → store them
as outliers → persist the join with the returned state as its state
before. The room is then live here.
"""
from __future__ import annotations

from typing import Any, Sequence

from signedjson.key import SigningKey

from federation.backfill import MAX_BACKFILL, Backfiller, check_pdus
from federation.inbound import GetKey, PduChecker, PduDropped, verify_pdu_signatures
from federation.rooms import FanOut, RoomsBridge, domain
from federation.transport.client import FederationClient, FederationRequestError, HttpResponseError, encode_path
from federation.transport.server import FederationRoutes
from homeserver.api.errors import MatrixError, bad_json, forbidden, not_found
from homeserver.api.http import ApiRequest
from homeserver.core.auth import AuthError, check_auth
from homeserver.core.events import Event, EventFormatError, check_event_format, redact_pdu
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, get_room_version
from homeserver.core.signing import SignatureError, add_hashes_and_signatures, sign_event, verify_json
from homeserver.rooms.builder import EventBuilder
from homeserver.rooms.persist import EventContext
from homeserver.rooms.restricted import RestrictedJoins
from homeserver.rooms.visibility import Visibility
from homeserver.storage.events import StoredEvent
from homeserver.util.clock import Clock
from homeserver.util.ids import random_string

MAX_MISSING = 50
#: Events accepted at most in a send_join answer (state + auth chain).
MAX_JOIN_EVENTS = 50_000
AUTHORISER = "join_authorised_via_users_server"
#: Events of history fetched right after a remote join (``federation.join_backfill_limit``).
JOIN_BACKFILL = 50


def _template(event: Event) -> dict[str, Any]:
    pdu = event.get_pdu_json()
    for k in ("hashes", "signatures", "unsigned"):
        pdu.pop(k, None)
    if event.room_version.event_id_format != "v1":
        pdu.pop("event_id", None)
    return pdu


def _pdu(event: Event) -> dict[str, Any]:
    pdu = event.get_pdu_json()
    pdu.pop("unsigned", None)
    return pdu


class MembershipServlets:
    """Served membership and read endpoints."""

    def __init__(self, server_name: str, bridge: RoomsBridge, builder: EventBuilder, get_key: GetKey,
                 fanout: FanOut, clock: Clock, restricted: RestrictedJoins, signing_key: SigningKey,
                 visibility: Visibility) -> None:
        self._server_name = server_name
        self._bridge = bridge
        self._visibility = visibility
        self._builder = builder
        self._get_key = get_key
        self._fanout = fanout
        self._clock = clock
        self._restricted = restricted
        self._key = signing_key

    def register(self, routes: FederationRoutes) -> None:
        routes.add("GET", "/_matrix/federation/v1/make_join/{room_id}/{user_id}", self.make_join)
        routes.add("PUT", "/_matrix/federation/v2/send_join/{room_id}/{event_id}", self.send_join)
        routes.add("GET", "/_matrix/federation/v1/make_leave/{room_id}/{user_id}", self.make_leave)
        routes.add("PUT", "/_matrix/federation/v2/send_leave/{room_id}/{event_id}", self.send_leave)
        routes.add("GET", "/_matrix/federation/v1/make_knock/{room_id}/{user_id}", self.make_knock)
        routes.add("PUT", "/_matrix/federation/v1/send_knock/{room_id}/{event_id}", self.send_knock)
        routes.add("GET", "/_matrix/federation/v1/event/{event_id}", self.get_event)
        routes.add("GET", "/_matrix/federation/v1/state_ids/{room_id}", self.state_ids)
        routes.add("GET", "/_matrix/federation/v1/backfill/{room_id}", self.backfill)
        routes.add("POST", "/_matrix/federation/v1/get_missing_events/{room_id}", self.get_missing_events)

    async def _room_for(self, room_id: str, origin: str) -> Any:
        room = await self._bridge.cache.get(room_id)
        if room is None:
            raise not_found("Unknown room")
        return room

    def _in_room(self, room: Any, origin: str) -> None:
        # The spec answers 403 to "a host not in the room"; even world-readable rooms are not
        # open to other servers here, as federation has no peeking.
        if not any(domain(u) == origin for u in room.joined | room.invited):
            raise forbidden(f"{origin} has no member in this room")

    async def _served(self, room: Any, origin: str, events: Sequence[StoredEvent]) -> list[dict[str, Any]]:
        """The events as ``origin`` may have them: redacted where history visibility hides them
        from it, or where a redaction applies (the redacted form keeps hashes and signatures)."""
        hidden = await self._visibility.hidden_from_server(origin, room, [e.event for e in events])
        out = []
        for stored in events:
            ev = stored.event
            out.append(_pdu(ev.redacted() if ev.event_id in hidden or stored.redacted_because is not None else ev))
        return out

    async def _make(self, request: ApiRequest, origin: str, membership: str) -> dict[str, Any]:
        room_id, user_id = request.path_params["room_id"], request.path_params["user_id"]
        if domain(user_id) != origin:
            raise forbidden("The user is not on the requesting server")
        room = await self._room_for(room_id, origin)
        rv = room.room_version
        if membership in ("join", "knock"):
            supported = request.args.get("ver") or ["1"]
            if rv.identifier not in supported:
                raise MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION",
                                  f"The room version {rv.identifier} is not supported by your server",
                                  room_version=rv.identifier)
        content: dict[str, Any] = {"membership": membership}
        if membership == "join":
            # Restricted rooms: we vouch that the user meets a condition, naming one of our users.
            authoriser = await self._restricted.authorise(room, user_id)
            if authoriser is not None:
                content["join_authorised_via_users_server"] = authoriser
        event = self._builder.build(room, "m.room.member", user_id, content, user_id)
        return {"event": _template(event), "room_version": rv.identifier}

    async def make_join(self, request: ApiRequest, origin: str) -> dict[str, Any]:
        """GET /_matrix/federation/v1/make_join/{roomId}/{userId}: a join template ("Joining Rooms")."""
        return await self._make(request, origin, "join")

    async def make_leave(self, request: ApiRequest, origin: str) -> dict[str, Any]:
        """GET /_matrix/federation/v1/make_leave/{roomId}/{userId}: a leave template ("Leaving Rooms")."""
        return await self._make(request, origin, "leave")

    async def make_knock(self, request: ApiRequest, origin: str) -> dict[str, Any]:
        """GET /_matrix/federation/v1/make_knock/{roomId}/{userId}: a knock template ("Knocking on rooms")."""
        room = await self._room_for(request.path_params["room_id"], origin)
        if not room.room_version.knock_join_rule:
            raise MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION", "This room version does not support knocking",
                              room_version=room.room_version.identifier)
        return await self._make(request, origin, "knock")

    async def send_knock(self, request: ApiRequest, origin: str) -> dict[str, Any]:
        """PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}: accept a knock; answer stripped state ("Knocking on rooms")."""
        from homeserver.rooms.membership import stripped_state

        event, _ = await self._accept(request, origin, "knock")
        room = await self._room_for(event.room_id, origin)
        return {"knock_room_state": stripped_state(room)}

    async def _accept(self, request: ApiRequest, origin: str, membership: str) -> tuple[Event, Any]:
        room_id, event_id = request.path_params["room_id"], request.path_params["event_id"]
        room = await self._room_for(room_id, origin)
        pdu = request.json()
        try:
            event = Event(pdu, room.room_version)
        except (KeyError, TypeError, ValueError):
            raise bad_json("Malformed event") from None
        if event.event_id != event_id or event.room_id != room_id:
            raise bad_json("The event ID or room ID does not match the path")
        if (event.type != "m.room.member" or event.state_key != event.sender or event.membership != membership
                or domain(event.sender) != origin):
            raise bad_json(f"Expected a {membership} of a user of {origin} for themselves")
        if membership == "join" and "join_authorised_via_users_server" in event.content \
                and room.room_version.restricted_join_rule:
            pdu = await self._authorise_join(room, event, pdu)
            event = Event(pdu, room.room_version)
        # The same local policy checks a join built here would pass (e.g. the group member cap).
        for check in self._builder.checks:
            check(room, event)
        try:
            outcome = await PduChecker(self._get_key, self._bridge).check(pdu, room.room_version)
        except PduDropped as e:
            raise forbidden(str(e)) from None
        if outcome.rejected_reason or outcome.soft_failed:
            raise forbidden(outcome.rejected_reason or "Not allowed by the room's current state")
        if (await self._bridge.get_events([event.event_id])).get(event.event_id) is None:
            self._fanout.relay(event.event_id)
            await self._bridge.persist_received(outcome.event, outcome.state_before, False)
        return outcome.event, outcome

    async def _authorise_join(self, room: Any, event: Event, pdu: dict[str, Any]) -> dict[str, Any]:
        """A join naming one of our users as its authoriser: check the conditions again, then sign it.

        Our signature vouches that the user met the room's allow conditions
        (server-server "Restricted rooms"), so we only give it after checking
        them ourselves; the auth rules then check the authoriser's power.
        """
        authoriser = event.content.get("join_authorised_via_users_server")
        if not isinstance(authoriser, str) or domain(authoriser) != self._server_name:
            raise MatrixError(400, "M_INVALID_PARAM",
                              "join_authorised_via_users_server must name a user of this server")
        if self._restricted.needs_authorisation(room, event.sender):
            await self._restricted.check_conditions(room, event.sender)
        return sign_event(pdu, room.room_version, self._server_name, self._key)

    async def send_join(self, request: ApiRequest, origin: str) -> dict[str, Any]:
        """PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}: accept a join; answer the room state ("Joining Rooms")."""
        event, outcome = await self._accept(request, origin, "join")
        state = list(outcome.state_before.values())
        chain = await self._bridge.auth_chain([e.event_id for e in state] + event.auth_event_ids)
        for e in state:
            chain.pop(e.event_id, None)
        return {"origin": self._server_name, "members_omitted": False, "servers_in_room": [],
                "state": [_pdu(e) for e in state], "auth_chain": [_pdu(e) for e in chain.values()],
                "event": _pdu(event)}

    async def send_leave(self, request: ApiRequest, origin: str) -> dict[str, Any]:
        """PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}: accept a leave ("Leaving Rooms")."""
        await self._accept(request, origin, "leave")
        return {}

    async def get_event(self, request: ApiRequest, origin: str) -> dict[str, Any]:
        """GET /_matrix/federation/v1/event/{eventId}: one event, to a server in its room ("Retrieving events")."""
        eid = request.path_params["event_id"]
        found = await self._bridge.events.get_event(eid)
        if found is None:
            raise not_found("Event not found")
        room = await self._room_for(found.room_id, origin)
        self._in_room(room, origin)
        return {"origin": self._server_name, "origin_server_ts": self._clock.time_msec(),
                "pdus": await self._served(room, origin, [found])}

    async def state_ids(self, request: ApiRequest, origin: str) -> dict[str, Any]:
        """GET /_matrix/federation/v1/state_ids/{roomId}: state IDs at an event and their auth chain ("Retrieving events")."""
        room = await self._room_for(request.path_params["room_id"], origin)
        self._in_room(room, origin)
        eid = request.query("event_id")
        if not eid:
            raise MatrixError(400, "M_MISSING_PARAM", "event_id is required")
        ids = await self._bridge.state.get_state_ids_at(eid, before=True)
        if ids is None:
            raise not_found("Unknown event")
        chain = await self._bridge.auth_chain(ids.values())
        return {"pdu_ids": list(ids.values()), "auth_chain_ids": list(chain)}

    async def backfill(self, request: ApiRequest, origin: str) -> dict[str, Any]:
        """GET /_matrix/federation/v1/backfill/{roomId}: events before the given ones ("Backfilling")."""
        room = await self._room_for(request.path_params["room_id"], origin)
        self._in_room(room, origin)
        limit = request.query_int("limit", 10, minimum=1, maximum=MAX_BACKFILL)
        start = request.args.get("v") or []
        events = await self._walk(start[:20], set(), limit, include_start=True)
        return {"origin": self._server_name, "origin_server_ts": self._clock.time_msec(),
                "pdus": await self._served(room, origin, events)}

    async def get_missing_events(self, request: ApiRequest, origin: str) -> dict[str, Any]:
        """POST /_matrix/federation/v1/get_missing_events/{roomId}: fill a gap in the DAG ("Retrieving events")."""
        room = await self._room_for(request.path_params["room_id"], origin)
        self._in_room(room, origin)
        body = request.json()
        earliest, latest = body.get("earliest_events", []), body.get("latest_events", [])
        if not isinstance(earliest, list) or not isinstance(latest, list):
            raise bad_json("earliest_events and latest_events must be lists")
        limit = body.get("limit", 10)
        limit = min(limit, MAX_MISSING) if isinstance(limit, int) and limit > 0 else 10
        min_depth = body.get("min_depth", 0) if isinstance(body.get("min_depth"), int) else 0
        events = await self._walk([e for e in latest[:20] if isinstance(e, str)],
                                  {e for e in earliest[:100] if isinstance(e, str)}, limit, min_depth=min_depth)
        return {"events": await self._served(room, origin, sorted(events, key=lambda e: e.event.depth))}

    async def _walk(self, start: list[str], stop: set[str], limit: int, include_start: bool = False,
                    min_depth: int = 0) -> list[StoredEvent]:
        """Breadth-first back through prev_events, newest first, skipping outliers and rejected events."""
        out: list[StoredEvent] = []
        seen = set(start) | stop
        frontier = list(start) if include_start else []
        if not include_start:
            for e in (await self._bridge.events.get_events(start, allow_outlier=False)).values():
                frontier += [p for p in e.event.prev_event_ids if p not in seen]
                seen.update(e.event.prev_event_ids)
        while frontier and len(out) < limit:
            found = await self._bridge.events.get_events(frontier, allow_outlier=False)
            nxt = []
            for eid in frontier:
                st = found.get(eid)
                if st is None or st.event.depth < min_depth:
                    continue
                out.append(st)
                if len(out) >= limit:
                    break
                for p in st.event.prev_event_ids:
                    if p not in seen:
                        seen.add(p)
                        nxt.append(p)
            frontier = nxt
        return out


class FederationMembership:
    """The outbound side: ``homeserver.rooms.membership.RemoteMembership`` over federation."""

    def __init__(self, server_name: str, signing_key: SigningKey, client: FederationClient,
                 bridge: RoomsBridge, get_key: GetKey, clock: Clock, backfiller: Backfiller,
                 join_backfill: int = JOIN_BACKFILL) -> None:
        self._server_name = server_name
        self._backfiller = backfiller
        self._join_backfill = join_backfill
        self._key = signing_key
        self._client = client
        self._bridge = bridge
        self._get_key = get_key
        self._clock = clock

    def _fill(self, template: dict[str, Any], rv: RoomVersion, content: dict[str, Any]) -> Event:
        pdu = {k: v for k, v in template.items() if k not in ("hashes", "signatures", "unsigned")}
        pdu["content"] = {**(template.get("content") or {}), **content}
        # Only the resident server names the authorising user of a restricted join.
        pdu["content"].pop(AUTHORISER, None)
        if isinstance(template.get("content"), dict) and AUTHORISER in template["content"]:
            pdu["content"][AUTHORISER] = template["content"][AUTHORISER]
        pdu["origin_server_ts"] = self._clock.time_msec()
        if rv.event_id_format == "v1":
            pdu["event_id"] = f"${random_string(18)}:{self._server_name}"
        else:
            pdu.pop("event_id", None)
        pdu = add_hashes_and_signatures(pdu, rv, self._server_name, self._key)
        try:
            check_event_format(pdu, rv)
        except EventFormatError as e:
            raise MatrixError(502, "M_UNKNOWN", f"The remote server's template is invalid: {e}") from None
        return Event(pdu, rv)

    async def _make(self, servers: Sequence[str], room_id: str, user_id: str,
                    membership: str) -> tuple[str, dict[str, Any], RoomVersion]:
        versions = {"ver": sorted(KNOWN_ROOM_VERSIONS)} if membership in ("join", "knock") else None
        errors = []
        #: A restricted room's servers could not let the user in (passed on to the client if none can).
        unable: MatrixError | None = None
        for server in dict.fromkeys(servers):
            if server == self._server_name:
                continue
            try:
                resp = await self._client.get_json(
                    server, encode_path(f"/_matrix/federation/v1/make_{membership}/%s/%s", room_id, user_id),
                    versions)
                rv = get_room_version(str(resp.get("room_version", "1")))
                template = resp["event"]
                if not isinstance(template, dict) or template.get("room_id") != room_id:
                    raise ValueError("template is for another room")
                if template.get("sender") != user_id or template.get("state_key") != user_id:
                    raise ValueError("template is for another user")
                content = template.get("content")
                if template.get("type") != "m.room.member" or not isinstance(content, dict) \
                        or content.get("membership") != membership:
                    raise ValueError(f"template is not a {membership}")
                if AUTHORISER in content and (not isinstance(content[AUTHORISER], str)
                                              or domain(content[AUTHORISER]) != server):
                    raise ValueError("template names an authorising user of another server")
                return server, template, rv
            except HttpResponseError as e:
                body = e.body if isinstance(e.body, dict) else {}
                if e.code == 403:
                    raise MatrixError(403, "M_FORBIDDEN", f"{server}: {body.get('error')}") from None
                if e.code == 400 and body.get("errcode") in ("M_UNABLE_TO_AUTHORISE_JOIN", "M_UNABLE_TO_GRANT_JOIN"):
                    # Restricted room: another resident server may be able to let the user in.
                    unable = unable or MatrixError(400, body["errcode"], f"{server}: {body.get('error')}")
                errors.append(f"{server}: {e}")
            except (FederationRequestError, KeyError, ValueError, TypeError) as e:
                errors.append(f"{server}: {e}")
        if unable is not None:
            raise unable
        raise MatrixError(404, "M_NOT_FOUND", f"No server could help with the {membership}: {'; '.join(errors)}")

    async def join(self, user_id: str, room_id: str, servers: Sequence[str], content: dict[str, Any]) -> str:
        server, template, rv = await self._make(servers, room_id, user_id, "join")
        event = self._fill(template, rv, content)
        try:
            resp = await self._client.put_json(
                server, encode_path("/_matrix/federation/v2/send_join/%s/%s", room_id, event.event_id),
                _pdu(event), timeout_s=300)
        except HttpResponseError as e:
            body = e.body if isinstance(e.body, dict) else {}
            raise MatrixError(e.code if e.code in (400, 403, 404) else 502, str(body.get("errcode", "M_UNKNOWN")),
                              f"send_join to {server} failed: {body.get('error', e)}") from None
        except FederationRequestError as e:
            raise MatrixError(502, "M_UNKNOWN", f"send_join to {server} failed: {e}") from None
        if AUTHORISER in event.content:
            event = await self._countersigned(resp, event, server)
        state, chain = resp.get("state"), resp.get("auth_chain")
        if not isinstance(state, list) or not isinstance(chain, list) or len(state) + len(chain) > MAX_JOIN_EVENTS:
            raise MatrixError(502, "M_UNKNOWN", "Bad send_join response")
        checked = await check_pdus(state + chain, rv, room_id, self._get_key, self._bridge)
        state_ids = {}
        for pdu in state:
            ev = checked.get(_event_id(pdu, rv))
            if ev is not None and ev.state_key is not None and not ev.rejected:
                state_ids[(ev.type, ev.state_key)] = ev.event_id
        if ("m.room.create", "") not in state_ids:
            raise MatrixError(502, "M_UNKNOWN", "The room state has no valid create event")
        # The join must be allowed by the state it is sent into.
        before = {k: checked[e] for k, e in state_ids.items()}
        try:
            check_auth(event, before)
        except AuthError as e:
            raise MatrixError(403, "M_FORBIDDEN", f"Join not allowed by the room state: {e.reason}") from None
        ordered = sorted(checked.values(), key=lambda e: (e.depth, e.event_id))
        await self._bridge.persister.persist([EventContext(e, outlier=True) for e in ordered])
        await self._bridge.persister.persist([EventContext(event, state_before=state_ids)])
        # The latest history before the join, so the joined user sees the group's recent past;
        # /messages fetches older history on demand.
        self._backfiller.joined_via(room_id, server)
        if self._join_backfill:
            await self._backfiller.fetch_from(server, room_id, rv, event.prev_event_ids, self._join_backfill)
        return event.event_id

    async def _countersigned(self, resp: Any, event: Event, server: str) -> Event:
        """The join of a restricted room as the resident server signed it (send_join's ``event``)."""
        signed = resp.get("event") if isinstance(resp, dict) else None
        rv = event.room_version
        try:
            if not isinstance(signed, dict) or Event(signed, rv).event_id != event.event_id:
                raise PduDropped("no signed join event in the answer")
            await verify_pdu_signatures(signed, rv, self._get_key)
        except (PduDropped, KeyError, TypeError, ValueError) as e:
            raise MatrixError(502, "M_UNKNOWN", f"send_join to {server}: bad authorised join: {e}") from None
        return Event({k: v for k, v in signed.items() if k != "unsigned"}, rv)

    async def leave(self, user_id: str, room_id: str, servers: Sequence[str], content: dict[str, Any]) -> str:
        server, template, rv = await self._make(servers, room_id, user_id, "leave")
        event = self._fill(template, rv, content)
        try:
            await self._client.put_json(
                server, encode_path("/_matrix/federation/v2/send_leave/%s/%s", room_id, event.event_id), _pdu(event))
        except FederationRequestError as e:
            raise MatrixError(502, "M_UNKNOWN", f"send_leave to {server} failed: {e}") from None
        return event.event_id

    async def knock(self, user_id: str, room_id: str, servers: Sequence[str], content: dict[str, Any]) -> str:
        server, template, rv = await self._make(servers, room_id, user_id, "knock")
        event = self._fill(template, rv, content)
        try:
            await self._client.put_json(
                server, encode_path("/_matrix/federation/v1/send_knock/%s/%s", room_id, event.event_id), _pdu(event))
        except FederationRequestError as e:
            raise MatrixError(502, "M_UNKNOWN", f"send_knock to {server} failed: {e}") from None
        return event.event_id

    async def invite(self, event: Event) -> Event:
        """Have the invitee's server countersign the invite (v2 invite); returns the signed event."""
        server = domain(event.state_key or "")
        if server is None:
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid invitee")
        rv = event.room_version
        body = {"event": _pdu(event), "room_version": rv.identifier,
                "invite_room_state": event.unsigned.get("invite_room_state", [])}
        try:
            resp = await self._client.put_json(
                server, encode_path("/_matrix/federation/v2/invite/%s/%s", event.room_id, event.event_id), body)
        except HttpResponseError as e:
            raise MatrixError(403 if e.code == 403 else 502, "M_FORBIDDEN" if e.code == 403 else "M_UNKNOWN",
                              f"{server} refused the invite") from None
        except FederationRequestError as e:
            raise MatrixError(502, "M_UNKNOWN", f"Cannot reach {server}: {e}") from None
        signed = resp.get("event") if isinstance(resp, dict) else None
        if not isinstance(signed, dict):
            raise MatrixError(502, "M_UNKNOWN", f"{server} sent a bad invite response")
        theirs = (signed.get("signatures") or {}).get(server)
        pdu = event.get_pdu_json()
        pdu["signatures"] = {**pdu.get("signatures", {}), server: theirs}
        try:
            await self._check_invitee_signature(pdu, rv, server)
        except PduDropped as e:
            raise MatrixError(502, "M_UNKNOWN", f"{server} returned a badly signed invite: {e}") from None
        out = Event(pdu, rv)
        out.unsigned.update(event.unsigned)
        return out

    async def _check_invitee_signature(self, pdu: dict[str, Any], rv: RoomVersion, server: str) -> None:
        """The invitee's server must have signed exactly our event (its redacted form)."""
        sigs = (pdu.get("signatures") or {}).get(server)
        if not isinstance(sigs, dict):
            raise PduDropped("no signature from the invitee's server")
        redacted = redact_pdu(pdu, rv)
        for kid in list(sigs)[:5]:
            vk = await self._get_key(server, kid, 0)
            if vk is None:
                continue
            try:
                verify_json(redacted, server, vk, kid)
                return
            except SignatureError:
                break
        raise PduDropped("the invitee's server signature does not verify")

    async def resolve_alias(self, alias: str) -> tuple[str, list[str]] | None:
        server = domain(alias)
        if server is None:
            return None
        try:
            resp = await self._client.get_json(server, "/_matrix/federation/v1/query/directory",
                                               {"room_alias": alias})
        except FederationRequestError:
            return None
        room_id, servers = resp.get("room_id"), resp.get("servers")
        if not isinstance(room_id, str):
            return None
        return room_id, [s for s in servers if isinstance(s, str)] if isinstance(servers, list) else [server]


def _event_id(pdu: dict[str, Any], rv: RoomVersion) -> str | None:
    try:
        return Event(pdu, rv).event_id
    except Exception:
        return None
