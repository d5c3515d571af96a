-- The cohort builder compares a new cohort with every earlier answered
-- cohort of the environment's version within the minimum cell size of its
-- size, whoever asked it: read by size from here.
CREATE INDEX showcase_answers_by_size ON showcase_queries (environment_id, version, cohort_size)
    WHERE outcome = 'answered';
-- What asked: the cohort builder, or the count of a submitted request
-- (whose owner learns whether it reaches the minimum cohort size).
ALTER TABLE showcase_queries ADD COLUMN source TEXT NOT NULL DEFAULT 'builder';
