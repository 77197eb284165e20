"""Account endpoints (spec 'Account management')."""
from __future__ import annotations

from typing import Any

from homeserver.api.http import ApiRequest, Router


class AccountServlets:
    def register(self, router: Router) -> None:
        router.add_client("GET", "/account/whoami", self.whoami)

    async def whoami(self, request: ApiRequest) -> dict[str, Any]:
        """GET /_matrix/client/v3/account/whoami — the owner of this access token."""
        r = request.requester
        body: dict[str, Any] = {"user_id": r.user_id, "is_guest": r.is_guest}
        if r.device_id is not None:
            body["device_id"] = r.device_id
        return body
