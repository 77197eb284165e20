"""User-interactive authentication (UIA) sessions.

A first call without ``auth`` gets 401 with the flows and a ``session``; the
client completes stages and calls again. Sessions live in memory for
``SESSION_TTL_MS``: UIA is a short conversation with one client, and losing
it on restart only means the client starts the flow again.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from homeserver.api.errors import MatrixError
from homeserver.util.clock import Clock
from homeserver.util.ids import random_string

SESSION_TTL_MS = 30 * 60 * 1000
#: Sessions kept at most; unauthenticated /register calls create them, so memory is bounded.
MAX_SESSIONS = 50_000

#: A stage checker gets the ``auth`` dict and the session and returns True when the stage is passed.
StageChecker = Callable[[dict[str, Any], "UiaSession"], Awaitable[bool]]


@dataclass
class UiaSession:
    session_id: str
    created_ms: int
    completed: list[str] = field(default_factory=list)
    #: What the flow was started for (e.g. the user ID for a password change).
    context: dict[str, Any] = field(default_factory=dict)


class UiaManager:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._sessions: dict[str, UiaSession] = {}

    def _expire(self) -> None:
        cutoff = self._clock.time_msec() - SESSION_TTL_MS
        for sid in [sid for sid, s in self._sessions.items() if s.created_ms < cutoff]:
            del self._sessions[sid]

    async def check(self, body: dict[str, Any], flows: list[list[str]], checkers: dict[str, StageChecker],
                    context: dict[str, Any] | None = None) -> UiaSession:
        """Return the completed session, or raise the 401 that tells the client what to do next."""
        self._expire()
        auth = body.get("auth")
        session: UiaSession | None = None
        error: MatrixError | None = None
        if auth is not None:
            if not isinstance(auth, dict):
                raise MatrixError(400, "M_BAD_JSON", "'auth' must be an object")
            sid = auth.get("session")
            if sid is not None:
                session = self._sessions.get(sid) if isinstance(sid, str) else None
                if session is None:
                    raise MatrixError(400, "M_UNKNOWN", "Unknown or expired UIA session")
                if context is not None and session.context and session.context != context:
                    raise MatrixError(403, "M_FORBIDDEN", "UIA session was started for another request")
            stage = auth.get("type")
            if stage is not None:
                checker = checkers.get(stage) if isinstance(stage, str) else None
                if checker is None or not any(stage in flow for flow in flows):
                    raise MatrixError(400, "M_UNRECOGNIZED", f"Unsupported authentication type {stage!r}")
                if session is None:
                    session = self._new_session(context)
                if await checker(auth, session):
                    if stage not in session.completed:
                        session.completed.append(stage)
                else:
                    error = MatrixError(401, "M_FORBIDDEN", "Invalid authentication")
        if session is None:
            session = self._new_session(context)
        for flow in flows:
            if all(stage in session.completed for stage in flow):
                del self._sessions[session.session_id]
                return session
        body_401: dict[str, Any] = {
            "flows": [{"stages": flow} for flow in flows],
            "params": {},
            "session": session.session_id,
            "completed": list(session.completed),
        }
        if error is not None:
            body_401.update(errcode=error.errcode, error=error.error)
        raise UiaRequired(body_401)

    def _new_session(self, context: dict[str, Any] | None) -> UiaSession:
        while len(self._sessions) >= MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]  # the oldest
        session = UiaSession(random_string(24), self._clock.time_msec(), context=dict(context or {}))
        self._sessions[session.session_id] = session
        return session


class UiaRequired(MatrixError):
    """The 401 of user-interactive auth: its body is the flows, not an error."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(401, body.get("errcode", "M_FORBIDDEN"), body.get("error", "Additional authentication required"))
        self.body = body

    def to_json(self) -> dict[str, Any]:
        return self.body
