-- Idempotency keys are claimed inside the transaction that does the call's
-- work: `nonce` tells the call that claimed the key from a retry, and the
-- object the work touched answers a retry whose first call died before its
-- answer was recorded (`status` 0).
ALTER TABLE idempotency_keys ADD COLUMN nonce TEXT NOT NULL DEFAULT '';
ALTER TABLE idempotency_keys ADD COLUMN object_type TEXT NOT NULL DEFAULT '';
ALTER TABLE idempotency_keys ADD COLUMN object_id TEXT NOT NULL DEFAULT '';
