//! Appending to, sealing and verifying the hash-chained audit log.
//!
//! A command writes its event to `audit_pending` inside its own transaction
//! ([`append`]): the event commits with the work or not at all, and no
//! command waits on another's. The **sealer** then moves committed events
//! into `audit_events` in batches, oldest first: under the `audit_head` lock
//! it numbers them, chains each to the one before by its hash, and deletes
//! them from `audit_pending`, in one transaction. Every process that serves
//! or works runs a sealer task, which its binary starts
//! ([`Store::start_audit_sealer`]); each commit wakes it, and it looks once
//! a second for events a crashed process left. Readers of the log seal
//! first, so they see every event committed before they asked; a closing
//! store seals what is left.
//!
//! Events of one object keep their order: a command on an object starts
//! after the one before it committed, so its pending row is newer.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use sqlx::{AnyPool, Row};
use tokio::sync::Notify;
use tre_domain::audit::{AuditEvent, ChainBreak, ChainVerifier, event_hash};
use tre_domain::{EnvironmentId, Timestamp};

use crate::tx::WriteTurn;
use crate::writes::Insert;
use crate::{Backend, Store, StoreError, Tx};

/// What an audit event says happened.
pub struct AuditRecord<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub object_type: &'static str,
    pub object_id: &'a str,
    pub environment_id: &'a str,
    pub details: Value,
    pub trace_id: &'a str,
    /// The idempotency key of the HTTP call that does this work, claimed in
    /// the same transaction; none for work no call with a key does (jobs,
    /// the CLI). See `tre-app`'s `Caller::with_idempotency`.
    pub claim: Option<&'a crate::IdempotencyClaim>,
}

/// The insert of one event into `audit_pending`.
pub(crate) fn pending_insert(record: &AuditRecord<'_>, at: Timestamp) -> Insert {
    Insert::new(
        "INSERT INTO audit_pending (at, actor, action, object_type, object_id, environment_id, details, trace_id)",
        "",
    )
    .row(vec![
        at.0.into(),
        record.actor.into(),
        record.action.into(),
        record.object_type.into(),
        record.object_id.into(),
        record.environment_id.into(),
        record.details.to_string().into(),
        record.trace_id.into(),
    ])
}

/// Writes one event inside the caller's transaction, for the sealer to
/// chain once it commits (see [`Store::commit`]).
pub(crate) async fn append(
    tx: &mut Tx,
    record: AuditRecord<'_>,
    at: Timestamp,
) -> Result<(), StoreError> {
    pending_insert(&record, at).execute(tx).await?;
    // the HTTP call's idempotency key commits with its work
    match record.claim {
        Some(claim) => {
            crate::idempotency::claim_in(tx, claim, record.object_type, record.object_id, at).await
        }
        None => Ok(()),
    }
}

/// Most events one sealing transaction chains.
const SEAL_BATCH: usize = 200;

