//! Appending to and verifying the hash-chained audit log.

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use tre_domain::audit::{AuditEvent, ChainBreak, ChainVerifier, event_hash};
use tre_domain::{Action, EnvironmentId, Object, Timestamp, authorize};

use crate::{Caller, Store, StoreError, Tx};

/// What an audit event says happened.
pub(crate) struct AuditRecord<'a> {
    pub(crate) actor: &'a str,
    pub(crate) action: &'a str,
    pub(crate) object_type: &'static str,
    pub(crate) object_id: &'a str,
    pub(crate) environment_id: &'a str,
    pub(crate) details: Value,
    pub(crate) trace_id: &'a str,
}

/// Appends one event to the chain inside the caller's transaction. Called
/// last in every command: the head row it updates is the one lock all
/// commands share, so it is held only until commit.
pub(crate) async fn append(
    tx: &mut Tx,
    record: AuditRecord<'_>,
    at: Timestamp,
) -> Result<i64, StoreError> {
    let head = sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash")
        .fetch_one(&mut **tx)
        .await?;
    let seq: i64 = head.try_get(0)?;
    let prev_hash: String = head.try_get(1)?;
    let details = record.details.to_string();
    let hash = event_hash(
        seq,
        at.0,
        record.actor,
        record.action,
        record.object_type,
        record.object_id,
        record.environment_id,
        &details,
        record.trace_id,
        &prev_hash,
    );
    // PostgreSQL takes the event and the new head in one statement (one
    // round trip fewer on every command); SQLite in two
    let postgres = tx.backend_name() == "PostgreSQL";
    let insert = if postgres {
        "WITH event AS (INSERT INTO audit_events (seq, at, actor, action, object_type, object_id, environment_id, details, trace_id, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING hash) \
         UPDATE audit_head SET hash = (SELECT hash FROM event) WHERE id = 1"
    } else {
        "INSERT INTO audit_events (seq, at, actor, action, object_type, object_id, environment_id, details, trace_id, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    };
    sqlx::query(insert)
        .bind(seq)
        .bind(at.0)
        .bind(record.actor)
        .bind(record.action)
        .bind(record.object_type)
        .bind(record.object_id)
        .bind(record.environment_id)
        .bind(details)
        .bind(record.trace_id)
        .bind(prev_hash)
        .bind(&hash)
        .execute(&mut **tx)
        .await?;
    if !postgres {
        sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
            .bind(hash)
            .execute(&mut **tx)
            .await?;
    }
    // the HTTP call's idempotency key commits with its work
    crate::idempotency::claim_in(tx, record.object_type, record.object_id, at).await?;
    Ok(seq)
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
    /// Walks the whole chain in order and reports the first broken link.
    /// Events appended while it runs are beyond the head it read first and
    /// are left for the next run.
    pub async fn verify_audit(&self) -> Result<AuditReport, StoreError> {
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

    /// Lists audit events, oldest first, for those allowed to read them.
    pub async fn audit_events(
        &self,
        caller: &Caller,
        query: &AuditQuery,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let environment_id = match &query.environment {
            Some(id) => {
                let (env, _) = self.load_environment(&self.pool, id).await?;
                authorize(&caller.actor, Action::ViewAudit, &Object::Environment(&env))
                    .map_err(|d| StoreError::denied("environment", id.as_str(), d))?;
                Some(id.0.clone())
            }
            None => {
                authorize(&caller.actor, Action::ViewAudit, &Object::Platform)
                    .map_err(StoreError::Forbidden)?;
                None
            }
        };
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
