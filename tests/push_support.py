"""Response shapes checked against the spec's bundled OpenAPI (client-server.json)."""
from __future__ import annotations

import functools
import json
from typing import Any

import jsonschema

SPEC = "/work/shared/matrix-spec/openapi/client-server.json"


@functools.lru_cache(maxsize=1)
def _spec() -> dict[str, Any]:
    with open(SPEC, encoding="utf-8") as f:
        return json.load(f)


def check(path: str, method: str, status: int, body: Any) -> None:
    """Validate ``body`` against the spec's schema for that route, method and status."""
    op = _spec()["paths"]["/_matrix/client/v3" + path][method.lower()]
    schema = op["responses"][str(status)]["content"]["application/json"]["schema"]
    jsonschema.validate(body, schema)
