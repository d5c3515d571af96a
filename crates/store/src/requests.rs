//! Access requests as stored: a request with its environment, read in one
//! round trip; a new request and a command's outcome written atomically
//! (the new document under a guard on the versions the command decided
//! on, its decision, its participants, its jobs and its audit event); its
//! decisions and its history. Who may do what to a request, and what a
//! command does, is the application's (`tre-app`) and the domain's.

use std::sync::Arc;

use serde::Serialize;
use sqlx::Row;
use tre_domain::{
    AccessRequest, Decision, Environment, EnvironmentId, RequestId, RequestState,
    RequestTransition, Timestamp, UserId, Verdict,
};

use crate::audit::AuditRecord;
use crate::writes::{Guard, Insert, Statement, Writes};
use crate::{Store, StoreError, docs, outbox};

/// One line of a request's history: a state change or a decision, in order.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct HistoryEntry {
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub details: serde_json::Value,
}

/// A request as stored: the document exactly as the database holds it,
/// and its version. A command's write is guarded by both.
#[derive(Debug)]
pub struct StoredRequest {
    pub request: AccessRequest,
    pub version: i64,
    pub doc: String,
}

/// A request and the environment it belongs to, as stored, each at the
/// version a command's write on the request is guarded by.
#[derive(Debug, Clone)]
pub struct RequestInEnvironment {
    pub stored: Arc<StoredRequest>,
    pub env: Arc<Environment>,
    pub env_version: i64,
}

/// What a command on a request writes: its outcome (`transition`),
/// decided on `before` in the environment at `env_version`.
pub struct RequestChange<'a> {
    pub before: &'a StoredRequest,
    pub environment_id: &'a EnvironmentId,
    pub env_version: i64,
    pub transition: &'a RequestTransition,
    /// Whether the owner and collaborators are written again.
    pub participants_changed: bool,
    /// Who started the jobs the change queues (empty: the system).
    pub created_by: &'a str,
    pub audit: AuditRecord<'a>,
    pub at: Timestamp,
}

/// A stored decision; an unknown verdict is corrupt data, never a guess.
fn decision_from_row(row: &sqlx::any::AnyRow, request: &RequestId) -> Result<Decision, StoreError> {
    let verdict: String = row.try_get("verdict")?;
    Ok(Decision {
        round: row.try_get::<i64, _>("round")? as u32,
        stage: row.try_get::<i64, _>("stage")? as usize,
        stage_id: row.try_get("stage_id")?,
        reviewer: UserId(row.try_get("reviewer_id")?),
        verdict: parse_verdict(&verdict).ok_or_else(|| StoreError::Corrupt {
            object: "decision",
            id: request.to_string(),
            message: format!("unknown verdict {verdict:?}"),
        })?,
        is_final: row.try_get::<i64, _>("is_final")? != 0,
        comment: row.try_get("comment")?,
        at: Timestamp(row.try_get("decided_at")?),
    })
}

fn parse_verdict(s: &str) -> Option<Verdict> {
    [Verdict::Approve, Verdict::Reject, Verdict::Return]
        .into_iter()
        .find(|v| v.as_str() == s)
}

/// The insert of who takes part in a request: owner and collaborators.
fn participants(request: &AccessRequest) -> Insert {
    std::iter::once((&request.owner, "owner"))
        .chain(request.collaborators.iter().map(|c| (c, "collaborator")))
        .fold(
            Insert::new(
                "INSERT INTO request_participants (request_id, user_id, role)",
                "",
            ),
            |insert, (user, role)| {
                insert.row(vec![
                    request.id.as_str().into(),
                    user.as_str().into(),
                    role.into(),
                ])
            },
        )
}

