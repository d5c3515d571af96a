//! Access requests: drafts, submission, stage decisions, withdrawal,
//! revocation and expiry, each in one transaction with its audit event and
//! outbox jobs.

use serde::Serialize;
use serde_json::json;
use sqlx::{Executor, Row};
use tre_domain::{
    AccessRequest, Action, Actor, CohortCount, Decision, DecisionInput, DomainError, EnvironmentId,
    NewRequest, Object, RequestCommand, RequestContext, RequestId, RequestState, UserId, Verdict,
    authorize, request_view,
};

use crate::audit::AuditRecord;
use crate::writes::{Guard, Insert, Statement, Writes};
use crate::{Caller, Store, StoreError, docs, new_id, now, outbox};

/// One line of a request's history: a state change or a decision, in order.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct HistoryEntry {
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub details: serde_json::Value,
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
        at: tre_domain::Timestamp(row.try_get("decided_at")?),
    })
}

fn parse_verdict(s: &str) -> Option<Verdict> {
    [Verdict::Approve, Verdict::Reject, Verdict::Return]
        .into_iter()
        .find(|v| v.as_str() == s)
}

/// The request as `caller` may see it ([`request_view`]): every answer
/// that carries a request goes through here.
pub(crate) fn as_seen_by(
    caller: &Caller,
    env: &tre_domain::Environment,
    request: AccessRequest,
) -> Result<AccessRequest, StoreError> {
    let id = request.id.clone();
    request_view(&caller.actor, env, request)
        .map_err(|d| StoreError::denied("request", id.as_str(), d))
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

/// A request as stored: the document exactly as the database holds it,
/// and its version.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) request: AccessRequest,
    pub(crate) version: i64,
    pub(crate) doc: String,
}

/// What a command on a request decides on: the stored request and its
/// environment, each at a version the command's write is guarded by.
pub(crate) struct Loaded {
    /// Whether it came from this process's copies rather than the database.
    cached: bool,
    pub(crate) stored: std::sync::Arc<Stored>,
    pub(crate) env: std::sync::Arc<tre_domain::Environment>,
    env_version: i64,
}

impl Store {
    /// The request and its environment for a command: as this store last
    /// wrote or read them when it still has them, else read in one round
    /// trip. Either way the command's update is guarded by the request's
    /// version and exact document and the environment's version, so a copy
    /// that is no longer current fails the write (and the command is redone
    /// from a fresh read) instead of deciding on old facts.
    async fn load_for_command(
        &self,
        id: &RequestId,
        use_cache: bool,
    ) -> Result<Loaded, StoreError> {
        if use_cache
            && let Some(stored) = self.requests.get(id.as_str())
            && let Some((env, env_version)) = self
                .environments
                .get(stored.request.environment_id.as_str())
        {
            return Ok(Loaded {
                cached: true,
                stored,
                env,
                env_version,
            });
        }
        let loaded = self.read_request_in_environment(id).await?;
        self.environments.put(
            loaded.env.id.0.clone(),
            (loaded.env.clone(), loaded.env_version),
        );
        self.requests.put(id.0.clone(), loaded.stored.clone());
        Ok(loaded)
    }

