-- Responses to POSTs made with an Idempotency-Key, per user: a retry with
-- the same key and body gets the first response without the work being
-- done twice, across API processes. `status` 0 marks a call in progress.
CREATE TABLE idempotency_keys (
    user_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status BIGINT NOT NULL,
    response TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, idempotency_key)
);
