-- The secret that gives every participant of an environment its record key
-- for the cell-key method (hex, 32 bytes); created by the first showcase
-- job, never shown.
CREATE TABLE showcase_secrets (
    environment_id TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- The true aggregates of each inventory version's showcase fields (JSON of
-- tre_domain::showcase::ShowcaseAggregates), written once by the showcase
-- job; the API releases them under the disclosure rules.
CREATE TABLE showcase_aggregates (
    environment_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    body TEXT NOT NULL,
    computed_at BIGINT NOT NULL,
    PRIMARY KEY (environment_id, version)
);

-- Every cohort-builder query: who asked what of which version, and what
-- came of it (answered, too_close, rate_limited). The true cohort size is
-- kept for the differencing check (never released); earlier cohorts are
-- evaluated again from their filters when their sizes are close.
CREATE TABLE showcase_queries (
    id TEXT PRIMARY KEY,
    environment_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    cohort TEXT NOT NULL,
    fields TEXT NOT NULL,
    cohort_size BIGINT,
    outcome TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX showcase_queries_by_user ON showcase_queries (user_id, environment_id, at);

-- The selection summary's true counts of each submission round (JSON of
-- tre_domain::summary::SelectionCounts), written by the cohort count job;
-- released under the disclosure rules when read.
CREATE TABLE request_summaries (
    request_id TEXT NOT NULL,
    round BIGINT NOT NULL,
    body TEXT NOT NULL,
    computed_at BIGINT NOT NULL,
    PRIMARY KEY (request_id, round)
);
