-- Tables shared by SQLite and PostgreSQL; portable SQL only (TEXT, BIGINT).
-- Documents (environments, requests, projects) are JSON text in `doc`, with
-- the columns queries filter on beside them and a `version` for optimistic
-- concurrency: every write is `... WHERE id = ? AND version = ?`.

CREATE TABLE users (
    id TEXT PRIMARY KEY,              -- the immutable handle, e.g. "alice"
    platform_admin BIGINT NOT NULL DEFAULT 0,
    groups_json TEXT NOT NULL DEFAULT '[]',
    token_hash TEXT NOT NULL UNIQUE,  -- SHA-256 of the API token; the token itself is never stored
    created_at BIGINT NOT NULL
);

CREATE TABLE environments (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    visibility TEXT NOT NULL,
    doc TEXT NOT NULL,
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE requests (
    id TEXT PRIMARY KEY,
    environment_id TEXT NOT NULL REFERENCES environments (id),
    owner_id TEXT NOT NULL REFERENCES users (id),
    state TEXT NOT NULL,
    doc TEXT NOT NULL,
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX requests_by_environment ON requests (environment_id, state);
CREATE INDEX requests_by_owner ON requests (owner_id);

-- One row per reviewer, round and stage: a reviewer decides a stage once.
CREATE TABLE decisions (
    request_id TEXT NOT NULL REFERENCES requests (id),
    round BIGINT NOT NULL,
    stage BIGINT NOT NULL,
    stage_id TEXT NOT NULL,
    reviewer_id TEXT NOT NULL REFERENCES users (id),
    verdict TEXT NOT NULL,
    is_final BIGINT NOT NULL,
    comment TEXT NOT NULL,
    decided_at BIGINT NOT NULL,
    PRIMARY KEY (request_id, round, stage, reviewer_id)
);

CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE REFERENCES requests (id),
    environment_id TEXT NOT NULL REFERENCES environments (id),
    state TEXT NOT NULL,
    doc TEXT NOT NULL,
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Append-only and hash-chained (see tre_domain::audit).
CREATE TABLE audit_events (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    object_type TEXT NOT NULL,
    object_id TEXT NOT NULL,
    environment_id TEXT NOT NULL,
    details TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_by_object ON audit_events (object_type, object_id);
CREATE INDEX audit_by_environment ON audit_events (environment_id);

-- The newest event of the chain. Appending updates this single row first,
-- which serialises appends (a row lock on PostgreSQL, the write lock on
-- SQLite) and lets verification notice deleted newest events.
CREATE TABLE audit_head (
    id BIGINT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Jobs written in the same transaction as the state change that asks for
-- them; the job runtime relays them to the queue. `job_key` is the
-- deterministic idempotency key: the same work is never stored twice.
CREATE TABLE outbox (
    job_key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts BIGINT NOT NULL DEFAULT 0,
    due_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_error TEXT
);
CREATE INDEX outbox_due ON outbox (state, due_at);
