//! Access requests: drafts, submission, stage decisions, withdrawal,
//! revocation and expiry. Each command authorizes its caller, applies
//! `AccessRequest::apply` and hands the outcome to the store, which writes
//! it with its jobs and its audit event in one transaction.
//!
//! A command decides on the request and its environment as this process
//! last wrote or read them when it still has them; the store's write is
//! guarded by the request's version and exact document and by the
//! environment's version, so a copy that is no longer current fails the
//! write (and the command is redone from a fresh read) instead of deciding
//! on old facts. A refusal always rests on what is stored, never a copy.

use std::sync::Arc;

use serde_json::json;
use tre_domain::disclosure::DisclosureRules;
use tre_domain::summary::{self, SelectionSummary};
use tre_domain::{
    AccessRequest, Action, Actor, CohortCount, Decision, DecisionInput, DomainError, Environment,
    EnvironmentId, NewRequest, Object, RequestCommand, RequestContext, RequestId, RequestState,
    StageRef, authorize,
};
use tre_store::{
    AuditRecord, HistoryEntry, RequestChange, RequestInEnvironment, StoreError, StoredRequest,
};

use crate::{App, Caller, System, Who};

/// What a command on a request decides on, and whether it is this
/// process's copy rather than read now.
struct Loaded {
    cached: bool,
    current: RequestInEnvironment,
}

