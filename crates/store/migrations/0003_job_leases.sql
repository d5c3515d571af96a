-- The outbox becomes the durable queue of record for the job runtime.
-- States: pending (due at due_at, to be handed to the queue), queued (handed
-- to the queue at dispatched_at), running (leased by lease_owner until
-- lease_until), done, dead (gave up; last_error says why).
ALTER TABLE outbox ADD COLUMN dispatched_at BIGINT;
ALTER TABLE outbox ADD COLUMN lease_owner TEXT;
ALTER TABLE outbox ADD COLUMN lease_until BIGINT;
ALTER TABLE outbox ADD COLUMN finished_at BIGINT;
CREATE INDEX outbox_leases ON outbox (state, lease_until);

-- Each user's inbox (and a reviewer's review queue): one row per
-- notification, keyed so that a redelivered job writes it once.
CREATE TABLE notifications (
    notification_key TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    kind TEXT NOT NULL,
    request_id TEXT,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    read_at BIGINT
);
CREATE INDEX notifications_by_user ON notifications (user_id, created_at);

-- Every attempt to deliver a notification to an outside channel.
CREATE TABLE deliveries (
    delivery_key TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    channel TEXT NOT NULL,
    target TEXT NOT NULL,
    status TEXT NOT NULL,
    detail TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (delivery_key, attempt)
);
