-- Application services: how far each service's event queue has been delivered,
-- and the transaction in flight (kept until the service acknowledges it, so a
-- restart resends it with the same ID and the same events).
CREATE TABLE appservice_state (
    as_id TEXT NOT NULL PRIMARY KEY,
    -- every event with stream_ordering <= stream_position was delivered or of no interest
    stream_position BIGINT NOT NULL,
    last_txn_id BIGINT NOT NULL
);

CREATE TABLE appservice_txns (
    as_id TEXT NOT NULL,
    txn_id BIGINT NOT NULL,
    -- the service's stream_position once this transaction is acknowledged
    stream_position BIGINT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (as_id, txn_id)
);
