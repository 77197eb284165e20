"""Pure helpers for serving media safely: headers, dispositions, byte ranges."""
from __future__ import annotations

import re
from typing import Literal
from urllib.parse import quote

#: The spec's list of types that may be served ``inline`` (content_repo.md "Serving inline
#: content"). Everything else is ``attachment``, so a browser never renders it as a page.
INLINE_TYPES = frozenset({
    "text/css", "text/plain", "text/csv", "application/json", "application/ld+json",
    "image/jpeg", "image/gif", "image/png", "image/apng", "image/webp", "image/avif",
    "video/mp4", "video/webm", "video/ogg", "video/quicktime",
    "audio/mp4", "audio/webm", "audio/aac", "audio/mpeg", "audio/ogg", "audio/wave", "audio/wav",
    "audio/x-wav", "audio/x-pn-wav", "audio/flac", "audio/x-flac",
})

#: The spec's recommended policy, verbatim (content_repo.md, top).
CSP = ("sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; "
       "style-src 'unsafe-inline'; object-src 'self';")

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "cross-origin",
}

_CONTENT_TYPE = re.compile(r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(\s*;\s*[\x20-\x7e]*)?$")
#: RFC 6266 token-safe characters for the plain ``filename=`` form.
_PLAIN_FILENAME = re.compile(r"^[A-Za-z0-9 !#$%&'()*+,.\-:<=>?@\[\]^_`{|}~]+$")


def clean_content_type(value: str | None) -> str:
    """A content type safe to store and echo as a header; octet-stream when absent or odd."""
    if value and len(value) <= 255 and _CONTENT_TYPE.match(value.strip()):
        return value.strip()
    return "application/octet-stream"


def is_inline(content_type: str | None) -> bool:
    return (content_type or "").split(";", 1)[0].strip().lower() in INLINE_TYPES


def content_disposition(content_type: str | None, filename: str | None) -> str:
    """``inline`` or ``attachment`` plus the filename, encoded per RFC 6266 / RFC 5987."""
    disposition = "inline" if is_inline(content_type) else "attachment"
    if not filename:
        return disposition
    name = "".join(c for c in filename if c >= " " and c != "\x7f")
    if not name:
        return disposition
    if _PLAIN_FILENAME.match(name):
        return f'{disposition}; filename="{name}"'
    return f"{disposition}; filename*=utf-8''{quote(name, safe='')}"


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | Literal[False]:
    """One byte range of ``size`` bytes from a ``Range`` header.

    Returns:
        (start, end) inclusive; None to send everything (no header, several ranges,
        or a form we don't honour, which RFC 9110 allows); False when unsatisfiable (416).
    """
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            if not last.isdigit():
                return None
            n = int(last)
            if n == 0 or size == 0:
                return False
            return max(0, size - n), size - 1
        if not first.isdigit() or (last and not last.isdigit()):
            return None
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size:
        return False
    if end < start:
        return None
    return start, min(end, size - 1)
