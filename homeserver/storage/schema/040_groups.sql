-- Groups (docs/groups.md): invite codes, timed mutes, saved settings.
-- Keyed by room_id first so they shard with their room; codes are also
-- looked up by code alone through a non-unique index (codes carry 60
-- random bits, so they are unique in practice).

CREATE TABLE group_invite_codes (
    room_id TEXT NOT NULL,
    code TEXT NOT NULL,
    creator TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (room_id, code)
);
CREATE INDEX group_invite_codes_by_code ON group_invite_codes (code);
CREATE INDEX group_invite_codes_by_expiry ON group_invite_codes (expires_at);

-- A muted member's power level before the mute (restored on unmute) and
-- when the mute lifts by itself (NULL: until unmuted).
CREATE TABLE group_mutes (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    muted_by TEXT NOT NULL,
    prev_level BIGINT,
    expires_at BIGINT,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX group_mutes_by_expiry ON group_mutes (expires_at);

-- Values to restore: events_default before mute_all, the join rule before
-- join approval was switched on.
CREATE TABLE group_settings (
    room_id TEXT NOT NULL PRIMARY KEY,
    saved_events_default BIGINT,
    saved_join_rule TEXT
);
