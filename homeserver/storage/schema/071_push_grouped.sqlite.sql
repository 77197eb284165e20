-- Notifications stored per (event, actions), not per recipient (docs/push.md,
-- "Stored notifications"). A message in a 500-member group makes one to three
-- rows (plain notify; notify + highlight for mentions) instead of ~500.
-- Engine variants only because of the string aggregation of the migrated rows
-- (SQLite group_concat, PostgreSQL string_agg); the table is the same.

-- user_ids: the local members notified with exactly these actions, each followed
-- by a newline, with a newline first ("\n@a:hs\n@b:hs\n"), so searching for
-- "\n" + user_id + "\n" matches whole IDs only. grp numbers an event's groups.
CREATE TABLE push_notification_groups (
    room_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    grp INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    actions TEXT NOT NULL,
    highlight BOOLEAN NOT NULL,
    is_call BOOLEAN NOT NULL,
    ts BIGINT NOT NULL,
    user_ids TEXT NOT NULL,
    PRIMARY KEY (room_id, stream_ordering, grp)
);
CREATE INDEX push_notification_groups_ts ON push_notification_groups (ts);

-- The per-recipient rows of 070, grouped the same way.
INSERT INTO push_notification_groups
    (room_id, stream_ordering, grp, event_id, actions, highlight, is_call, ts, user_ids)
SELECT room_id, stream_ordering,
       ROW_NUMBER() OVER (PARTITION BY room_id, stream_ordering ORDER BY actions, highlight) - 1,
       event_id, actions, highlight, is_call, ts, user_ids
FROM (SELECT room_id, stream_ordering, event_id, actions, highlight, is_call, MIN(ts) AS ts,
             char(10) || group_concat(user_id, char(10)) || char(10) AS user_ids
      FROM push_notifications
      GROUP BY room_id, stream_ordering, event_id, actions, highlight, is_call) AS grouped;

DROP TABLE push_notifications;
