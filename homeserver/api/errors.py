"""Matrix errors: ``{"errcode", "error"}`` with the right HTTP status."""
from __future__ import annotations

from typing import Any


class MatrixError(Exception):
    """An error answered to the client as a Matrix error body."""

    def __init__(self, status: int, errcode: str, error: str, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(f"{status} {errcode}: {error}")
        self.status = status
        self.errcode = errcode
        self.error = error
        self.headers = headers or {}
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        return {"errcode": self.errcode, "error": self.error, **self.extra}


def forbidden(msg: str, **extra: Any) -> MatrixError:
    return MatrixError(403, "M_FORBIDDEN", msg, **extra)


def not_found(msg: str = "Not found") -> MatrixError:
    return MatrixError(404, "M_NOT_FOUND", msg)


def bad_json(msg: str) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", msg)


def missing_param(msg: str) -> MatrixError:
    return MatrixError(400, "M_MISSING_PARAM", msg)


def invalid_param(msg: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", msg)


def unrecognized(status: int = 404, msg: str = "Unrecognized request") -> MatrixError:
    return MatrixError(status, "M_UNRECOGNIZED", msg)


def too_large(msg: str = "Request body too large") -> MatrixError:
    return MatrixError(413, "M_TOO_LARGE", msg)


def limit_exceeded(retry_after_ms: int) -> MatrixError:
    seconds = max(1, -(-retry_after_ms // 1000))
    return MatrixError(429, "M_LIMIT_EXCEEDED", "Too many requests",
                       headers={"Retry-After": str(seconds)}, retry_after_ms=retry_after_ms)
