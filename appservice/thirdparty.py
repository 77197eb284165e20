"""Third-party networks (client-server "Third-party Lookups", backed by the services' answers).

Each endpoint asks the services that declared the protocol (registration
``protocols``) and merges their answers. Protocol instances get an
``instance_id`` of ``{service id}|{network_id}``, as Synapse writes it.
"""
from __future__ import annotations

from typing import Any, Sequence
from urllib.parse import quote

from twisted.internet import defer

from homeserver.api.errors import MatrixError, not_found
from homeserver.api.http import ApiRequest, Response, Router
from homeserver.util import json as jsonutil

from appservice.api import AppserviceApi
from appservice.registration import ApplicationService

#: Query parameters that belong to the client-server request, not to the lookup's fields.
_NOT_FIELDS = {"access_token", "user_id", "device_id", "org.matrix.msc3202.device_id"}
_MAX_FIELDS = 20


class ThirdPartyServlets:
    def __init__(self, services: Sequence[ApplicationService], api: AppserviceApi) -> None:
        self._services = [s for s in services if s.url is not None and s.protocols]
        self._api = api

    def register(self, router: Router) -> None:
        c = router.add_client
        c("GET", "/thirdparty/protocols", self.protocols)
        c("GET", "/thirdparty/protocol/{protocol}", self.protocol)
        c("GET", "/thirdparty/location/{protocol}", self.location_by_protocol)
        c("GET", "/thirdparty/user/{protocol}", self.user_by_protocol)
        c("GET", "/thirdparty/location", self.location_by_alias)
        c("GET", "/thirdparty/user", self.user_by_id)

    def _for(self, protocol: str) -> list[ApplicationService]:
        return [s for s in self._services if protocol in s.protocols]

    async def _gather(self, calls: list[Any]) -> list[Any]:
        return list(await defer.gatherResults([defer.Deferred.fromCoroutine(c) for c in calls]))

    async def _protocol(self, protocol: str) -> dict[str, Any] | None:
        services = self._for(protocol)
        answers = await self._gather([self._api.get_json(s, f"/thirdparty/protocol/{quote(protocol, safe='')}")
                                      for s in services])
        merged: dict[str, Any] | None = None
        for service, answer in zip(services, answers):
            if not isinstance(answer, dict):
                continue
            instances = []
            for inst in answer.get("instances") or []:
                if isinstance(inst, dict) and isinstance(inst.get("network_id"), str):
                    instances.append({**inst, "instance_id": f"{service.id}|{inst['network_id']}"})
            if merged is None:
                merged = {**answer, "instances": instances}
            else:
                merged["instances"].extend(instances)
        return merged

    async def protocols(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/thirdparty/protocols — the protocols the services bridge."""
        names = sorted({p for s in self._services for p in s.protocols})
        found = await self._gather([self._protocol(p) for p in names])
        return {name: meta for name, meta in zip(names, found) if meta is not None}

    async def protocol(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/thirdparty/protocol/{protocol} — one protocol's metadata."""
        meta = await self._protocol(request.path_params["protocol"])
        if meta is None:
            raise not_found("Unknown protocol")
        return meta

    def _fields(self, request: ApiRequest) -> dict[str, str]:
        fields = {k: v[-1] for k, v in request.args.items() if k not in _NOT_FIELDS}
        if len(fields) > _MAX_FIELDS:
            raise MatrixError(400, "M_INVALID_PARAM", "Too many fields")
        return fields

    async def _lookup(self, services: list[ApplicationService], path: str, query: dict[str, str]) -> list[Any]:
        answers = await self._gather([self._api.get_json(s, path, query) for s in services])
        return [item for answer in answers if isinstance(answer, list) for item in answer if isinstance(item, dict)]

    async def _by_protocol(self, request: ApiRequest, kind: str) -> Any:
        protocol = request.path_params["protocol"]
        services = self._for(protocol)
        if not services:
            raise not_found("Unknown protocol")
        found = await self._lookup(services, f"/thirdparty/{kind}/{quote(protocol, safe='')}", self._fields(request))
        if not found:
            raise not_found(f"No third-party {kind} found")
        return Response(200, jsonutil.dumps_bytes(found))

    async def location_by_protocol(self, request: ApiRequest) -> Any:
        """GET /_matrix/client/v3/thirdparty/location/{protocol} — portal rooms matching the fields."""
        return await self._by_protocol(request, "location")

    async def user_by_protocol(self, request: ApiRequest) -> Any:
        """GET /_matrix/client/v3/thirdparty/user/{protocol} — Matrix users for remote users."""
        return await self._by_protocol(request, "user")

    async def _reverse(self, request: ApiRequest, kind: str, param: str) -> Any:
        value = request.query(param)
        if not value:
            raise MatrixError(400, "M_MISSING_PARAM", f"Missing parameter: {param}")
        found = await self._lookup(self._services, f"/thirdparty/{kind}", {param: value})
        if not found:
            raise not_found(f"No third-party {kind} found")
        return Response(200, jsonutil.dumps_bytes(found))

    async def location_by_alias(self, request: ApiRequest) -> Any:
        """GET /_matrix/client/v3/thirdparty/location?alias= — the remote locations of a room alias."""
        return await self._reverse(request, "location", "alias")

    async def user_by_id(self, request: ApiRequest) -> Any:
        """GET /_matrix/client/v3/thirdparty/user?userid= — the remote users behind a Matrix user."""
        return await self._reverse(request, "user", "userid")
