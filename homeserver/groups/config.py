"""The ``groups:`` config section (docs/groups.md, docs/configuration.md)."""
from __future__ import annotations

from dataclasses import dataclass

from homeserver.config import Section

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class GroupsConfig:
    #: Joined members a group may have at most (joins beyond: 403 IM.QUN_GROUP_FULL).
    max_members: int = 500
    #: How long after sending a member may recall (redact) their own message; 0 = no limit.
    recall_window_ms: int = 120_000
    #: Admins (power level 50) a group may have besides its owner.
    max_admins: int = 3
    #: Default and longest lifetime of an invite code.
    invite_code_lifetime_ms: int = 7 * DAY_MS
    max_invite_code_lifetime_ms: int = 30 * DAY_MS
    #: Face-to-face groups: callers within this distance and window share a group.
    face_to_face_radius_m: float = 1000.0
    face_to_face_window_ms: int = 15 * 60 * 1000

    @classmethod
    def parse(cls, s: Section) -> "GroupsConfig":
        lifetime = s.int("invite_code_lifetime_ms", cls.invite_code_lifetime_ms, minimum=1000)
        return cls(
            max_members=s.int("max_members", cls.max_members, minimum=1, maximum=1_000_000),
            recall_window_ms=s.int("recall_window_ms", cls.recall_window_ms, minimum=0),
            max_admins=s.int("max_admins", cls.max_admins, minimum=0, maximum=1000),
            invite_code_lifetime_ms=lifetime,
            max_invite_code_lifetime_ms=max(lifetime, s.int("max_invite_code_lifetime_ms",
                                                            cls.max_invite_code_lifetime_ms, minimum=1000)),
            face_to_face_radius_m=s.float("face_to_face_radius_m", cls.face_to_face_radius_m, minimum=1.0),
            face_to_face_window_ms=s.int("face_to_face_window_ms", cls.face_to_face_window_ms, minimum=1000),
        )
