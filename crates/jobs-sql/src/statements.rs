//! The statements of the job runtime on the outbox, its queue of record.
//! Its states and who moves a job between them are [`JobState`]'s (see
//! `tre_jobs::JobState`); every state here is bound from that enum, never
//! spelt.
//!
//! Every transition is one conditional `UPDATE`, so at most one worker holds
//! a job at a time on either database, whatever the queue delivers.
//!
//! Statements that address jobs by key test the state as `(state || '')`,
//! an expression no index covers, so they are always planned on the
//! primary key. The state's statistics lag behind a busy outbox (20,000
//! jobs arrive and finish between two autovacuum visits): planned on
//! statistics that saw no pending job, PostgreSQL drove a claim from the
//! state indexes instead, visiting every pending job for each key, and
//! claims slowed from a millisecond to over a hundred.

use sqlx::Row;
use tre_jobs::{ClaimedJob, DueJob, FailOutcome, JobCounts, JobEvent, JobState};
use tre_time::Timestamp;

use crate::{Backend, SqlJobError, SqlJobStore, decode_payload};

/// The state `event` leads to (the store only runs transitions the state
/// machine has).
fn target(event: JobEvent) -> &'static str {
    let from = JobState::sources(event)[0];
    from.after(event)
        .expect("a source state of the event")
        .as_str()
}

/// The separator of keys passed as one text to PostgreSQL (no job key
/// holds a control character).
const KEY_SEPARATOR: char = '\u{1f}';

impl SqlJobStore {
    /// How a statement on many jobs names them: the `FROM` clause and the
    /// condition to add to it, and the one text to bind as `$n` (one
    /// parameter keeps one statement text, prepared once, whatever the
    /// batch's size). Each job is looked up by its primary key.
    ///
    /// On PostgreSQL the jobs' rows are locked first, in key order: two
    /// statements on overlapping batches (the relay marking jobs queued
    /// while a worker claims some of them, a claim and a reconciler pass)
    /// then wait for each other instead of deadlocking, which PostgreSQL
    /// only notices after `deadlock_timeout` (1 s) and answers by failing
    /// one of them. SQLite has one writer at a time: nothing to order, and
    /// its planner looks an `IN` list up by key where it scans for a join.
    fn keyed(&self, n: usize, keys: &[String]) -> Keyed {
        match self.backend {
            Backend::Postgres => Keyed {
                from: format!(
                    " FROM (SELECT job_key AS key FROM outbox \
                      WHERE job_key = ANY(string_to_array(${n}, chr(31))) \
                      ORDER BY job_key FOR UPDATE) AS k"
                ),
                condition: "outbox.job_key = k.key".into(),
                bound: keys.join(&KEY_SEPARATOR.to_string()),
            },
            Backend::Sqlite => Keyed {
                from: String::new(),
                condition: format!("outbox.job_key IN (SELECT value FROM json_each(${n}))"),
                bound: serde_json::to_string(keys).expect("keys serialize"),
            },
        }
    }
}

/// See [`SqlJobStore::keyed`].
struct Keyed {
    from: String,
    condition: String,
    bound: String,
}

/// `state` as an SQL literal: statements that look for jobs in one state
/// name it so, and the state's partial index serves them (migration 0011).
fn lit(state: JobState) -> String {
    format!("'{}'", state.as_str())
}

/// The single state `event` moves jobs out of.
fn source(event: JobEvent) -> &'static str {
    match JobState::sources(event) {
        [one] => one.as_str(),
        _ => unreachable!("{event:?} has several source states"),
    }
}

impl SqlJobStore {
    /// Pending jobs that are due, with their attempts so far: what the relay
    /// hands to the queue. For each `(kind, most)` the oldest `most` due jobs
    /// of that kind, each kind read from its own range of the pending index
    /// (so a kind left out costs nothing); all of them oldest first.
    pub async fn due_jobs(
        &self,
        now: Timestamp,
        kinds: &[(&str, u32)],
    ) -> Result<Vec<DueJob>, SqlJobError> {
        if kinds.is_empty() {
            return Ok(Vec::new());
        }
        // one statement: a LIMITed subquery per kind, so each is one index
        // range read in order (the text depends only on how many kinds)
        let per_kind = (0..kinds.len())
            .map(|i| {
                format!(
                    "SELECT * FROM (SELECT job_key, kind, attempts, due_at FROM outbox \
                     WHERE state = {} AND kind = ${} AND due_at <= $1 \
                     ORDER BY due_at, job_key LIMIT ${}) AS k{i}",
                    lit(JobState::Pending),
                    2 * i + 2,
                    2 * i + 3
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(per_kind)).bind(now.0);
        for (kind, most) in kinds {
            query = query.bind(*kind).bind(i64::from(*most));
        }
        let mut due = query
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(DueJob {
                    key: r.try_get(0)?,
                    kind: r.try_get(1)?,
                    attempts: r.try_get(2)?,
                    due_at: Timestamp(r.try_get(3)?),
                })
            })
            .collect::<Result<Vec<_>, SqlJobError>>()?;
        due.sort_by(|a, b| (a.due_at, &a.key).cmp(&(b.due_at, &b.key)));
        Ok(due)
    }

