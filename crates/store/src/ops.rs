//! What operators' controls over the job runtime write: jobs found by
//! state, kind, age and payload text; many retried or discarded at once
//! (counted first, so a caller can show what it would touch); a pool
//! paused or resumed for the whole fleet. Every change is in the audit log
//! under the operator who made it; who may make one is the application's
//! (`tre-app`, `operations.rs`).

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;
use tre_domain::Timestamp;
use tre_jobs::{JobEvent, JobState, OutboxJob};
use tre_jobs_sql::{delete_in_batches, job_from_row};

use crate::audit::{self, AuditRecord};
use crate::writes::{Arg, bind_all};
use crate::{AuditedBy, Page, Store, StoreError, now};

/// Which jobs an operator means. Every part is optional; together they
/// narrow the set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobFilter {
    /// Only these jobs; empty: any.
    #[serde(default)]
    pub keys: Vec<String>,
    pub state: Option<JobState>,
    /// Only these kinds (a pool's kinds, say); empty: every kind.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Only jobs created before this time (milliseconds since the epoch).
    pub created_before: Option<i64>,
    /// Only jobs whose payload (JSON text) contains this text, e.g. a
    /// project or request id.
    pub payload_contains: Option<String>,
}

/// What an operator does to many jobs at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobChange {
    /// Dead jobs back to `pending`, with fresh attempts.
    Retry,
    /// Pending, queued or dead jobs given up: they never run.
    Discard,
}

impl JobChange {
    /// The job's event this change is.
    fn event(self) -> JobEvent {
        match self {
            Self::Retry => JobEvent::Revive,
            Self::Discard => JobEvent::Discard,
        }
    }
}

/// What a bulk change matched, and (unless a dry run) changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct BulkOutcome {
    /// Jobs the filter matched that the change applies to.
    pub matched: u64,
    /// Jobs changed (0 in a dry run).
    pub changed: u64,
    /// Up to 20 of the matched jobs' keys.
    pub sample: Vec<String>,
}

/// The `WHERE` clause of a filter, with its arguments from `$first` on.
fn clause(filter: &JobFilter, states: &[JobState], first: usize) -> (String, Vec<Arg>) {
    let mut conditions = Vec::new();
    let mut args: Vec<Arg> = Vec::new();
    let mut next = first;
    let mut arg = |value: Arg, args: &mut Vec<Arg>| {
        args.push(value);
        let n = next;
        next += 1;
        format!("${n}")
    };
    let states: Vec<JobState> = match filter.state {
        Some(state) if states.is_empty() || states.contains(&state) => vec![state],
        // a state the change does not apply to matches nothing
        Some(_) => Vec::new(),
        None => states.to_vec(),
    };
    if filter.state.is_some() || !states.is_empty() {
        if states.is_empty() {
            conditions.push("1 = 0".to_owned());
        } else {
            let placeholders: Vec<String> = states
                .iter()
                .map(|s| arg(s.as_str().into(), &mut args))
                .collect();
            conditions.push(format!("state IN ({})", placeholders.join(", ")));
        }
    }
    if !filter.keys.is_empty() {
        let placeholders: Vec<String> = filter
            .keys
            .iter()
            .map(|k| arg(k.as_str().into(), &mut args))
            .collect();
        conditions.push(format!("job_key IN ({})", placeholders.join(", ")));
    }
    if !filter.kinds.is_empty() {
        let placeholders: Vec<String> = filter
            .kinds
            .iter()
            .map(|k| arg(k.as_str().into(), &mut args))
            .collect();
        conditions.push(format!("kind IN ({})", placeholders.join(", ")));
    }
    if let Some(before) = filter.created_before {
        conditions.push(format!("created_at < {}", arg(before.into(), &mut args)));
    }
    if let Some(text) = &filter.payload_contains {
        // instr/strpos differ between the databases; LIKE with the text's
        // own wildcards escaped works on both
        let escaped = text
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        conditions.push(format!(
            "payload LIKE {} ESCAPE '\\'",
            arg(format!("%{escaped}%").into(), &mut args)
        ));
    }
    let sql = if conditions.is_empty() {
        "1 = 1".to_owned()
    } else {
        conditions.join(" AND ")
    };
    (sql, args)
}

