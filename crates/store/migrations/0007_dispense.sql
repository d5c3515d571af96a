-- Dispensing. A plan is fixed once per project: the approved cohort's keys,
-- the per-project pseudonym secret, and the units. Each unit's row is its
-- idempotent checkpoint: set once (done_at IS NULL -> set), counted once in
-- units_done, so the unit that completes the plan queues the finish job.
CREATE TABLE dispense_plans (
    project_id TEXT PRIMARY KEY REFERENCES projects (id),
    plan TEXT NOT NULL,              -- JSON (tre_dispense::DispensePlan)
    cohort TEXT NOT NULL,            -- JSON (tre_dispense::CohortKeys)
    secret TEXT NOT NULL,            -- hex; the pseudonym key, never shown
    units_total BIGINT NOT NULL,
    units_done BIGINT NOT NULL DEFAULT 0,
    manifest TEXT,                   -- JSON, once written and verified
    manifest_sha256 TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE dispense_units (
    project_id TEXT NOT NULL REFERENCES projects (id),
    unit BIGINT NOT NULL,
    source_rows BIGINT NOT NULL,
    object TEXT,
    rows_out BIGINT,
    bytes BIGINT,
    sha256 TEXT,
    done_at BIGINT,
    PRIMARY KEY (project_id, unit)
);