/// Chains up to [`SEAL_BATCH`] committed pending events; how many it did.
async fn seal_batch(
    pool: &AnyPool,
    backend: Backend,
    turn: &WriteTurn,
) -> Result<usize, StoreError> {
    let mut tx = crate::tx::begin(pool, backend, turn).await?;
    // the head's row lock (SQLite: the write lock BEGIN IMMEDIATE took)
    // makes sealers take turns, in this process and in every other one
    let head = sqlx::query(match backend {
        Backend::Postgres => "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
        Backend::Sqlite => "SELECT seq, hash FROM audit_head WHERE id = 1",
    })
    .fetch_one(&mut *tx)
    .await?;
    let (mut seq, mut prev_hash): (i64, String) = (head.try_get(0)?, head.try_get(1)?);
    let rows = sqlx::query(
        "SELECT id, CAST(0 AS BIGINT) AS seq, at, actor, action, object_type, object_id, environment_id, details, trace_id, \
         '' AS prev_hash, '' AS hash FROM audit_pending ORDER BY id LIMIT $1",
    )
    .bind(SEAL_BATCH as i64)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        tx.rollback().await?;
        return Ok(0);
    }
    let mut events = Vec::with_capacity(rows.len());
    let mut ids = Vec::with_capacity(rows.len());
    for row in &rows {
        ids.push(row.try_get::<i64, _>("id")?.to_string());
        seq += 1;
        let mut event = AuditEvent {
            seq,
            prev_hash: std::mem::take(&mut prev_hash),
            ..event_from_row(row)?
        };
        event.hash = event_hash(
            event.seq,
            event.at,
            &event.actor,
            &event.action,
            &event.object_type,
            &event.object_id,
            &event.environment_id,
            &event.details,
            &event.trace_id,
            &event.prev_hash,
        );
        prev_hash.clone_from(&event.hash);
        events.push(event);
    }
    events
        .iter()
        .fold(
            Insert::new(
                "INSERT INTO audit_events (seq, at, actor, action, object_type, object_id, environment_id, details, trace_id, prev_hash, hash)",
                "",
            ),
            |insert, e| {
                insert.row(vec![
                    e.seq.into(),
                    e.at.into(),
                    e.actor.as_str().into(),
                    e.action.as_str().into(),
                    e.object_type.as_str().into(),
                    e.object_id.as_str().into(),
                    e.environment_id.as_str().into(),
                    e.details.as_str().into(),
                    e.trace_id.as_str().into(),
                    e.prev_hash.as_str().into(),
                    e.hash.as_str().into(),
                ])
            },
        )
        .execute(&mut tx)
        .await?;
    // by id, never by range: an id below the newest may belong to a
    // transaction that commits only now, and is not sealed yet
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM audit_pending WHERE id IN ({})",
        ids.join(", ")
    )))
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(prev_hash)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(events.len())
}

/// Seals until nothing committed is pending.
async fn seal_all(pool: &AnyPool, backend: Backend, turn: &WriteTurn) -> Result<usize, StoreError> {
    // most calls find nothing: ask without the head's lock first
    let pending = sqlx::query("SELECT 1 FROM audit_pending LIMIT 1")
        .fetch_optional(pool)
        .await?;
    if pending.is_none() {
        return Ok(0);
    }
    let mut sealed = 0;
    loop {
        let n = seal_batch(pool, backend, turn).await?;
        sealed += n;
        if n < SEAL_BATCH {
            return Ok(sealed);
        }
    }
}

/// The process's sealer task, shared by the clones of a [`Store`].
#[derive(Debug, Default)]
pub(crate) struct Sealer {
    wake: Notify,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// How often a sealer looks for events nobody woke it for (left by a
/// process that died between its commit and its sealing).
const SEAL_TICK: Duration = Duration::from_secs(1);

/// How long a woken sealer waits for more commits before sealing.
const SEAL_GATHER: Duration = Duration::from_millis(20);

async fn seal_loop(pool: AnyPool, backend: Backend, turn: WriteTurn, sealer: Weak<Sealer>) {
    loop {
        {
            // ends within a tick of the last Store clone going away
            let Some(sealer) = sealer.upgrade() else {
                return;
            };
            let _ = tokio::time::timeout(SEAL_TICK, sealer.wake.notified()).await;
        }
        // a commit under load is followed by others: seal them together
        tokio::time::sleep(SEAL_GATHER).await;
        if pool.is_closed() {
            return;
        }
        if let Err(e) = seal_all(&pool, backend, &turn).await {
            if pool.is_closed() {
                return;
            }
            tracing::warn!(error = %e, "audit sealing failed; retrying on the next commit or tick");
        }
    }
}

impl Store {
    /// Commits a command's transaction and wakes the sealer for its audit
    /// event.
    pub(crate) async fn commit(&self, tx: Tx) -> Result<(), StoreError> {
        tx.commit().await?;
        self.audit_written();
        Ok(())
    }

    /// Wakes this process's sealer, if it runs, for events just committed
    /// (a commit never starts one: see [`Store::start_audit_sealer`]).
    pub(crate) fn audit_written(&self) {
        self.sealer.wake.notify_one();
    }

