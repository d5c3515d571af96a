-- Bulk files. A file inventory is a manifest an environment admin uploads:
-- its rows are stored at once (state `checking`), a job checks them against
-- the environment's source and computes missing checksums, then either
-- makes them part of a new inventory version (`ready`) or deletes them and
-- keeps the first bad rows (`rejected`). Rows live in SQL, not beside the
-- version as Parquet: the checking job fills in checksums row by row as
-- its checkpoint, planning a dispense selects one collection's rows through
-- an index, and both backends hold a million rows in a few hundred MB.
CREATE TABLE file_inventories (
    id TEXT PRIMARY KEY,
    environment_id TEXT NOT NULL REFERENCES environments (id),
    state TEXT NOT NULL,              -- checking | ready | rejected
    location TEXT,                    -- a manifest in the source, read by the job (else uploaded rows)
    files BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    problems TEXT,                    -- JSON (tre_domain::files::FileProblems) when rejected
    inventory_version BIGINT,         -- the version it became part of, when ready
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    checked_at BIGINT
);

CREATE INDEX file_inventories_by_environment ON file_inventories (environment_id, created_at);

CREATE TABLE inventory_files (
    file_inventory_id TEXT NOT NULL REFERENCES file_inventories (id),
    line BIGINT NOT NULL,             -- in the uploaded manifest (header = 1)
    location TEXT NOT NULL,
    entity TEXT NOT NULL,
    collection TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT,                      -- computed by the checking job when not given
    PRIMARY KEY (file_inventory_id, line)
);

CREATE INDEX inventory_files_by_collection ON inventory_files (file_inventory_id, collection, entity);

-- A dispense unit may copy bulk files: how many and how many bytes it was
-- planned with, and the multipart upload of a large file in progress (JSON:
-- which file, the upload id, the parts done) so a retried unit resumes it
-- or aborts it, never leaving it behind.
ALTER TABLE dispense_units ADD COLUMN files BIGINT NOT NULL DEFAULT 0;
ALTER TABLE dispense_units ADD COLUMN file_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE dispense_units ADD COLUMN upload TEXT;
