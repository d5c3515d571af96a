-- Who takes part in a request (owner, collaborators): for listing a user's
-- requests and projects without reading every document.
CREATE TABLE request_participants (
    request_id TEXT NOT NULL REFERENCES requests (id),
    user_id TEXT NOT NULL,
    role TEXT NOT NULL,
    PRIMARY KEY (request_id, user_id)
);
CREATE INDEX request_participants_by_user ON request_participants (user_id, role);

-- The user whose call created a job (empty for the system's own).
ALTER TABLE outbox ADD COLUMN created_by TEXT NOT NULL DEFAULT '';
