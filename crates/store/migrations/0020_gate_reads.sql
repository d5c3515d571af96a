-- The sketch of each answered cohort (see showcase_released_sets): a new
-- cohort is evaluated against the caller's earlier ones of about its size
-- only where the sketches are near (two cohorts whose sketches differ by k
-- differ by at least k participants). Rows without one (written before, or
-- by a request's count) are evaluated as before.
ALTER TABLE showcase_queries ADD COLUMN cohort_sketch TEXT;

-- A released set is kept once per fingerprint; the index that says so now
-- leads with the fingerprint, so that neither planner reads the sets of
-- about a size through it (it led with the environment, and SQLite and
-- PostgreSQL both chose it over showcase_released_sets_by_size, reading
-- every set of the version for each window of sizes).
DROP INDEX showcase_released_sets_once;
CREATE UNIQUE INDEX showcase_released_sets_once ON showcase_released_sets (fingerprint, environment_id, version);