    /// Per kind, the jobs due and not yet taken by a worker (pending or
    /// queued, due by `now`) and when the oldest of them fell due: the load
    /// a pool's workers have to catch up with.
    pub async fn due_by_kind(
        &self,
        now: Timestamp,
    ) -> Result<Vec<(String, i64, i64)>, SqlJobError> {
        // each state from its own index, added up per kind
        let mut by_kind: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
        for state in JobState::sources(JobEvent::Claim) {
            let sql = format!(
                "SELECT kind, COUNT(*), MIN(due_at) FROM outbox WHERE state = {} AND due_at <= $1 GROUP BY kind",
                lit(*state)
            );
            for row in sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(now.0)
                .fetch_all(&self.pool)
                .await?
            {
                let (kind, due, oldest): (String, i64, i64) =
                    (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
                let entry = by_kind.entry(kind).or_insert((0, oldest));
                entry.0 += due;
                entry.1 = entry.1.min(oldest);
            }
        }
        Ok(by_kind
            .into_iter()
            .map(|(kind, (due, oldest))| (kind, due, oldest))
            .collect())
    }

    /// How many jobs of each kind are queued but not yet claimed.
    pub async fn queued_by_kind(&self) -> Result<Vec<(String, i64)>, SqlJobError> {
        let sql = format!(
            "SELECT kind, COUNT(*) FROM outbox WHERE state = {} GROUP BY kind",
            lit(JobState::Queued)
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Records that a pending job was handed to the queue. False when a
    /// worker already took it (or it is no longer pending).
    pub async fn mark_queued(&self, key: &str, now: Timestamp) -> Result<bool, SqlJobError> {
        let done = sqlx::query(
            "UPDATE outbox SET state = $1, dispatched_at = $2, updated_at = $2 WHERE job_key = $3 AND (state || '') = $4",
        )
        .bind(target(JobEvent::Dispatch))
        .bind(now.0)
        .bind(key)
        .bind(source(JobEvent::Dispatch))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Leases a due job for `worker` until `now + lease_ms`, counting an
    /// attempt. `None` when the job is done, dead, leased by someone else,
    /// not due, or unknown: the message is then a no-op. A job whose attempts
    /// were used up (its worker died on the last) is leased all the same,
    /// with an `attempt` above `max_attempts`: the caller dead-letters it
    /// through [`SqlJobStore::fail_job`], running the kind's follow-up, instead of
    /// running it.
    pub async fn claim_job(
        &self,
        key: &str,
        worker: &str,
        lease_ms: i64,
        now: Timestamp,
    ) -> Result<Option<ClaimedJob>, SqlJobError> {
        let [from_a, from_b] = JobState::sources(JobEvent::Claim) else {
            unreachable!("a claim takes pending and queued jobs")
        };
        let row = sqlx::query(
            "UPDATE outbox SET state = $1, lease_owner = $2, lease_until = $3, attempts = attempts + 1, updated_at = $4 \
             WHERE job_key = $5 AND (state || '') IN ($6, $7) AND due_at <= $4 \
             RETURNING kind, payload, attempts, lease_until, last_error",
        )
        .bind(target(JobEvent::Claim))
        .bind(worker)
        .bind(now.0 + lease_ms)
        .bind(now.0)
        .bind(key)
        .bind(from_a.as_str())
        .bind(from_b.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let payload: String = row.try_get("payload")?;
        Ok(Some(ClaimedJob {
            key: key.to_owned(),
            kind: row.try_get("kind")?,
            payload: decode_payload(key, &payload)?,
            attempt: row.try_get("attempts")?,
            lease_until: row.try_get("lease_until")?,
            last_error: row.try_get("last_error")?,
        }))
    }

    /// Leases every job of `keys` that is due and free, in one statement
    /// (see [`SqlJobStore::claim_job`]): the claimed ones, in no particular
    /// order; a key that is done, leased elsewhere, not due or unknown is
    /// left out.
    pub async fn claim_jobs(
        &self,
        keys: &[String],
        worker: &str,
        lease_ms: i64,
        now: Timestamp,
    ) -> Result<Vec<ClaimedJob>, SqlJobError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let [from_a, from_b] = JobState::sources(JobEvent::Claim) else {
            unreachable!("a claim takes pending and queued jobs")
        };
        let Keyed {
            from,
            condition,
            bound,
        } = self.keyed(7, keys);
        let sql = format!(
            "UPDATE outbox SET state = $1, lease_owner = $2, lease_until = $3, attempts = attempts + 1, updated_at = $4{from} \
             WHERE {condition} AND (outbox.state || '') IN ($5, $6) AND outbox.due_at <= $4 \
             RETURNING outbox.job_key, outbox.kind, outbox.payload, outbox.attempts, outbox.lease_until, outbox.last_error"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(target(JobEvent::Claim))
            .bind(worker)
            .bind(now.0 + lease_ms)
            .bind(now.0)
            .bind(from_a.as_str())
            .bind(from_b.as_str())
            .bind(bound)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let key: String = row.try_get("job_key")?;
                let payload: String = row.try_get("payload")?;
                Ok(ClaimedJob {
                    payload: decode_payload(&key, &payload)?,
                    key,
                    kind: row.try_get("kind")?,
                    attempt: row.try_get("attempts")?,
                    lease_until: row.try_get("lease_until")?,
                    last_error: row.try_get("last_error")?,
                })
            })
            .collect()
    }

    /// Marks every job of `keys` that `worker` still holds done, in one
    /// statement; returns the keys it marked (the others lost their lease).
    pub async fn complete_jobs(
        &self,
        keys: &[String],
        worker: &str,
        now: Timestamp,
    ) -> Result<Vec<String>, SqlJobError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let Keyed {
            from,
            condition,
            bound,
        } = self.keyed(5, keys);
        let sql = format!(
            "UPDATE outbox SET state = $1, finished_at = $2, updated_at = $2, lease_owner = NULL, lease_until = NULL{from} \
             WHERE {condition} AND (outbox.state || '') = $3 AND outbox.lease_owner = $4 \
             RETURNING outbox.job_key"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(target(JobEvent::Complete))
            .bind(now.0)
            .bind(source(JobEvent::Complete))
            .bind(worker)
            .bind(bound)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| Ok(row.try_get(0)?))
            .collect()
    }

    /// Records that pending jobs were handed to the queue, in one statement;
    /// returns how many were still pending (a worker may have taken some).
    pub async fn mark_queued_many(
        &self,
        keys: &[String],
        now: Timestamp,
    ) -> Result<u64, SqlJobError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let Keyed {
            from,
            condition,
            bound,
        } = self.keyed(4, keys);
        let sql = format!(
            "UPDATE outbox SET state = $1, dispatched_at = $2, updated_at = $2{from} \
             WHERE {condition} AND (outbox.state || '') = $3"
        );
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(target(JobEvent::Dispatch))
            .bind(now.0)
            .bind(source(JobEvent::Dispatch))
            .bind(bound)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Extends a lease the worker still holds (long jobs heartbeat with this).
    pub async fn extend_lease(
        &self,
        key: &str,
        worker: &str,
        until: Timestamp,
    ) -> Result<bool, SqlJobError> {
        let done = sqlx::query(
            "UPDATE outbox SET lease_until = $1 WHERE job_key = $2 AND (state || '') = $3 AND lease_owner = $4",
        )
        .bind(until.0)
        .bind(key)
        .bind(JobState::Running.as_str())
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks a leased job done. False when the lease was lost meanwhile.
    pub async fn complete_job(
        &self,
        key: &str,
        worker: &str,
        now: Timestamp,
    ) -> Result<bool, SqlJobError> {
        let done = sqlx::query(
            "UPDATE outbox SET state = $1, finished_at = $2, updated_at = $2, lease_owner = NULL, lease_until = NULL \
             WHERE job_key = $3 AND (state || '') = $4 AND lease_owner = $5",
        )
        .bind(target(JobEvent::Complete))
        .bind(now.0)
        .bind(key)
        .bind(source(JobEvent::Complete))
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a failed attempt: back to `pending` at `retry_at`, or `dead`
    /// when `retry_at` is `None` (permanent error or last attempt). A claim
    /// that found the attempts used up (`attempt` above them) is uncounted.
    pub async fn fail_job(
        &self,
        key: &str,
        worker: &str,
        error: &str,
        retry_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<FailOutcome, SqlJobError> {
        let error: String = error.chars().take(4000).collect();
        let (event, due) = match retry_at {
            Some(at) => (JobEvent::Retry, at),
            None => (JobEvent::Die, now),
        };
        let finished = retry_at.is_none().then_some(now.0);
        let done = sqlx::query(
            "UPDATE outbox SET state = $1, due_at = $2, last_error = $3, finished_at = $4, updated_at = $5, \
             lease_owner = NULL, lease_until = NULL \
             WHERE job_key = $6 AND (state || '') = $7 AND lease_owner = $8",
        )
        .bind(target(event))
        .bind(due.0)
        .bind(&error)
        .bind(finished)
        .bind(now.0)
        .bind(key)
        .bind(source(event))
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(match (done.rows_affected(), retry_at) {
            (0, _) => FailOutcome::LeaseLost,
            (_, Some(at)) => FailOutcome::RetryAt(at),
            (_, None) => FailOutcome::Dead,
        })
    }

    /// Gives up a running job its handler found no longer applies: it ends
    /// `discarded` with the reason, its work not done. False when the
    /// lease was lost.
    pub async fn supersede_job(
        &self,
        key: &str,
        worker: &str,
        why: &str,
        now: Timestamp,
    ) -> Result<bool, SqlJobError> {
        let done = sqlx::query(
            "UPDATE outbox SET state = $1, last_error = $2, finished_at = $3, updated_at = $3, \
             lease_owner = NULL, lease_until = NULL \
             WHERE job_key = $4 AND (state || '') = $5 AND lease_owner = $6",
        )
        .bind(target(JobEvent::Supersede))
        .bind(why.chars().take(4000).collect::<String>())
        .bind(now.0)
        .bind(key)
        .bind(source(JobEvent::Supersede))
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Dead-letters a job claimed with its attempts used up (see
    /// [`SqlJobStore::claim_job`]): the claim's attempt is taken back, and the
    /// last attempt's error kept with why it was given up.
    pub async fn give_up_exhausted(
        &self,
        key: &str,
        worker: &str,
        why: &str,
        now: Timestamp,
    ) -> Result<FailOutcome, SqlJobError> {
        let done = sqlx::query(
            "UPDATE outbox SET state = $1, attempts = attempts - 1, last_error = $2, finished_at = $3, updated_at = $3, \
             lease_owner = NULL, lease_until = NULL \
             WHERE job_key = $4 AND (state || '') = $5 AND lease_owner = $6",
        )
        .bind(target(JobEvent::Die))
        .bind(why.chars().take(4000).collect::<String>())
        .bind(now.0)
        .bind(key)
        .bind(source(JobEvent::Die))
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(if done.rows_affected() == 1 {
            FailOutcome::Dead
        } else {
            FailOutcome::LeaseLost
        })
    }

    /// Hands back to `pending` the jobs whose lease ran out (their worker
    /// died or lost the database): another worker takes them at once.
    /// Returns how many.
    pub async fn recover_orphaned(&self, now: Timestamp) -> Result<u64, SqlJobError> {
        let sql = format!(
            "UPDATE outbox SET state = $1, updated_at = $2, lease_owner = NULL, lease_until = NULL, \
             last_error = 'worker lost its lease (crashed, stopped or cut off mid-job)' \
             WHERE state = {} AND lease_until < $2",
            lit(JobState::sources(JobEvent::Orphaned)[0])
        );
        let orphaned = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(target(JobEvent::Orphaned))
            .bind(now.0)
            .execute(&self.pool)
            .await?;
        Ok(orphaned.rows_affected())
    }

    /// Queued jobs of `kinds` handed to the queue before `queued_before`
    /// and still unclaimed, oldest first: what the reconciler may find lost.
    pub async fn stale_queued(
        &self,
        kinds: &[&str],
        queued_before: Timestamp,
    ) -> Result<Vec<String>, SqlJobError> {
        let mut stale = Vec::new();
        for kind in kinds {
            let sql = format!(
                "SELECT job_key FROM outbox WHERE state = {} AND kind = $1 AND dispatched_at < $2 ORDER BY dispatched_at, job_key",
                lit(JobState::Queued)
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(*kind)
                .bind(queued_before.0)
                .fetch_all(&self.pool)
                .await?;
            for row in rows {
                stale.push(row.try_get(0)?);
            }
        }
        Ok(stale)
    }

    /// Hands a queued job back to `pending` (its message was lost).
    pub async fn requeue_lost(&self, key: &str, now: Timestamp) -> Result<bool, SqlJobError> {
        let done = sqlx::query(
            "UPDATE outbox SET state = $1, updated_at = $2 WHERE job_key = $3 AND (state || '') = $4",
        )
        .bind(target(JobEvent::Lost))
        .bind(now.0)
        .bind(key)
        .bind(source(JobEvent::Lost))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Hands every queued job back to `pending`: a queue whose messages do
    /// not outlive its process (the embedded one) lost them all.
    pub async fn requeue_all_queued(&self, now: Timestamp) -> Result<u64, SqlJobError> {
        let sql = format!(
            "UPDATE outbox SET state = $1, updated_at = $2 WHERE state = {}",
            lit(JobState::sources(JobEvent::Lost)[0])
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(target(JobEvent::Lost))
            .bind(now.0)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Gives back a job this worker holds but did not finish (graceful
    /// shutdown): `pending` again at once. The interrupted attempt counts,
    /// so a job that keeps outliving shutdowns still runs out of attempts.
    pub async fn release_job(&self, key: &str, worker: &str) -> Result<bool, SqlJobError> {
        let done = sqlx::query(
            "UPDATE outbox SET state = $1, lease_owner = NULL, lease_until = NULL \
             WHERE job_key = $2 AND (state || '') = $3 AND lease_owner = $4",
        )
        .bind(target(JobEvent::Release))
        .bind(key)
        .bind(source(JobEvent::Release))
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Jobs per state.
    pub async fn job_counts(&self) -> Result<JobCounts, SqlJobError> {
        let rows = sqlx::query("SELECT state, COUNT(*) FROM outbox GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        let mut counts = JobCounts::default();
        for row in rows {
            let state: String = row.try_get(0)?;
            let state = JobState::parse(&state).ok_or_else(|| SqlJobError::Corrupt {
                key: format!("(state {state:?})"),
                message: "not a job state".into(),
            })?;
            counts.set(state, row.try_get(1)?);
        }
        Ok(counts)
    }

    /// Puts a dead job back to `pending` with fresh attempts (operators).
    pub async fn retry_dead_job(&self, key: &str, now: Timestamp) -> Result<bool, SqlJobError> {
        let done = sqlx::query(
            "UPDATE outbox SET state = $1, attempts = 0, due_at = $2, updated_at = $2, finished_at = NULL \
             WHERE job_key = $3 AND (state || '') = $4",
        )
        .bind(target(JobEvent::Revive))
        .bind(now.0)
        .bind(key)
        .bind(source(JobEvent::Revive))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The partial indexes name each state as the enum spells it, so the
    /// statements' literals (from the enum) match them. (`jobs.sql` makes
    /// them as the store's migrations 0011 and 0017 leave them: the store's
    /// `tests/job_tables.rs` compares the two.)
    #[test]
    fn partial_indexes_name_states_as_the_enum_spells_them() {
        let index = |name: &str| {
            crate::JOB_TABLES
                .lines()
                .find(|l| l.starts_with(&format!("CREATE INDEX IF NOT EXISTS {name} ")))
                .unwrap_or_else(|| panic!("no index {name}"))
        };
        for (name, state) in [
            ("outbox_pending", JobState::Pending),
            ("outbox_queued", JobState::Queued),
            ("outbox_running", JobState::Running),
            ("outbox_dead", JobState::Dead),
        ] {
            assert!(
                index(name).ends_with(&format!("WHERE state = {};", lit(state))),
                "{name}"
            );
        }
        assert!(index("outbox_finished").ends_with(&format!(
            "WHERE state IN ({}, {});",
            lit(JobState::Done),
            lit(JobState::Discarded)
        )));
        assert_eq!(JobState::sources(JobEvent::Orphaned), [JobState::Running]);
        assert_eq!(JobState::sources(JobEvent::Lost), [JobState::Queued]);
    }
}
