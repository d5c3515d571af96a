-- A project's workspaces: service identities (users) bound to one project,
-- each with its own tokens. A workspace sees that project and reads its data
-- as the environment's policy allows, and does nothing else.
ALTER TABLE users ADD COLUMN workspace_of TEXT;

CREATE TABLE workspaces (
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id),
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    PRIMARY KEY (project_id, name)
);
