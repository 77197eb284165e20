"""Typed reads from a parsed JSON body, answering bad input with Matrix errors.

Handlers parse at the edge: every field is read through one of these, so a
wrong type becomes ``M_BAD_JSON`` (or ``M_MISSING_PARAM``) and never a 500.
"""
from __future__ import annotations

from typing import Any, Mapping

from homeserver.api.errors import bad_json, missing_param

_MISSING: Any = object()


def _get(body: Mapping[str, Any], key: str, default: Any) -> Any:
    value = body.get(key, _MISSING)
    if value is _MISSING:
        if default is _MISSING:
            raise missing_param(f"Missing parameter: {key}")
        return default
    return value


def get_str(body: Mapping[str, Any], key: str, default: Any = _MISSING, max_len: int | None = None,
            allow_none: bool = False) -> Any:
    value = _get(body, key, default)
    if value is default and default is not _MISSING:
        return value
    if value is None and allow_none:
        return None
    if not isinstance(value, str):
        raise bad_json(f"'{key}' must be a string")
    if max_len is not None and len(value) > max_len:
        raise bad_json(f"'{key}' is longer than {max_len} characters")
    return value


def get_int(body: Mapping[str, Any], key: str, default: Any = _MISSING, minimum: int | None = None,
            maximum: int | None = None) -> Any:
    value = _get(body, key, default)
    if value is default and default is not _MISSING:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_json(f"'{key}' must be an integer")
    if minimum is not None and value < minimum:
        raise bad_json(f"'{key}' must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise bad_json(f"'{key}' must be at most {maximum}")
    return value


def get_bool(body: Mapping[str, Any], key: str, default: Any = _MISSING) -> Any:
    value = _get(body, key, default)
    if value is default and default is not _MISSING:
        return value
    if not isinstance(value, bool):
        raise bad_json(f"'{key}' must be true or false")
    return value


def get_dict(body: Mapping[str, Any], key: str, default: Any = _MISSING) -> Any:
    value = _get(body, key, default)
    if value is default and default is not _MISSING:
        return value
    if not isinstance(value, dict):
        raise bad_json(f"'{key}' must be an object")
    return value


def get_list(body: Mapping[str, Any], key: str, default: Any = _MISSING, item_type: type | None = None,
             max_items: int | None = None) -> Any:
    value = _get(body, key, default)
    if value is default and default is not _MISSING:
        return value
    if not isinstance(value, list):
        raise bad_json(f"'{key}' must be a list")
    if item_type is not None and not all(isinstance(v, item_type) and not isinstance(v, bool) or
                                         (item_type is bool and isinstance(v, bool)) for v in value):
        raise bad_json(f"'{key}' must be a list of {item_type.__name__}")
    if max_items is not None and len(value) > max_items:
        raise bad_json(f"'{key}' has more than {max_items} items")
    return value
