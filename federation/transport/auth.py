"""X-Matrix request authentication (server-server-api.md "Request Authentication").

Every federation request is signed by its origin: the JSON
``{method, uri, origin, destination[, content]}`` is signed with the origin's
key and the signature is sent in ``Authorization: X-Matrix ...``. Pure
functions here; :class:`RequestVerifier` adds the key look-up.
"""
from __future__ import annotations

import re
from typing import Any, Awaitable, Callable, Mapping

from signedjson.key import SigningKey, VerifyKey

from homeserver.api.errors import MatrixError
from homeserver.core.signing import SignatureError, key_id, sign_json, verify_json

#: get_verify_key(server_name, key_id) -> VerifyKey or None when unknown.
GetKey = Callable[[str, str], Awaitable["VerifyKey | None"]]

_PARAM = re.compile(r'\s*([A-Za-z0-9_\-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^",\s][^,\s]*)\s*(?:,|$)')
MAX_HEADER_LENGTH = 4096


def request_json(method: str, uri: str, origin: str, destination: str, content: Any = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"method": method, "uri": uri, "origin": origin, "destination": destination}
    if content is not None:
        obj["content"] = content
    return obj


def sign_request(origin: str, signing_key: SigningKey, destination: str, method: str, uri: str,
                 content: Any = None) -> str:
    """The ``Authorization`` header value for a request, in the compatible form."""
    signed = sign_json(request_json(method, uri, origin, destination, content), origin, signing_key)
    kid = key_id(signing_key)
    sig = signed["signatures"][origin][kid]
    return f'X-Matrix origin="{origin}",destination="{destination}",key="{kid}",sig="{sig}"'


def parse_x_matrix(header: str) -> dict[str, str]:
    """Parameters of one ``X-Matrix`` authorization header (names lower-cased, values unescaped).

    Raises:
        ValueError: if the header is not an X-Matrix header or is malformed.
    """
    if len(header) > MAX_HEADER_LENGTH:
        raise ValueError("header too long")
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "x-matrix" or not rest.strip():
        raise ValueError("not an X-Matrix header")
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if not m or m.end() == pos:
            raise ValueError("malformed X-Matrix parameters")
        name, value = m.group(1).lower(), m.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[name] = value
        pos = m.end()
    return params


def _unauthorized(msg: str) -> MatrixError:
    return MatrixError(401, "M_UNAUTHORIZED", msg)


class RequestVerifier:
    """Checks the X-Matrix signature on an inbound request and names its origin."""

    def __init__(self, server_name: str, get_key: GetKey) -> None:
        self._server_name = server_name
        self._get_key = get_key

    async def verify(self, method: str, uri: str, headers: Mapping[str, str], content: Any) -> str:
        """The authenticated origin server name.

        Args:
            uri: The request target as sent: path and query string.
            headers: Lower-case header names.
            content: The parsed JSON body, or None when there is none.

        Raises:
            MatrixError: 401 ``M_UNAUTHORIZED`` for a missing, malformed or
                bad signature, or a destination other than this server.
        """
        header = headers.get("authorization")
        if not header:
            raise _unauthorized("Missing Authorization headers")
        try:
            params = parse_x_matrix(header)
        except ValueError as e:
            raise _unauthorized(f"Malformed Authorization header: {e}") from None
        origin, kid, sig = params.get("origin"), params.get("key"), params.get("sig")
        if not origin or not kid or not sig:
            raise _unauthorized("Authorization header needs origin, key and sig")
        destination = params.get("destination")
        if destination is not None and destination != self._server_name:
            raise _unauthorized(f"Request is for {destination}, not this server")
        if origin == self._server_name:
            raise _unauthorized("Requests from our own server name are not accepted")
        try:
            verify_key = await self._get_key(origin, kid)
        except MatrixError:
            raise
        except Exception as e:
            raise _unauthorized(f"Cannot fetch key {kid} of {origin}: {e}") from None
        if verify_key is None:
            raise _unauthorized(f"Unknown key {kid} of {origin}")
        obj = request_json(method, uri, origin, destination or self._server_name, content)
        obj["signatures"] = {origin: {kid: sig}}
        try:
            verify_json(obj, origin, verify_key, kid)
        except SignatureError:
            raise _unauthorized("Invalid signature") from None
        return origin
