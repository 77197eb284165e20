-- Rooms (groups) and their event DAG.
--
-- Every table that concerns a room has room_id as the first column of its
-- primary key, so rooms can later be sharded by room ID (Citus-style
-- distribution on room_id). Lookups by event ID alone go through the
-- non-unique events_by_id index; event IDs are hashes, so they are unique
-- in practice.

CREATE TABLE rooms (
    room_id TEXT NOT NULL PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator TEXT,
    is_public BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts BIGINT NOT NULL
);

-- The event JSON is stored once, here (federation form, with our unsigned
-- additions). stream_ordering is global and increasing (the /sync position);
-- topological_ordering is the depth (the /messages position).
CREATE TABLE events (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    topological_ordering BIGINT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    outlier BOOLEAN NOT NULL DEFAULT FALSE,
    rejected_reason TEXT,
    json TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);
CREATE INDEX events_by_id ON events (event_id);
CREATE INDEX events_room_topo ON events (room_id, topological_ordering, stream_ordering);
CREATE INDEX events_room_stream ON events (room_id, stream_ordering);
CREATE INDEX events_stream ON events (stream_ordering);

-- The DAG: prev_events and auth_events edges.
CREATE TABLE event_edges (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id, prev_event_id)
);
CREATE INDEX event_edges_prev ON event_edges (room_id, prev_event_id);

CREATE TABLE event_auth (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    auth_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id, auth_id)
);

-- The room's forward extremities: events with no known successor.
CREATE TABLE event_forward_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

-- State groups: a state snapshot stored as a delta over prev_group (NULL for
-- a full snapshot). delta_depth bounds how long a chain may grow.
CREATE TABLE state_groups (
    room_id TEXT NOT NULL,
    state_group BIGINT NOT NULL,
    prev_group BIGINT,
    delta_depth INTEGER NOT NULL,
    PRIMARY KEY (room_id, state_group)
);
CREATE INDEX state_groups_id ON state_groups (state_group);

-- One row per (type, state_key) the group sets; event_id NULL removes the key.
CREATE TABLE state_group_entries (
    room_id TEXT NOT NULL,
    state_group BIGINT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT,
    PRIMARY KEY (room_id, state_group, type, state_key)
);

-- The state before and after each (non-outlier) event.
CREATE TABLE event_state (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    state_before BIGINT NOT NULL,
    state_after BIGINT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

CREATE TABLE current_state (
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, type, state_key)
);

-- Current membership per user, for "rooms of a user" and "members of a room".
CREATE TABLE room_memberships (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    forgotten BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_memberships_user ON room_memberships (user_id, membership);

-- Redactions: which event redacts which. The stored JSON is left intact;
-- readers apply the redaction algorithm.
CREATE TABLE redactions (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    redacts TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);
CREATE INDEX redactions_redacts ON redactions (room_id, redacts);

-- m.relates_to of each event (replies are not relations in the spec sense
-- and are not stored here; threads, edits, reactions and references are).
CREATE TABLE event_relations (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    relates_to_id TEXT NOT NULL,
    rel_type TEXT NOT NULL,
    event_type TEXT NOT NULL,
    sender TEXT NOT NULL,
    aggregation_key TEXT,
    stream_ordering BIGINT NOT NULL,
    topological_ordering BIGINT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);
CREATE INDEX event_relations_parent ON event_relations (room_id, relates_to_id, rel_type, topological_ordering, stream_ordering);

-- Transaction IDs of client sends (idempotency per device).
CREATE TABLE event_txn_ids (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    inserted_ts BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id, device_id, txn_id)
);

-- Room aliases (keyed by alias: they are looked up before the room is known).
CREATE TABLE room_aliases (
    room_alias TEXT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL,
    servers TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);
