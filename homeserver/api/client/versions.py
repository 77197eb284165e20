"""Discovery: ``/versions``, ``/.well-known/matrix/client`` and ``/capabilities``."""
from __future__ import annotations

from typing import Any

from homeserver.api.errors import MatrixError
from homeserver.api.http import ApiRequest, Router
from homeserver.config import Config

#: Spec versions whose endpoints we serve. Only add one when its features are implemented.
SPEC_VERSIONS = ["r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9",
                 "v1.10", "v1.11"]


class VersionsServlets:
    def __init__(self, config: Config, stable_room_versions: list[str] | None = None) -> None:
        self._config = config
        self._room_versions = stable_room_versions or [str(v) for v in range(1, 13)]
        #: unstable_features advertised by /versions; extensions add their flags here.
        self.unstable_features: dict[str, bool] = {}
        #: Extra capabilities other components contribute (e.g. m.change_password).
        self.capabilities: dict[str, Any] = {
            "m.change_password": {"enabled": True},
            "m.set_displayname": {"enabled": True},
            "m.set_avatar_url": {"enabled": True},
            "m.3pid_changes": {"enabled": False},
        }

    def register(self, router: Router) -> None:
        router.add("GET", "/_matrix/client/versions", self.versions, auth="none")
        router.add("GET", "/.well-known/matrix/client", self.well_known, auth="none")
        router.add_client("GET", "/capabilities", self.get_capabilities)

    async def versions(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/versions — the spec versions this server supports."""
        return {"versions": SPEC_VERSIONS, "unstable_features": dict(self.unstable_features)}

    async def well_known(self, request: ApiRequest) -> dict[str, Any]:
        """GET /.well-known/matrix/client — where clients find this homeserver."""
        base = self._config.public_baseurl
        if base is None:
            if not self._config.listeners:  # embedded without listeners: nothing to advertise
                raise MatrixError(404, "M_NOT_FOUND", "No client base URL configured")
            listener = self._config.listeners[0]
            base = f"http://{listener.bind}:{listener.port}"
        return {"m.homeserver": {"base_url": base.rstrip("/") + "/"}}

    async def get_capabilities(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/capabilities — what this server lets the user do (spec 'Capabilities')."""
        caps = dict(self.capabilities)
        caps["m.room_versions"] = {
            "default": self._config.default_room_version,
            "available": {v: "stable" for v in self._room_versions},
        }
        return {"capabilities": caps}
