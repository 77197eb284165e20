-- Federation: other servers' signing keys, delivery state per destination,
-- the outbound PDU queue and received transactions (for idempotency).

-- One row per (server, key ID) we have verified. valid_until_ts is already
-- capped at fetch time + 7 days; expired_ts is set for old_verify_keys.
CREATE TABLE federation_server_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    verify_key TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    expired_ts BIGINT,
    fetched_ts BIGINT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);

-- The latest verified key response of each server, as it signed it, for the notary to serve.
CREATE TABLE federation_key_responses (
    server_name TEXT PRIMARY KEY,
    valid_until_ts BIGINT NOT NULL,
    response_json TEXT NOT NULL
);

-- Delivery back-off per destination. retry_interval_ms = 0 means healthy.
CREATE TABLE federation_destinations (
    destination TEXT PRIMARY KEY,
    failure_ts BIGINT,
    retry_last_ts BIGINT NOT NULL DEFAULT 0,
    retry_interval_ms BIGINT NOT NULL DEFAULT 0
);

-- PDUs still to deliver, per destination in order. A row is deleted once the
-- destination accepted the transaction carrying it, so nothing is lost while
-- a destination is down or this server restarts.
CREATE TABLE federation_outbox (
    destination TEXT NOT NULL,
    seq BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    pdu_json TEXT NOT NULL,
    PRIMARY KEY (destination, seq)
);

-- Transactions received, with the answer given: a replay gets the same answer.
CREATE TABLE federation_received_txns (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    response_json TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
CREATE INDEX federation_received_txns_ts ON federation_received_txns (received_ts)
