-- API tokens with a lifecycle: each user may hold several, each named,
-- with an expiry, a last-used time, and revocation. Tokens are stored as
-- their SHA-256 only. The tokens users held before are carried over,
-- without an expiry (revoke them to end them). `users.token_hash` stays for
-- older code and is no longer read.
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    last_used_at BIGINT,
    revoked_at BIGINT
);

CREATE INDEX api_tokens_by_user ON api_tokens (user_id, created_at);

INSERT INTO api_tokens (id, user_id, name, token_hash, created_at)
SELECT 'initial-' || id, id, 'initial', token_hash, created_at FROM users;

-- A disabled user's tokens are refused; enabling them again restores them.
ALTER TABLE users ADD COLUMN disabled_at BIGINT;

-- Bumped by every revocation and every disabling: each API process reads
-- it (a one-row read, a few times a second) before trusting the tokens it
-- has cached, and forgets them all when it moved.
CREATE TABLE auth_epoch (
    id BIGINT PRIMARY KEY,
    epoch BIGINT NOT NULL
);

INSERT INTO auth_epoch (id, epoch) VALUES (1, 0);
