"""Checks on the content of events clients send (msgtypes and relations).

The spec shapes ``m.room.message`` per msgtype (client-server-api,
"m.room.message msgtypes"): every message needs a string ``body``; media
(m.image, m.file, m.audio, m.video) need ``url`` (an mxc URI) or ``file``
(encrypted); m.location needs ``geo_uri``. Unknown msgtypes are allowed (the
spec lets clients define their own) but still need a body. Redacted-looking
content (no msgtype, no body) is refused: use a redaction.
"""
from __future__ import annotations

from typing import Any

from homeserver.api.errors import bad_json

MEDIA_MSGTYPES = ("m.image", "m.file", "m.audio", "m.video")


def check_message_content(content: dict[str, Any]) -> None:
    """Raise M_BAD_JSON if an m.room.message content is not as the spec shapes it."""
    rel = content.get("m.relates_to")
    if isinstance(rel, dict) and rel.get("rel_type") == "m.replace" and "m.new_content" in content:
        new = content["m.new_content"]
        if not isinstance(new, dict):
            raise bad_json("m.new_content must be an object")
        check_message_content({k: v for k, v in new.items() if k != "m.relates_to"})
    msgtype = content.get("msgtype")
    if not isinstance(msgtype, str):
        raise bad_json("m.room.message needs a string 'msgtype'")
    if not isinstance(content.get("body"), str):
        raise bad_json(f"{msgtype} needs a string 'body'")
    if msgtype in MEDIA_MSGTYPES:
        url, file = content.get("url"), content.get("file")
        if isinstance(url, str):
            if not url.startswith("mxc://"):
                raise bad_json(f"{msgtype} 'url' must be an mxc:// URI")
        elif not isinstance(file, dict) or not isinstance(file.get("url"), str):
            raise bad_json(f"{msgtype} needs 'url' (mxc://) or an encrypted 'file'")
        info = content.get("info")
        if info is not None and not isinstance(info, dict):
            raise bad_json("'info' must be an object")
    elif msgtype == "m.location":
        if not isinstance(content.get("geo_uri"), str) or not content["geo_uri"].startswith("geo:"):
            raise bad_json("m.location needs a 'geo_uri' (geo:...)")
    if "format" in content and not isinstance(content["format"], str):
        raise bad_json("'format' must be a string")
    if "formatted_body" in content and not isinstance(content["formatted_body"], str):
        raise bad_json("'formatted_body' must be a string")


def check_relation(content: dict[str, Any]) -> dict[str, Any] | None:
    """Check the shape of ``m.relates_to``; returns it (or None when absent)."""
    rel = content.get("m.relates_to")
    if rel is None:
        return None
    if not isinstance(rel, dict):
        raise bad_json("m.relates_to must be an object")
    rel_type = rel.get("rel_type")
    if rel_type is not None:
        if not isinstance(rel_type, str):
            raise bad_json("m.relates_to.rel_type must be a string")
        if not isinstance(rel.get("event_id"), str):
            raise bad_json("m.relates_to.event_id must be an event ID")
        if rel_type == "m.annotation" and not isinstance(rel.get("key"), str):
            raise bad_json("m.annotation needs a string 'key'")
    reply = rel.get("m.in_reply_to")
    if reply is not None and (not isinstance(reply, dict) or not isinstance(reply.get("event_id"), str)):
        raise bad_json("m.in_reply_to needs an 'event_id'")
    return rel
