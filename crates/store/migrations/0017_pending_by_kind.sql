-- The relay reads each kind's due jobs from its own range of this index, so
-- a kind whose pool has no room (its workers are behind) costs nothing to
-- pass over: the relay used to read the oldest due jobs of every kind and
-- drop those of a full pool, reading the same thousand rows again every pass
-- while one pool caught up (over 700,000 rows read to relay 20,000 jobs).
DROP INDEX outbox_pending;
CREATE INDEX outbox_pending ON outbox (kind, due_at, job_key) WHERE state = 'pending';