/// Who runs a command: a person, with the action they are authorized for,
/// or the system.
#[derive(Clone, Copy)]
enum Runner<'a> {
    Person(&'a Caller, Action),
    System(&'a System),
}

impl App {
    /// The request and its environment for a command: this process's
    /// copies when it still has them (`use_copy`), else read in one round
    /// trip.
    async fn load_for_command(&self, id: &RequestId, use_copy: bool) -> Result<Loaded, StoreError> {
        if use_copy
            && let Some(stored) = self.requests.get(id.as_str())
            && let Some((env, env_version)) = self
                .environments
                .get(stored.request.environment_id.as_str())
        {
            return Ok(Loaded {
                cached: true,
                current: RequestInEnvironment {
                    stored,
                    env,
                    env_version,
                },
            });
        }
        let current = self.store.request_in_environment(id).await?;
        self.environments.put(
            current.env.id.0.clone(),
            (current.env.clone(), current.env_version),
        );
        self.requests.put(id.0.clone(), current.stored.clone());
        Ok(Loaded {
            cached: false,
            current,
        })
    }

    fn forget_request(&self, id: &RequestId, env: &EnvironmentId) {
        self.requests.forget(id.as_str());
        self.environments.forget(env.as_str());
    }

    /// An environment as this process read it in the last 10 s, with its
    /// version and whether it is that copy (rather than read now): for
    /// commands whose writes are guarded by that version.
    async fn cached_environment(
        &self,
        id: &EnvironmentId,
    ) -> Result<(Arc<Environment>, i64, bool), StoreError> {
        if let Some((env, version)) = self.environments.get(id.as_str()) {
            return Ok((env, version, true));
        }
        let (env, version) = self.store.environment_with_version(id).await?;
        let env = Arc::new(env);
        self.environments.put(id.0.clone(), (env.clone(), version));
        Ok((env, version, false))
    }

    /// Checks that collaborators exist and may use the environment (when
    /// they are set, and again at submission: a collaborator taken out of
    /// the environment meanwhile stops the submission). A name that is no
    /// user gets the same answer as a user who may not use the environment,
    /// so nobody learns from it who has an account.
    async fn check_collaborators(
        &self,
        request: &AccessRequest,
        env: &Environment,
    ) -> Result<(), StoreError> {
        for id in &request.collaborators {
            let may_use = self
                .store
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
    /// The environment is checked as this process last read it, and the
    /// request is written only if the environment is still at that
    /// version; if it changed, it is read again and the whole check redone.
    /// So a draft is never created against an environment that has since
    /// closed, changed its members or its inventory.
    pub async fn create_request(
        &self,
        caller: &Caller,
        environment_id: &EnvironmentId,
        new: NewRequest,
    ) -> Result<AccessRequest, StoreError> {
        self.store
            .retrying(|| async {
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
        env: &Environment,
        env_version: i64,
        new: NewRequest,
    ) -> Result<AccessRequest, StoreError> {
        authorize(
            &caller.actor,
            Action::CreateRequest,
            &Object::Environment(env),
        )
        .map_err(|d| StoreError::denied("environment", env.id.as_str(), d))?;
        let at = tre_store::now();
        let request = AccessRequest::create(
            RequestId(tre_store::new_id()),
            env,
            &caller.actor.id,
            new,
            at,
        )?;
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
        let stored = self
            .store
            .insert_request(&request, env_version, audit, at)
            .await?;
        self.requests.put(request.id.0.clone(), Arc::new(stored));
        Ok(request)
    }

    /// A request as `who` may see it. People who may see the request but
    /// not its data selection (environment admins who do not review) get
    /// the cohort replaced by `{"redacted": true}` and no collections.
    pub async fn request<'a>(
        &self,
        who: impl Into<Who<'a>>,
        id: &RequestId,
    ) -> Result<AccessRequest, StoreError> {
        let current = self.store.request_in_environment(id).await?;
        who.into()
            .sees(&current.env, current.stored.request.clone())
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
            .run_request_command(Runner::Person(caller, action), id, command)
            .await?;
        Who::Person(caller).sees(&env, next)
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

    /// [`App::decide`] with the stage named by its id or its index: an id
    /// is resolved against the request's pipeline once the caller may
    /// decide the request (stage ids are not told to anyone else).
    pub async fn decide_stage(
        &self,
        caller: &Caller,
        id: &RequestId,
        stage: &StageRef,
        mut input: DecisionInput,
    ) -> Result<AccessRequest, StoreError> {
        input.stage = match stage {
            StageRef::Index(i) => *i,
            StageRef::Id(_) => {
                let current = self.store.request_in_environment(id).await?;
                authorize(
                    &caller.actor,
                    Action::DecideRequest,
                    &Object::Request {
                        environment: &current.env,
                        request: &current.stored.request,
                    },
                )
                .map_err(|d| StoreError::denied("request", id.as_str(), d))?;
                current.env.pipeline.stage_index(stage, "stage")?
            }
        };
        self.decide(caller, id, input).await
    }

    /// Moves an approved request past its end date to `expired` (the
    /// scheduler's job).
    pub async fn expire_request(
        &self,
        system: &System,
        id: &RequestId,
    ) -> Result<AccessRequest, StoreError> {
        self.run_request_command(Runner::System(system), id, RequestCommand::Expire)
            .await
            .map(|(request, _)| request)
    }

    /// Records the `count_cohort` job's outcome for submission `round`: the
    /// request goes to review, or back to its owner.
    pub async fn record_cohort_count(
        &self,
        system: &System,
        id: &RequestId,
        round: u32,
        count: CohortCount,
    ) -> Result<AccessRequest, StoreError> {
        self.run_request_command(
            Runner::System(system),
            id,
            RequestCommand::RecordCohortCount { round, count },
        )
        .await
        .map(|(request, _)| request)
    }

    /// Counts the votes of `stage` of submission `round` again after the
    /// environment's reviewers changed (the `retally_stage` job): closes it
    /// as returned when its rule can no longer pass. A conflict when it
    /// still can; refused when it is no longer open.
    pub async fn retally_request(
        &self,
        system: &System,
        id: &RequestId,
        round: u32,
        stage: usize,
    ) -> Result<AccessRequest, StoreError> {
        self.run_request_command(
            Runner::System(system),
            id,
            RequestCommand::Retally { round, stage },
        )
        .await
        .map(|(request, _)| request)
    }

    /// Runs a command; returns the new request (unredacted) and the
    /// environment it was decided in.
    async fn run_request_command(
        &self,
        runner: Runner<'_>,
        id: &RequestId,
        command: RequestCommand,
    ) -> Result<(AccessRequest, Arc<Environment>), StoreError> {
        self.store
            .retrying(|| async {
                let loaded = self.load_for_command(id, true).await?;
                let env_id = loaded.current.env.id.clone();
                match self
                    .request_command_once(runner, id, &command, loaded.current)
                    .await
                {
                    // a refusal must rest on what is stored, never on a copy
                    Err(e) if loaded.cached && !e.is_write_conflict() => {
                        self.forget_request(id, &env_id);
                        let fresh = self.load_for_command(id, false).await?;
                        self.request_command_once(runner, id, &command, fresh.current)
                            .await
                    }
                    done => done,
                }
            })
            .await
    }

    /// One attempt at a request command, deciding on `current`.
    async fn request_command_once(
        &self,
        runner: Runner<'_>,
        id: &RequestId,
        command: &RequestCommand,
        current: RequestInEnvironment,
    ) -> Result<(AccessRequest, Arc<Environment>), StoreError> {
        let system = Actor::user("system");
        let (actor, trace_id, claim) = match runner {
            Runner::Person(caller, _) => (
                &caller.actor,
                caller.trace_id.as_str(),
                caller.idempotency.as_ref(),
            ),
            Runner::System(s) => (&system, s.trace_id.as_str(), None),
        };
        // who started the jobs this command queues (empty: the system)
        let creator: &str = match runner {
            Runner::Person(caller, _) => caller.actor.id.as_str(),
            Runner::System(_) => "",
        };
        let collaborators_changed = matches!(command, RequestCommand::SetCollaborators(_));
        let RequestInEnvironment {
            stored,
            env,
            env_version,
        } = current;
        let request = &stored.request;
        if let (Runner::Person(caller, Action::DecideRequest), RequestCommand::Decide(input)) =
            (runner, command)
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
        if let Runner::Person(caller, action) = runner {
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
        let stage_decisions = self.store.open_stage_decisions(request).await?;
        let at = tre_store::now();
        let transition = request.apply(
            command.clone(),
            RequestContext {
                environment: &env,
                actor: &actor.id,
                now: at,
                stage_decisions: &stage_decisions,
            },
        )?;
        let next = &transition.request;
        if collaborators_changed || matches!(command, RequestCommand::Submit) {
            self.check_collaborators(next, &env).await?;
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
            claim,
        };
        let written = self
            .store
            .save_request_change(RequestChange {
                before: &stored,
                environment_id: &env.id,
                env_version,
                transition: &transition,
                participants_changed: collaborators_changed,
                created_by: creator,
                audit,
                at,
            })
            .await;
        let saved: StoredRequest = match written {
            Ok(saved) => saved,
            Err(e) => {
                if e.is_write_conflict() {
                    self.forget_request(id, &env.id);
                }
                return Err(e);
            }
        };
        self.requests.put(id.0.clone(), Arc::new(saved));
        Ok((transition.request, env))
    }

    /// Every decision of a request (all rounds), in order, for whoever may
    /// see the request.
    pub async fn decisions<'a>(
        &self,
        who: impl Into<Who<'a>>,
        id: &RequestId,
    ) -> Result<Vec<Decision>, StoreError> {
        let who = who.into();
        if let Who::Person(_) = who {
            self.request(who, id).await?;
        }
        self.store.request_decisions(id).await
    }

    /// The request's history from the audit log: every state change and
    /// decision, with actor and time, in order.
    pub async fn request_history(
        &self,
        caller: &Caller,
        id: &RequestId,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        self.request(caller, id).await?;
        self.store.request_events(id).await
    }

    /// The selection summary of the request's current round, for those who
    /// may see the request (owner, collaborators, reviewers, the
    /// environment's admins; the admins without the selection's fields;
    /// the owner and collaborators without any count), released under the
    /// environment's disclosure rules. `None` until the round's cohort is
    /// counted.
    pub async fn selection_summary(
        &self,
        caller: &Caller,
        id: &RequestId,
    ) -> Result<Option<SelectionSummary>, StoreError> {
        let current = self.store.request_in_environment(id).await?;
        let request = Who::Person(caller).sees(&current.env, current.stored.request.clone())?;
        let Some(counts) = self.store.selection_counts(id, request.round).await? else {
            return Ok(None);
        };
        let released = summary::release(
            &counts,
            request.selection.as_ref(),
            &DisclosureRules::of(&current.env.policies),
        );
        // the requesters' counts come from the cohort builder's gate only
        Ok(Some(if request.is_requester(&caller.actor.id) {
            released.without_counts()
        } else {
            released
        }))
    }
}