impl Store {
    /// Jobs matching `filter`, by key from `after`, `limit` at a time.
    /// (Who may list them is the application's; the CLI, a tool with the
    /// database's access, asks here directly.)
    pub async fn jobs_matching(
        &self,
        filter: &JobFilter,
        after: &str,
        limit: usize,
    ) -> Result<Page<OutboxJob>, StoreError> {
        let (condition, args) = clause(filter, &[], 3);
        let sql = format!(
            "SELECT job_key, kind, payload, state, attempts, due_at, created_at, last_error FROM outbox \
             WHERE job_key > $1 AND {condition} ORDER BY job_key LIMIT $2"
        );
        let query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after)
            .bind(limit as i64 + 1);
        let rows = bind_all(query, &args).fetch_all(&self.pool).await?;
        let mut items: Vec<OutboxJob> = rows.iter().map(job_from_row).collect::<Result<_, _>>()?;
        let next_cursor = (items.len() > limit).then(|| items[limit - 1].key.clone());
        items.truncate(limit);
        Ok(Page { items, next_cursor })
    }

    /// The keys `filter` matches among jobs an `event` applies to.
    async fn matching_keys(
        &self,
        filter: &JobFilter,
        event: JobEvent,
    ) -> Result<Vec<String>, StoreError> {
        let (condition, args) = clause(filter, JobState::sources(event), 1);
        let sql = format!("SELECT job_key FROM outbox WHERE {condition} ORDER BY job_key");
        bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), &args)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| Ok(row.try_get(0)?))
            .collect()
    }

    /// Applies `change` to the jobs matching `filter` it applies to, or
    /// only counts them when `dry_run`; audited under `by`, with what
    /// matched and changed, in the same transaction. (Who may is the
    /// application's.)
    pub async fn change_jobs(
        &self,
        by: AuditedBy<'_>,
        filter: &JobFilter,
        dry_run: bool,
        change: JobChange,
    ) -> Result<BulkOutcome, StoreError> {
        let event = change.event();
        let keys = self.matching_keys(filter, event).await?;
        let sample: Vec<String> = keys.iter().take(20).cloned().collect();
        if dry_run || keys.is_empty() {
            return Ok(BulkOutcome {
                matched: keys.len() as u64,
                changed: 0,
                sample,
            });
        }
        let at = now();
        let mut tx = self.begin().await?;
        let mut changed = 0;
        for key in &keys {
            let sql = match change {
                JobChange::Retry => {
                    "UPDATE outbox SET state = $1, attempts = 0, due_at = $2, updated_at = $2, finished_at = NULL \
                     WHERE job_key = $3 AND (state || '') = $4"
                }
                JobChange::Discard => {
                    "UPDATE outbox SET state = $1, finished_at = $2, updated_at = $2, \
                     last_error = COALESCE(last_error, '') || ' (discarded by an operator)' \
                     WHERE job_key = $3 AND (state || '') = $4"
                }
            };
            // the job's state now (it may have moved since it was matched)
            let state: Option<String> =
                sqlx::query_scalar("SELECT state FROM outbox WHERE job_key = $1")
                    .bind(key.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(from) = state.as_deref().and_then(JobState::parse) else {
                continue;
            };
            let Some(to) = from.after(event) else {
                continue;
            };
            changed += sqlx::query(sql)
                .bind(to.as_str())
                .bind(at.0)
                .bind(key.as_str())
                .bind(from.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        let action = match change {
            JobChange::Retry => "jobs.retry",
            JobChange::Discard => "jobs.discard",
        };
        audit::append(
            &mut tx,
            AuditRecord {
                actor: by.actor,
                action,
                object_type: "jobs",
                object_id: "",
                environment_id: "",
                details: json!({"filter": filter, "matched": keys.len(), "changed": changed, "sample": sample}),
                trace_id: by.trace_id,
                claim: by.claim,
            },
            at,
        )
        .await?;
        self.commit(tx).await?;
        Ok(BulkOutcome {
            matched: keys.len() as u64,
            changed,
            sample,
        })
    }

    /// Records a pool paused or resumed for every worker of the fleet,
    /// audited under `by` in the same transaction. (Who may is the
    /// application's.)
    pub async fn save_pool_paused(
        &self,
        by: AuditedBy<'_>,
        pool: &str,
        paused: bool,
    ) -> Result<(), StoreError> {
        let at = now();
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO pool_controls (pool, paused, changed_by, changed_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (pool) DO UPDATE SET paused = $2, changed_by = $3, changed_at = $4",
        )
        .bind(pool)
        .bind(i64::from(paused))
        .bind(by.actor)
        .bind(at.0)
        .execute(&mut *tx)
        .await?;
        audit::append(
            &mut tx,
            AuditRecord {
                actor: by.actor,
                action: if paused { "pool.pause" } else { "pool.resume" },
                object_type: "pool",
                object_id: pool,
                environment_id: "",
                details: json!({"paused": paused}),
                trace_id: by.trace_id,
                claim: by.claim,
            },
            at,
        )
        .await?;
        self.commit(tx).await
    }

    /// Removes delivery log rows (webhook and email attempts) older than
    /// `before`, in batches of `batch`; how many.
    pub async fn remove_deliveries(
        &self,
        before: Timestamp,
        batch: i64,
    ) -> Result<u64, StoreError> {
        Ok(delete_in_batches(
            &self.pool,
            "DELETE FROM deliveries WHERE (delivery_key, attempt) IN \
             (SELECT delivery_key, attempt FROM deliveries WHERE at < $1 LIMIT $2)",
            before,
            batch,
        )
        .await?)
    }

    /// Removes idempotency keys (and the answers kept for them) older than
    /// `before`, in batches of `batch`; how many.
    pub async fn remove_idempotency_keys(
        &self,
        before: Timestamp,
        batch: i64,
    ) -> Result<u64, StoreError> {
        Ok(delete_in_batches(
            &self.pool,
            "DELETE FROM idempotency_keys WHERE (user_id, idempotency_key) IN \
             (SELECT user_id, idempotency_key FROM idempotency_keys WHERE created_at < $1 LIMIT $2)",
            before,
            batch,
        )
        .await?)
    }
}