    /// Starts this process's audit sealer on the current tokio runtime
    /// (once: again only when the runtime it ran on ended). The binary
    /// starts it when it opens the store; it then chains what every commit
    /// here wakes it for, and once a second what other processes left. It
    /// stops within a tick of the last clone of the store going away.
    /// Without one, events wait in `audit_pending` for a reader of the log
    /// (each seals first), another process's sealer, or [`Store::close`].
    pub fn start_audit_sealer(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut task = self.sealer.task.lock().unwrap_or_else(|e| e.into_inner());
        if task.as_ref().is_none_or(|t| t.is_finished()) {
            *task = Some(runtime.spawn(seal_loop(
                self.pool.clone(),
                self.backend,
                self.write_turn.clone(),
                Arc::downgrade(&self.sealer),
            )));
        }
    }

    /// Chains every committed pending event now; how many. Readers of the
    /// log call it first, so they see every event committed before.
    pub async fn seal_audit(&self) -> Result<usize, StoreError> {
        seal_all(&self.pool, self.backend, &self.write_turn).await
    }
}

/// The result of checking the whole chain.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// Events checked before the first break (all of them when intact).
    pub checked: u64,
    /// The newest event the head records.
    pub head_seq: i64,
    /// The first break, if any.
    pub broken: Option<ChainBreak>,
}

/// Which audit events to list.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Events of one environment (its admins may read them); `None` = the
    /// whole log (platform admins only).
    pub environment: Option<EnvironmentId>,
    /// Only events about this object id.
    pub object_id: Option<String>,
    /// Only events after this sequence number (for paging).
    pub after_seq: i64,
    /// At most this many (capped at 1000). Default 100 when 0.
    pub limit: u32,
}

fn event_from_row(row: &sqlx::any::AnyRow) -> Result<AuditEvent, StoreError> {
    Ok(AuditEvent {
        seq: row.try_get("seq")?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        object_type: row.try_get("object_type")?,
        object_id: row.try_get("object_id")?,
        environment_id: row.try_get("environment_id")?,
        details: row.try_get("details")?,
        trace_id: row.try_get("trace_id")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

const EVENT_COLUMNS: &str = "seq, at, actor, action, object_type, object_id, environment_id, details, trace_id, prev_hash, hash";

impl Store {
    /// Seals what is pending, then walks the whole chain in order and
    /// reports the first broken link. Events appended while it runs are
    /// beyond the head it read first and are left for the next run.
    pub async fn verify_audit(&self) -> Result<AuditReport, StoreError> {
        self.seal_audit().await?;
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        let head_seq: i64 = head.try_get(0)?;
        let head_hash: String = head.try_get(1)?;
        let mut verifier = ChainVerifier::default();
        let mut checked = 0;
        let mut after = 0i64;
        loop {
            let rows = sqlx::query(
                "SELECT seq, at, actor, action, object_type, object_id, environment_id, details, trace_id, prev_hash, hash \
                 FROM audit_events WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT 1000",
            )
            .bind(after)
            .bind(head_seq)
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let event = event_from_row(row)?;
                if let Err(broken) = verifier.push(&event) {
                    return Ok(AuditReport {
                        checked,
                        head_seq,
                        broken: Some(broken),
                    });
                }
                checked += 1;
                after = event.seq;
            }
        }
        let broken = verifier.finish(head_seq, &head_hash).err();
        Ok(AuditReport {
            checked,
            head_seq,
            broken,
        })
    }

    /// Audit events, oldest first: of environment `environment` (every
    /// environment when none), as `query` narrows them; sealed first, so
    /// the list ends with the newest event.
    pub async fn audit_event_rows(
        &self,
        environment: Option<&EnvironmentId>,
        query: &AuditQuery,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let environment_id = environment.map(|id| id.0.clone());
        self.seal_audit().await?;
        let limit = i64::from(if query.limit == 0 {
            100
        } else {
            query.limit.min(1000)
        });
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM audit_events \
             WHERE seq > $1 AND ($2 = '' OR environment_id = $2) AND ($3 = '' OR object_id = $3) \
             ORDER BY seq LIMIT $4"
        ));
        let rows = sqlx::query(sql)
            .bind(query.after_seq)
            .bind(environment_id.unwrap_or_default())
            .bind(query.object_id.clone().unwrap_or_default())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }
}
