-- Who may find each environment, and who reviews it, as rows the lists
-- can join and page in SQL (instead of reading every environment): one row
-- per admin, named member, member group, reviewer, and one `public` row
-- for a public environment. Written in the same transaction as the
-- environment, by the store; filled for older environments at start-up.
CREATE TABLE environment_index (
    environment_id TEXT NOT NULL REFERENCES environments (id),
    kind TEXT NOT NULL,         -- admin | user | group | public | reviewer
    principal TEXT NOT NULL,    -- a user id or a group name; '' for public
    PRIMARY KEY (kind, principal, environment_id)
);

CREATE INDEX environment_index_by_environment ON environment_index (environment_id);

-- a reviewer's and an owner's lists page requests by id within an environment
CREATE INDEX requests_by_environment_id ON requests (environment_id, id);
