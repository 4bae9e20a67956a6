-- Transactional outbox: events written in the same transaction as the state
-- change they describe; the relay publishes and deletes them.
CREATE TABLE IF NOT EXISTS outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT    NOT NULL,
    routing_key  TEXT    NOT NULL,
    payload      BLOB    NOT NULL,
    headers      TEXT    NOT NULL DEFAULT '{}',
    created_at   INTEGER NOT NULL
);

-- Consumer idempotency: an event id is processed at most once per consumer.
CREATE TABLE IF NOT EXISTS processed_events (
    consumer      TEXT    NOT NULL,
    event_id      TEXT    NOT NULL,
    processed_at  INTEGER NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
