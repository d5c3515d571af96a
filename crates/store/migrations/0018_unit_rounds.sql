-- A retried dispense. Each unit belongs to one round (`round`), and only a
-- job of that round works it and completes it; `taken` is 1 while that job
-- works it (a retry takes over only units no job is working, so exactly one
-- job works a unit, and the completion of the last unit finishes the
-- project's current round). `trouble` is why the unit's last attempt failed
-- while it is tried again (a full disk), shown on the project.
ALTER TABLE dispense_units ADD COLUMN round BIGINT NOT NULL DEFAULT 0;
ALTER TABLE dispense_units ADD COLUMN taken BIGINT NOT NULL DEFAULT 0;
ALTER TABLE dispense_units ADD COLUMN trouble TEXT;
