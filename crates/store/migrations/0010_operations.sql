-- Pools an operator paused for the whole fleet: their jobs are neither
-- dispatched nor claimed until resumed.
CREATE TABLE pool_controls (
    pool TEXT PRIMARY KEY,
    paused BIGINT NOT NULL,
    changed_by TEXT NOT NULL,
    changed_at BIGINT NOT NULL
);

-- Operators filter jobs by kind and state; the cleaner removes finished
-- jobs, delivery log rows and idempotency keys by age.
CREATE INDEX outbox_by_kind ON outbox (kind, state);
CREATE INDEX outbox_finished ON outbox (state, finished_at);
CREATE INDEX deliveries_by_age ON deliveries (at);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
