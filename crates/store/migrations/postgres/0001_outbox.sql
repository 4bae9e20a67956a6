-- Transactional outbox: events written in the same transaction as the state
-- change they describe; the relay publishes and deletes them.
CREATE TABLE IF NOT EXISTS outbox (
    seq          BIGSERIAL PRIMARY KEY,
    event_id     TEXT   NOT NULL,
    routing_key  TEXT   NOT NULL,
    payload      BYTEA  NOT NULL,
    headers      TEXT   NOT NULL DEFAULT '{}',
    created_at   BIGINT NOT NULL
);

-- Consumer idempotency: an event id is processed at most once per consumer.
CREATE TABLE IF NOT EXISTS processed_events (
    consumer      TEXT   NOT NULL,
    event_id      TEXT   NOT NULL,
    processed_at  BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