impl Store {
    /// A request and the environment it belongs to, as stored, in one
    /// round trip.
    pub async fn request_in_environment(
        &self,
        id: &RequestId,
    ) -> Result<RequestInEnvironment, StoreError> {
        let row = sqlx::query(
            "SELECT r.doc, r.version, e.doc, e.version FROM requests r JOIN environments e ON e.id = r.environment_id WHERE r.id = $1",
        )
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("request", id.as_str()))?;
        let doc: String = row.try_get(0)?;
        let request: AccessRequest = docs::decode("request", id.as_str(), &doc)?;
        let env: Environment = docs::decode(
            "environment",
            request.environment_id.as_str(),
            &row.try_get::<String, _>(2)?,
        )?;
        Ok(RequestInEnvironment {
            stored: Arc::new(StoredRequest {
                request,
                version: row.try_get(1)?,
                doc,
            }),
            env: Arc::new(env),
            env_version: row.try_get(3)?,
        })
    }

    /// The decisions on the request's open stage in its current round
    /// (none unless it is in review).
    pub async fn open_stage_decisions(
        &self,
        request: &AccessRequest,
    ) -> Result<Vec<Decision>, StoreError> {
        let RequestState::InReview { stage } = request.state else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(
            "SELECT round, stage, stage_id, reviewer_id, verdict, is_final, comment, decided_at FROM decisions \
             WHERE request_id = $1 AND round = $2 AND stage = $3 ORDER BY decided_at, reviewer_id",
        )
        .bind(request.id.as_str())
        .bind(i64::from(request.round))
        .bind(stage as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| decision_from_row(row, &request.id))
            .collect()
    }

    /// Writes a new request with its participants and audit event, if the
    /// environment is still at `env_version` (else a write conflict).
    pub async fn insert_request(
        &self,
        request: &AccessRequest,
        env_version: i64,
        audit: AuditRecord<'_>,
        at: Timestamp,
    ) -> Result<StoredRequest, StoreError> {
        let env = &request.environment_id;
        let unchanged = Statement {
            sql: "SELECT 1 FROM environments WHERE id = $1 AND version = $2",
            args: vec![env.as_str().into(), env_version.into()],
        };
        let doc = docs::encode(request);
        let row = Insert::new(
            "INSERT INTO requests (id, environment_id, owner_id, state, doc, version, created_at, updated_at)",
            "",
        )
        .row(vec![
            request.id.as_str().into(),
            env.as_str().into(),
            request.owner.as_str().into(),
            request.state.name().into(),
            doc.clone().into(),
            1.into(),
            at.0.into(),
            at.0.into(),
        ]);
        self.write(
            Writes::new(audit, at)
                .guard(Guard::Finds(unchanged), format!("environment {env}"))
                .insert(row)
                .insert(participants(request)),
        )
        .await?;
        Ok(StoredRequest {
            request: request.clone(),
            version: 1,
            doc,
        })
    }

    /// Writes a command's outcome: the next request, if the stored one is
    /// still exactly `before` and its environment still at `env_version`
    /// (else a write conflict); its decision, its participants when they
    /// changed, its effects as jobs and its audit event, atomically.
    pub async fn save_request_change(
        &self,
        change: RequestChange<'_>,
    ) -> Result<StoredRequest, StoreError> {
        let RequestChange {
            before,
            environment_id,
            env_version,
            transition,
            participants_changed,
            created_by,
            audit,
            at,
        } = change;
        let next = &transition.request;
        let id = &next.id;
        let next_doc = docs::encode(next);
        let update = Statement {
            sql: "UPDATE requests SET state = $1, doc = $2, version = version + 1, updated_at = $3 \
                  WHERE id = $4 AND version = $5 AND doc = $6 \
                  AND EXISTS (SELECT 1 FROM environments WHERE id = $7 AND version = $8)",
            args: vec![
                next.state.name().into(),
                next_doc.clone().into(),
                at.0.into(),
                id.as_str().into(),
                before.version.into(),
                before.doc.clone().into(),
                environment_id.as_str().into(),
                env_version.into(),
            ],
        };
        let mut writes =
            Writes::new(audit, at).guard(Guard::Changes(update), format!("request {id}"));
        if let Some(d) = &transition.decision {
            writes = writes.insert(
                Insert::new(
                    "INSERT INTO decisions (request_id, round, stage, stage_id, reviewer_id, verdict, is_final, comment, decided_at)",
                    "",
                )
                .row(vec![
                    id.as_str().into(),
                    i64::from(d.round).into(),
                    (d.stage as i64).into(),
                    d.stage_id.clone().into(),
                    d.reviewer.as_str().into(),
                    d.verdict.as_str().into(),
                    i64::from(d.is_final).into(),
                    d.comment.clone().into(),
                    d.at.0.into(),
                ]),
            );
        }
        if participants_changed {
            writes = writes
                .statement(Statement {
                    sql: "DELETE FROM request_participants WHERE request_id = $1",
                    args: vec![id.as_str().into()],
                })
                .insert(participants(next));
        }
        self.write(writes.insert(outbox::insert(&transition.effects, created_by, at)))
            .await?;
        Ok(StoredRequest {
            request: next.clone(),
            version: before.version + 1,
            doc: next_doc,
        })
    }

    /// Every decision of a request (all rounds), in order.
    pub async fn request_decisions(&self, id: &RequestId) -> Result<Vec<Decision>, StoreError> {
        let rows = sqlx::query(
            "SELECT round, stage, stage_id, reviewer_id, verdict, is_final, comment, decided_at FROM decisions \
             WHERE request_id = $1 ORDER BY round, stage, decided_at, reviewer_id",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| decision_from_row(row, id)).collect()
    }

    /// The request's history from the audit log (every event committed
    /// before the call, sealed first): every state change and decision,
    /// with actor and time, in order.
    pub async fn request_events(&self, id: &RequestId) -> Result<Vec<HistoryEntry>, StoreError> {
        self.seal_audit().await?;
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, details FROM audit_events WHERE object_type = 'request' AND object_id = $1 ORDER BY seq",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let details: String = row.try_get("details")?;
                Ok(HistoryEntry {
                    seq: row.try_get("seq")?,
                    at: row.try_get("at")?,
                    actor: row.try_get("actor")?,
                    action: row.try_get("action")?,
                    details: serde_json::from_str(&details)
                        .unwrap_or(serde_json::Value::String(details)),
                })
            })
            .collect()
    }
}
