-- The job runtime's tables, as the migrations of the store leave them
-- (common.sql, 0003, 0006, 0010, 0011, 0017), each made only when missing:
-- run by SqlJobStore::open on a database of the runtime's own (no
-- governance tables), and a no-op beside the governance. A test in
-- crates/store compares the two.
CREATE TABLE IF NOT EXISTS outbox (
    job_key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts BIGINT NOT NULL DEFAULT 0,
    due_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_error TEXT,
    dispatched_at BIGINT,
    lease_owner TEXT,
    lease_until BIGINT,
    finished_at BIGINT,
    created_by TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (kind, due_at, job_key) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS outbox_queued ON outbox (kind, dispatched_at) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS outbox_running ON outbox (lease_until) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS outbox_finished ON outbox (finished_at) WHERE state IN ('done', 'discarded');
CREATE INDEX IF NOT EXISTS outbox_dead ON outbox (job_key) WHERE state = 'dead';
CREATE TABLE IF NOT EXISTS pool_controls (
    pool TEXT PRIMARY KEY,
    paused BIGINT NOT NULL,
    changed_by TEXT NOT NULL,
    changed_at BIGINT NOT NULL
);
