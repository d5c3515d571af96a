-- The outbox's indexes, one per state a statement looks for, each holding
-- only the jobs in that state. A job changes state three times on its way
-- (queued, running, done), and each change writes a new row version into
-- every index over the table: with partial indexes that is the primary key
-- and at most one other, instead of every state-led index. The statements
-- name the state as a literal, so each plan uses its index (a bound
-- parameter would not prove the index's condition). The state names are
-- tre_domain::JobState's, checked by a test in crates/store.
DROP INDEX outbox_due;
DROP INDEX outbox_leases;
DROP INDEX outbox_by_kind;
DROP INDEX outbox_finished;
-- the relay: the oldest due jobs first, read in index order
CREATE INDEX outbox_pending ON outbox (due_at, job_key) WHERE state = 'pending';
-- the reconciler: messages that may have been lost, per kind
CREATE INDEX outbox_queued ON outbox (kind, dispatched_at) WHERE state = 'queued';
-- the reconciler: leases that ran out
CREATE INDEX outbox_running ON outbox (lease_until) WHERE state = 'running';
-- the cleaner: finished jobs past their retention
CREATE INDEX outbox_finished ON outbox (finished_at) WHERE state IN ('done', 'discarded');
-- operators: dead jobs wait for them
CREATE INDEX outbox_dead ON outbox (job_key) WHERE state = 'dead';