    /// A request and the environment it belongs to, as stored, in one
    /// round trip.
    pub(crate) async fn read_request_in_environment(
        &self,
        id: &RequestId,
    ) -> Result<Loaded, StoreError> {
        let row = sqlx::query(
            "SELECT r.doc, r.version, e.doc, e.version FROM requests r JOIN environments e ON e.id = r.environment_id WHERE r.id = $1",
        )
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("request", id.as_str()))?;
        let doc: String = row.try_get(0)?;
        let request: AccessRequest = docs::decode("request", id.as_str(), &doc)?;
        let env: tre_domain::Environment = docs::decode(
            "environment",
            request.environment_id.as_str(),
            &row.try_get::<String, _>(2)?,
        )?;
        Ok(Loaded {
            cached: false,
            stored: std::sync::Arc::new(Stored {
                request,
                version: row.try_get(1)?,
                doc,
            }),
            env: std::sync::Arc::new(env),
            env_version: row.try_get(3)?,
        })
    }

    fn forget_request(&self, id: &RequestId, env: &EnvironmentId) {
        self.requests.forget(id.as_str());
        self.environments.forget(env.as_str());
    }

    pub(crate) async fn load_request<'e, E>(
        &self,
        executor: E,
        id: &RequestId,
    ) -> Result<(AccessRequest, i64), StoreError>
    where
        E: Executor<'e, Database = sqlx::Any>,
    {
        docs::load(
            executor,
            "SELECT doc, version FROM requests WHERE id = $1",
            "request",
            id.as_str(),
        )
        .await
    }

    async fn stage_decisions(&self, request: &AccessRequest) -> Result<Vec<Decision>, StoreError> {
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

    /// Checks that collaborators exist and may use the environment (when
    /// they are set, and again at submission: a collaborator taken out of
    /// the environment meanwhile stops the submission). A name that is no
    /// user gets the same answer as a user who may not use the environment,
    /// so nobody learns from it who has an account.
    async fn check_collaborators(
        &self,
        request: &AccessRequest,
        env: &tre_domain::Environment,
    ) -> Result<(), StoreError> {
        for id in &request.collaborators {
            let may_use = self
                .user(id.as_str())
                .await?
                .is_some_and(|user| env.is_authorized_user(&user.actor()));
            if !may_use {
                return Err(DomainError::Invalid {
                    field: "collaborators".into(),
                    message: format!("{id} is not an authorized user of the environment"),
                }
                .into());
            }
        }
        Ok(())
    }

    /// Creates a draft request (authorized users of the environment).
    ///
    /// The environment is checked as the store last read it (a cached
    /// document), and the request is written only if the environment is
    /// still at that version; if it changed, it is read again and the whole
    /// check redone. So a draft is never created against an environment
    /// that has since closed, changed its members or its inventory.
    pub async fn create_request(
        &self,
        caller: &Caller,
        environment_id: &EnvironmentId,
        new: NewRequest,
    ) -> Result<AccessRequest, StoreError> {
        self.retrying(|| async {
            let (env, version, cached) = self.cached_environment(environment_id).await?;
            match self
                .create_request_in(caller, &env, version, new.clone())
                .await
            {
                Err(e) if e.is_write_conflict() => {
                    self.environments.forget(environment_id.as_str());
                    Err(e)
                }
                // a refusal must rest on the stored environment, never a copy
                Err(_) if cached => {
                    self.environments.forget(environment_id.as_str());
                    let (env, version, _) = self.cached_environment(environment_id).await?;
                    self.create_request_in(caller, &env, version, new.clone())
                        .await
                }
                created => created,
            }
        })
        .await
    }

    async fn create_request_in(
        &self,
        caller: &Caller,
        env: &tre_domain::Environment,
        env_version: i64,
        new: NewRequest,
    ) -> Result<AccessRequest, StoreError> {
        authorize(
            &caller.actor,
            Action::CreateRequest,
            &Object::Environment(env),
        )
        .map_err(|d| StoreError::denied("environment", env.id.as_str(), d))?;
        let at = now();
        let request = AccessRequest::create(RequestId(new_id()), env, &caller.actor.id, new, at)?;
        self.check_collaborators(&request, env).await?;
        let audit = AuditRecord {
            actor: caller.actor.id.as_str(),
            action: "request.create",
            object_type: "request",
            object_id: request.id.as_str(),
            environment_id: env.id.as_str(),
            details: json!({"title": request.title, "collaborators": request.collaborators}),
            trace_id: &caller.trace_id,
            claim: caller.idempotency.as_ref(),
        };
        let unchanged = Statement {
            sql: "SELECT 1 FROM environments WHERE id = $1 AND version = $2",
            args: vec![env.id.as_str().into(), env_version.into()],
        };
        let doc = docs::encode(&request);
        let row = Insert::new(
            "INSERT INTO requests (id, environment_id, owner_id, state, doc, version, created_at, updated_at)",
            "",
        )
        .row(vec![
            request.id.as_str().into(),
            env.id.as_str().into(),
            request.owner.as_str().into(),
            request.state.name().into(),
            doc.clone().into(),
            1.into(),
            at.0.into(),
            at.0.into(),
        ]);
        self.write(
            Writes::new(audit, at)
                .guard(Guard::Finds(unchanged), format!("environment {}", env.id))
                .insert(row)
                .insert(participants(&request)),
        )
        .await?;
        self.requests.put(
            request.id.0.clone(),
            std::sync::Arc::new(Stored {
                request: request.clone(),
                version: 1,
                doc,
            }),
        );
        Ok(request)
    }

    /// A request the caller may see. Callers who may see the request but not
    /// its data selection (environment admins who do not review) get the
    /// cohort replaced by `{"redacted": true}` and no collections.
    pub async fn request(
        &self,
        caller: &Caller,
        id: &RequestId,
    ) -> Result<AccessRequest, StoreError> {
        let loaded = self.read_request_in_environment(id).await?;
        as_seen_by(caller, &loaded.env, loaded.stored.request.clone())
    }

    /// Applies a command of the owner (update, collaborators, submit,
    /// withdraw), a reviewer (decide) or an environment admin (revoke).
    pub async fn request_command(
        &self,
        caller: &Caller,
        id: &RequestId,
        command: RequestCommand,
    ) -> Result<AccessRequest, StoreError> {
        let action = match command {
            RequestCommand::Update(_)
            | RequestCommand::SetCollaborators(_)
            | RequestCommand::Submit => Action::EditRequest,
            RequestCommand::Withdraw => Action::WithdrawRequest,
            RequestCommand::Decide(_) => Action::DecideRequest,
            RequestCommand::Revoke { .. } => Action::RevokeRequest,
            RequestCommand::Expire
            | RequestCommand::RecordCohortCount { .. }
            | RequestCommand::Retally { .. } => {
                return Err(StoreError::Forbidden(tre_domain::Denied {
                    reason: "only the job runtime expires requests, counts cohorts and counts votes again",
                    conceal: false,
                }));
            }
        };
        let (next, env) = self
            .run_request_command(Some((caller, action)), &caller.trace_id, id, command)
            .await?;
        as_seen_by(caller, &env, next)
    }

    /// Records a reviewer's decision on the request's current stage.
    pub async fn decide(
        &self,
        caller: &Caller,
        id: &RequestId,
        input: DecisionInput,
    ) -> Result<AccessRequest, StoreError> {
        self.request_command(caller, id, RequestCommand::Decide(input))
            .await
    }

    /// [`Store::decide`] with the stage named by its id or its index: an
    /// id is resolved against the request's pipeline once the caller may
    /// decide the request (stage ids are not told to anyone else).
    pub async fn decide_stage(
        &self,
        caller: &Caller,
        id: &RequestId,
        stage: &tre_domain::StageRef,
        mut input: DecisionInput,
    ) -> Result<AccessRequest, StoreError> {
        input.stage = match stage {
            tre_domain::StageRef::Index(i) => *i,
            tre_domain::StageRef::Id(_) => {
                let loaded = self.read_request_in_environment(id).await?;
                authorize(
                    &caller.actor,
                    Action::DecideRequest,
                    &Object::Request {
                        environment: &loaded.env,
                        request: &loaded.stored.request,
                    },
                )
                .map_err(|d| StoreError::denied("request", id.as_str(), d))?;
                loaded.env.pipeline.stage_index(stage, "stage")?
            }
        };
        self.decide(caller, id, input).await
    }

    /// Moves an approved request past its end date to `expired` (the
    /// scheduler's job; acts as `system`).
    pub async fn expire_request(
        &self,
        id: &RequestId,
        trace_id: &str,
    ) -> Result<AccessRequest, StoreError> {
        self.run_request_command(None, trace_id, id, RequestCommand::Expire)
            .await
            .map(|(request, _)| request)
    }

    /// Records the `count_cohort` job's outcome for submission `round`: the
    /// request goes to review, or back to its owner (acts as `system`).
    pub async fn record_cohort_count(
        &self,
        id: &RequestId,
        round: u32,
        count: CohortCount,
        trace_id: &str,
    ) -> Result<AccessRequest, StoreError> {
        self.run_request_command(
            None,
            trace_id,
            id,
            RequestCommand::RecordCohortCount { round, count },
        )
        .await
        .map(|(request, _)| request)
    }

    /// Counts the votes of `stage` of submission `round` again after the
    /// environment's reviewers changed (the `retally_stage` job; acts as
    /// `system`): closes it as returned when its rule can no longer pass.
    /// A conflict when it still can; refused when it is no longer open.
    pub async fn retally_request(
        &self,
        id: &RequestId,
        round: u32,
        stage: usize,
        trace_id: &str,
    ) -> Result<AccessRequest, StoreError> {
        self.run_request_command(None, trace_id, id, RequestCommand::Retally { round, stage })
            .await
            .map(|(request, _)| request)
    }

    /// Runs a command; returns the new request (unredacted) and the
    /// environment it was decided in.
    async fn run_request_command(
        &self,
        authorized: Option<(&Caller, Action)>,
        trace_id: &str,
        id: &RequestId,
        command: RequestCommand,
    ) -> Result<(AccessRequest, std::sync::Arc<tre_domain::Environment>), StoreError> {
        self.retrying(|| async {
            let loaded = self.load_for_command(id, true).await?;
            let (cached, env_id) = (loaded.cached, loaded.env.id.clone());
            match self
                .request_command_once(authorized, trace_id, id, &command, loaded)
                .await
            {
                // a refusal must rest on what is stored, never on a copy
                Err(e) if cached && !e.is_write_conflict() => {
                    self.forget_request(id, &env_id);
                    let fresh = self.load_for_command(id, false).await?;
                    self.request_command_once(authorized, trace_id, id, &command, fresh)
                        .await
                }
                done => done,
            }
        })
        .await
    }

    /// One attempt at a request command, deciding on `loaded`.
    async fn request_command_once(
        &self,
        authorized: Option<(&Caller, Action)>,
        trace_id: &str,
        id: &RequestId,
        command: &RequestCommand,
        loaded: Loaded,
    ) -> Result<(AccessRequest, std::sync::Arc<tre_domain::Environment>), StoreError> {
        let system = Actor::user("system");
        let actor = authorized.map_or(&system, |(c, _)| &c.actor);
        // who started the jobs this command queues (empty: the system)
        let creator: &str = authorized.map_or("", |(c, _)| c.actor.id.as_str());
        let collaborators_changed = matches!(command, RequestCommand::SetCollaborators(_));
        let Loaded {
            stored,
            env,
            env_version,
            ..
        } = loaded;
        let (request, version) = (&stored.request, stored.version);
        if let (Some((caller, Action::DecideRequest)), RequestCommand::Decide(input)) =
            (authorized, command)
        {
            // A reviewer of this environment who may see the request is
            // told plainly that the stage closed (a conflict), before the
            // current-stage rule would refuse them.
            let object = Object::Request {
                environment: &env,
                request,
            };
            if env.pipeline.is_reviewer(&caller.actor.id)
                && !request.is_requester(&caller.actor.id)
                && authorize(&caller.actor, Action::ViewRequest, &object).is_ok()
            {
                request.check_stage_open(input.stage, &env.pipeline)?;
            }
        }
        if let Some((caller, action)) = authorized {
            authorize(
                &caller.actor,
                action,
                &Object::Request {
                    environment: &env,
                    request,
                },
            )
            .map_err(|d| StoreError::denied("request", id.as_str(), d))?;
        }
        let stage_decisions = self.stage_decisions(request).await?;
        let at = now();
        let transition = request.apply(
            command.clone(),
            RequestContext {
                environment: &env,
                actor: &actor.id,
                now: at,
                stage_decisions: &stage_decisions,
            },
        )?;
        let next = transition.request;
        if collaborators_changed || matches!(command, RequestCommand::Submit) {
            self.check_collaborators(&next, &env).await?;
        }
        let mut details = json!({"from": request.state, "to": next.state, "round": next.round});
        if matches!(command, RequestCommand::Submit) || next.state == RequestState::Approved {
            // what was asked and approved, bound into the log, not shown
            details["selection"] = json!(next.selection_digest());
        }
        if let RequestCommand::RecordCohortCount { count, .. } = command {
            details["cohort"] = json!(match (count, next.state) {
                (CohortCount::Failed(_), _) => "not counted",
                (_, RequestState::InRevision) => "below the environment's minimum",
                _ => "at or above the environment's minimum",
            });
            if let CohortCount::Failed(reason) = count {
                details["reason"] = json!(reason);
            }
        }
        if let Some(d) = &transition.decision {
            details["decision"] = json!({
                "stage": d.stage, "stage_id": d.stage_id, "decision": d.verdict,
                "final": d.is_final, "comment": d.comment,
            });
        }
        if let RequestCommand::Revoke { reason } = command {
            details["reason"] = json!(reason);
        }
        let audit = AuditRecord {
            actor: actor.id.as_str(),
            action: command.action(),
            object_type: "request",
            object_id: id.as_str(),
            environment_id: env.id.as_str(),
            details,
            trace_id,
            claim: authorized.and_then(|(c, _)| c.idempotency.as_ref()),
        };
        let next_doc = docs::encode(&next);
        let update = Statement {
            sql: "UPDATE requests SET state = $1, doc = $2, version = version + 1, updated_at = $3 \
                  WHERE id = $4 AND version = $5 AND doc = $6 \
                  AND EXISTS (SELECT 1 FROM environments WHERE id = $7 AND version = $8)",
            args: vec![
                next.state.name().into(),
                next_doc.clone().into(),
                at.0.into(),
                id.as_str().into(),
                version.into(),
                stored.doc.clone().into(),
                env.id.as_str().into(),
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
        if collaborators_changed {
            writes = writes
                .statement(Statement {
                    sql: "DELETE FROM request_participants WHERE request_id = $1",
                    args: vec![id.as_str().into()],
                })
                .insert(participants(&next));
        }
        let written = self
            .write(writes.insert(outbox::insert(&transition.effects, creator, at)))
            .await;
        if let Err(e) = written {
            if e.is_write_conflict() {
                self.forget_request(id, &env.id);
            }
            return Err(e);
        }
        self.requests.put(
            id.0.clone(),
            std::sync::Arc::new(Stored {
                request: next.clone(),
                version: version + 1,
                doc: next_doc,
            }),
        );
        Ok((next, env))
    }

    /// Every decision of a request (all rounds), in order.
    pub async fn decisions(
        &self,
        caller: &Caller,
        id: &RequestId,
    ) -> Result<Vec<Decision>, StoreError> {
        self.request(caller, id).await?;
        self.system_decisions(id).await
    }

    /// Every decision of a request, for the job runtime (no authorization:
    /// never serve a person's call with it).
    pub async fn system_decisions(&self, id: &RequestId) -> Result<Vec<Decision>, StoreError> {
        let rows = sqlx::query(
            "SELECT round, stage, stage_id, reviewer_id, verdict, is_final, comment, decided_at FROM decisions \
             WHERE request_id = $1 ORDER BY round, stage, decided_at, reviewer_id",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| decision_from_row(row, id)).collect()
    }

    /// The request's history from the audit log: every state change and
    /// decision, with actor and time, in order.
    pub async fn request_history(
        &self,
        caller: &Caller,
        id: &RequestId,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        self.request(caller, id).await?;
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
