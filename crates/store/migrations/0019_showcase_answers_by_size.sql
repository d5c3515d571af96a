-- The cohort builder compares a new cohort with the caller's earlier
-- answered cohorts of the environment's version within the minimum cell size
-- of its size: read by user and size from here (everyone's are compared
-- through showcase_released_sets, below).
CREATE INDEX showcase_answers_by_size ON showcase_queries (user_id, environment_id, version, cohort_size)
    WHERE outcome = 'answered';
-- What asked: the cohort builder, or the count of a submitted request
-- (whose owner learns whether it reaches the minimum cohort size).
ALTER TABLE showcase_queries ADD COLUMN source TEXT NOT NULL DEFAULT 'builder';
-- Every set of participants an answered query released a number of (its
-- cohort, each released cell), once (by the first query that released it;
-- `fingerprint` is a hash of its members): its size and a sketch of its
-- members (the counts of their record keys in 16 buckets, comma-separated). A new answer
-- is compared with those of about its sizes; the sketches tell at once most
-- that are far apart (two sets whose sketches differ by k differ by at
-- least k participants), and only the rest are evaluated again.
CREATE TABLE showcase_released_sets (
    query_id TEXT NOT NULL,
    environment_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    size BIGINT NOT NULL,
    sketch TEXT NOT NULL,
    fingerprint TEXT NOT NULL
);
CREATE INDEX showcase_released_sets_by_size ON showcase_released_sets (environment_id, version, size);
CREATE UNIQUE INDEX showcase_released_sets_once ON showcase_released_sets (environment_id, version, fingerprint);
