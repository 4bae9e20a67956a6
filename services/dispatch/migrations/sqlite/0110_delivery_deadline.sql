-- When the message was requested (µs; the `outbound.requested` event's
-- time): a delivery still pending `dispatch.pending_deadline` after it
-- fails. Deliveries recorded before this column count from their creation.
ALTER TABLE deliveries ADD COLUMN requested_at INTEGER NOT NULL DEFAULT 0;
UPDATE deliveries SET requested_at = created_at WHERE requested_at = 0;

-- The sweeper: pending deliveries, oldest request first.
CREATE INDEX IF NOT EXISTS deliveries_pending_by_request
    ON deliveries (state, requested_at);
