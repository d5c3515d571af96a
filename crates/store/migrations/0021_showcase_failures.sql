-- Why an inventory version's showcase could not be computed: the reason
-- its compute_showcase job died with, shown to the environment's admins
-- (others are told only that it failed). Aggregates saved later for the
-- same version (an operator retried the job) supersede it.
CREATE TABLE showcase_failures (
    environment_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    reason TEXT NOT NULL,
    failed_at BIGINT NOT NULL,
    PRIMARY KEY (environment_id, version)
);
