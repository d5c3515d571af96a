//! Access requests and their lifecycle.
//!
//! ```text
//! draft --submit--> checking --cohort large enough--> in_review(0) --stage approved--> in_review(1) ... --last stage approved--> approved
//!                   checking --cohort too small, or not countable--> in_revision
//!                   in_review(s) --stage returned--> in_revision --submit--> checking
//!                   in_review(s) --final reject--> rejected
//! draft | checking | in_review | in_revision --withdraw (owner)--> withdrawn
//! approved --revoke (environment admin)--> revoked
//! approved --expire (system, when the duration ends)--> expired
//! ```
//! | state | who moves it out |
//! |---|---|
//! | `draft` | the owner: `submit`, `withdraw` |
//! | `checking` | the `count_cohort` job: `record_cohort_count`; the owner: `withdraw` |
//! | `in_review` | reviewers of the current stage: `decide`; the owner: `withdraw` |
//! | `in_revision` | the owner: `submit` (restarts with the check), `withdraw` |
//! | `approved` | environment admins: `revoke`; the scheduler: `expire` |
//! | `rejected`, `withdrawn`, `revoked`, `expired` | nobody: final |
//!
//! Each submission starts a new *round*; decisions belong to a (round, stage)
//! and every one keeps reviewer, stage, verdict, comment and time.
//!
//! Submission freezes what the request asks for: its collections resolved
//! to fields ([`ResolvedSelection`]), which reviewers see and approve, and
//! which is all a project of it ever receives.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dispense::{ResolvedSelection, resolve};
use crate::{
    DomainError, Effect, Environment, EnvironmentId, EnvironmentState, ProjectId, RequestId,
    StageOutcome, Timestamp, UserId, Vote, cohort, tally,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RequestState {
    Draft,
    /// Submitted: waiting for the `count_cohort` job to count the cohort
    /// against the environment's minimum, before any reviewer sees it.
    Checking,
    /// Waiting on the stage with this index (0-based) of the pipeline.
    InReview {
        stage: usize,
    },
    InRevision,
    Approved,
    Rejected,
    Withdrawn,
    Revoked,
    Expired,
}

impl RequestState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Checking => "checking",
            Self::InReview { .. } => "in_review",
            Self::InRevision => "in_revision",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Withdrawn => "withdrawn",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Rejected | Self::Withdrawn | Self::Revoked | Self::Expired
        )
    }
}

impl fmt::Display for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InReview { stage } => write!(f, "in_review(stage {})", stage + 1),
            other => f.write_str(other.name()),
        }
    }
}

/// What a researcher fills in for a new draft.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    /// 1 to 300 characters, not blank.
    #[schemars(length(min = 1, max = 300), regex(pattern = crate::schema::REQUIRED_TEXT))]
    pub title: String,
    /// Free text, at most 20,000 characters; required to submit.
    #[serde(default)]
    #[schemars(length(max = 20_000), regex(pattern = crate::schema::TEXT))]
    pub purpose: String,
    /// A cohort filter (the `cohort` module's language); `null` selects
    /// everyone.
    #[serde(default)]
    #[schemars(with = "Option<crate::cohort::FilterSchema>")]
    pub cohort: Value,
    #[serde(default, deserialize_with = "crate::schema::unique")]
    pub collections: BTreeSet<String>,
    #[serde(default, deserialize_with = "crate::schema::unique")]
    pub collaborators: BTreeSet<UserId>,
    /// Requested access duration; 0 = not chosen yet (required to submit).
    #[serde(default)]
    pub duration_days: u32,
}

/// A partial edit of a draft or a request in revision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestUpdate {
    #[schemars(length(min = 1, max = 300), regex(pattern = crate::schema::REQUIRED_TEXT))]
    pub title: Option<String>,
    #[schemars(length(max = 20_000), regex(pattern = crate::schema::TEXT))]
    pub purpose: Option<String>,
    #[schemars(with = "Option<crate::cohort::FilterSchema>")]
    pub cohort: Option<Value>,
    #[serde(default, deserialize_with = "crate::schema::unique_optional")]
    pub collections: Option<BTreeSet<String>>,
    pub duration_days: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approve,
    Reject,
    /// Return for revision.
    Return,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Reject => "reject",
            Self::Return => "return",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionInput {
    /// The stage index the reviewer is deciding (guards against deciding a
    /// stage that closed meanwhile).
    pub stage: usize,
    pub verdict: Verdict,
    /// With `reject`: end the request instead of returning it for revision.
    #[serde(default, rename = "final")]
    pub is_final: bool,
    #[serde(default)]
    pub comment: String,
}

/// A recorded decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Decision {
    pub round: u32,
    pub stage: usize,
    pub stage_id: String,
    pub reviewer: UserId,
    /// approve, reject or return (the name the decision's body gives it).
    #[serde(rename = "decision", alias = "verdict")]
    pub verdict: Verdict,
    #[serde(rename = "final")]
    pub is_final: bool,
    pub comment: String,
    pub at: Timestamp,
}

impl Decision {
    pub fn vote(&self) -> Vote {
        match (self.verdict, self.is_final) {
            (Verdict::Approve, _) => Vote::Approve,
            (Verdict::Reject, true) => Vote::Veto,
            _ => Vote::Against,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AccessRequest {
    pub id: RequestId,
    pub environment_id: EnvironmentId,
    pub owner: UserId,
    pub collaborators: BTreeSet<UserId>,
    pub title: String,
    pub purpose: String,
    #[schemars(with = "Option<crate::cohort::FilterSchema>")]
    pub cohort: Value,
    pub collections: BTreeSet<String>,
    pub duration_days: u32,
    #[serde(flatten)]
    pub state: RequestState,
    /// Submissions so far; decisions belong to a round.
    pub round: u32,
    pub created_at: Timestamp,
    pub submitted_at: Option<Timestamp>,
    pub approved_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    /// The inventory version the request was last submitted against.
    pub inventory_version: Option<u32>,
    /// The collections resolved to fields at the last submission: what
    /// reviewers approve and all a project receives.
    #[serde(default)]
    pub selection: Option<ResolvedSelection>,
    /// The cohort's size as counted at the last submission (for reviewers;
    /// absent until counted, and when the count was refused).
    #[serde(default)]
    pub cohort_size: Option<u64>,
    /// The project created from the request, once there is one.
    #[serde(default)]
    pub project: Option<ProjectId>,
}

/// What the `count_cohort` job found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CohortCount {
    /// The number of participants the filter selects.
    Counted(u64),
    /// The cohort could not be counted; the reason, for the owner (no
    /// server paths).
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestCommand {
    Update(RequestUpdate),
    SetCollaborators(BTreeSet<UserId>),
    Submit,
    Decide(DecisionInput),
    Withdraw,
    Revoke {
        reason: String,
    },
    Expire,
    /// The cohort count of submission `round` (the job's, acting as system).
    RecordCohortCount {
        round: u32,
        count: CohortCount,
    },
    /// Counts the votes of `stage` of submission `round` again, with its
    /// reviewers as they are now (the job's, acting as system, after the
    /// environment's reviewers changed). A stage whose rule can no longer
    /// pass closes as returned and the admins are alerted; one that still
    /// can is a conflict (nothing changes): only a reviewer's decision
    /// approves. A stage no longer open refuses it (it was decided).
    Retally {
        round: u32,
        stage: usize,
    },
}

impl RequestCommand {
    pub fn action(&self) -> &'static str {
        match self {
            Self::Update(_) => "request.update",
            Self::SetCollaborators(_) => "request.set_collaborators",
            Self::Submit => "request.submit",
            Self::Decide(_) => "request.decide",
            Self::Withdraw => "request.withdraw",
            Self::Revoke { .. } => "request.revoke",
            Self::Expire => "request.expire",
            Self::RecordCohortCount { .. } => "request.record_cohort_count",
            Self::Retally { .. } => "request.retally",
        }
    }
}

/// What a command needs to know besides the request itself.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext<'a> {
    pub environment: &'a Environment,
    pub actor: &'a UserId,
    pub now: Timestamp,
    /// Decisions already recorded for the current round and stage.
    pub stage_decisions: &'a [Decision],
}

/// The jobs that opening `stage` asks for: notify its reviewers now, and,
/// with a review SLA, remind them when it has waited that long.
fn stage_opened(
    env: &Environment,
    request: &RequestId,
    round: u32,
    stage: usize,
    now: Timestamp,
) -> Vec<Effect> {
    let mut effects = vec![Effect::NotifyReviewers {
        request: request.clone(),
        round,
        stage,
    }];
    if let Some(hours) = env.policies.review_sla_hours {
        effects.push(Effect::StageReminder {
            request: request.clone(),
            round,
            stage,
            at: Timestamp(now.0 + i64::from(hours) * 3_600_000),
        });
    }
    effects
}

/// The admins' alert that `stage` of `request` closed out of reach.
fn out_of_reach(env: &Environment, request: &RequestId, stage: usize, now: Timestamp) -> Effect {
    Effect::AlertAdmins {
        environment: env.id.clone(),
        raised_at: now,
        alert: crate::AdminAlert::StageOutOfReach {
            request: request.clone(),
            stage,
            stage_id: env.pipeline.stages[stage].id.clone(),
        },
    }
}

/// The result of a command: the new request, the decision to record (for
/// `decide`) and the effects to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestTransition {
    pub request: AccessRequest,
    pub decision: Option<Decision>,
    pub effects: Vec<Effect>,
}

const MAX_TITLE: usize = 300;
pub(crate) const MAX_TEXT: usize = 20_000;

/// Free text (titles, purposes, comments, descriptions): at most `max`
/// characters, no control characters but line breaks and tabs; `required`
/// also refuses blank text.
pub(crate) fn check_text(
    field: &str,
    value: &str,
    max: usize,
    required: bool,
) -> Result<(), DomainError> {
    if required && value.trim().is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(DomainError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
    {
        return Err(DomainError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

impl AccessRequest {
    /// A new draft. The environment must be published (drafts may be written
    /// during maintenance; submitting waits until it is active again).
    pub fn create(
        id: RequestId,
        environment: &Environment,
        owner: &UserId,
        new: NewRequest,
        now: Timestamp,
    ) -> Result<Self, DomainError> {
        if environment.state == EnvironmentState::Draft {
            return Err(DomainError::InvalidTransition {
                object: "environment",
                action: "create requests in",
                state: environment.state.to_string(),
            });
        }
        let request = Self {
            id,
            environment_id: environment.id.clone(),
            owner: owner.clone(),
            collaborators: new.collaborators,
            title: new.title,
            purpose: new.purpose,
            cohort: new.cohort,
            collections: new.collections,
            duration_days: new.duration_days,
            state: RequestState::Draft,
            round: 0,
            created_at: now,
            submitted_at: None,
            approved_at: None,
            expires_at: None,
            inventory_version: None,
            selection: None,
            cohort_size: None,
            project: None,
        };
        request.validate(environment, false)?;
        Ok(request)
    }

    /// Owner and collaborators.
    pub fn is_requester(&self, user: &UserId) -> bool {
        self.owner == *user || self.collaborators.contains(user)
    }

    /// The request without its data selection (cohort, collections, the
    /// resolved fields, the cohort's size), for those who may see the
    /// request but not what it asks for (see [`crate::authz::request_view`]).
    pub fn redacted(mut self) -> Self {
        self.cohort = serde_json::json!({"redacted": true});
        self.collections.clear();
        self.selection = None;
        self.cohort_size = None;
        self
    }

    /// SHA-256 (hex) of the data selection (cohort filter, collections and
    /// resolved fields): what audit events record, so the log binds what
    /// was asked and approved without showing it to its readers.
    pub fn selection_digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let selection = serde_json::json!({
            "cohort": self.cohort,
            "collections": self.collections,
            "selection": self.selection,
        });
        hex::encode(Sha256::digest(selection.to_string().as_bytes()))
    }

    /// Checks the contents against the environment's current inventory and
    /// policies; `complete` additionally requires what submission needs.
    pub fn validate(&self, environment: &Environment, complete: bool) -> Result<(), DomainError> {
        check_text("title", &self.title, MAX_TITLE, true)?;
        check_text("purpose", &self.purpose, MAX_TEXT, complete)?;
        if self.collaborators.contains(&self.owner) {
            return Err(DomainError::invalid(
                "collaborators",
                "the owner cannot also be a collaborator",
            ));
        }
        if self.collaborators.len() > 100 {
            return Err(DomainError::invalid(
                "collaborators",
                "at most 100 collaborators",
            ));
        }
        let max_days = environment.policies.max_request_days;
        if self.duration_days > max_days || (complete && self.duration_days == 0) {
            return Err(DomainError::invalid(
                "duration_days",
                format!("must be between 1 and {max_days} days (the environment's limit)"),
            ));
        }
        let inventory = environment.inventory.as_ref().ok_or_else(|| {
            DomainError::invalid("environment", "the environment has no inventory")
        })?;
        if complete && self.collections.is_empty() {
            return Err(DomainError::invalid(
                "collections",
                "select at least one data collection",
            ));
        }
        if let Some(unknown) = self
            .collections
            .iter()
            .find(|c| inventory.collection(c).is_none())
        {
            return Err(DomainError::invalid(
                "collections",
                format!("no data collection named {unknown:?}"),
            ));
        }
        let cohort_dataset = inventory.cohort().ok_or_else(|| {
            DomainError::invalid("environment", "the inventory has no cohort dataset")
        })?;
        let allowed = inventory.cohort_selection_fields(&self.collections);
        cohort::parse_restricted(&self.cohort, cohort_dataset, &allowed)?;
        Ok(())
    }

    /// Whether `stage` is the stage now open for decisions. A decision that
    /// arrives after its stage closed is a conflict, not a permission issue.
    /// Stages are named by their ids in `pipeline` (with their index).
    pub fn check_stage_open(
        &self,
        stage: usize,
        pipeline: &crate::ReviewPipeline,
    ) -> Result<(), DomainError> {
        let named = |i: usize| match pipeline.stages.get(i) {
            Some(s) => format!("stage {:?} ({i})", s.id),
            None => format!("stage {i}"),
        };
        match self.state {
            RequestState::InReview { stage: open } if open == stage => Ok(()),
            RequestState::InReview { stage: open } => Err(DomainError::Conflict(format!(
                "{} is not open for decisions: the request waits at {}",
                named(stage),
                named(open)
            ))),
            state => Err(DomainError::Conflict(format!(
                "{} is closed: the request is {}",
                named(stage),
                state.name()
            ))),
        }
    }

    fn refuse(&self, command: &RequestCommand) -> DomainError {
        DomainError::InvalidTransition {
            object: "request",
            action: command.action().trim_start_matches("request."),
            state: self.state.to_string(),
        }
    }

    /// Applies a command. Authorization is checked separately by
    /// [`crate::authorize`]; this checks state, content and the stage rules.
    pub fn apply(
        &self,
        command: RequestCommand,
        ctx: RequestContext<'_>,
    ) -> Result<RequestTransition, DomainError> {
        use RequestState as S;
        let env = ctx.environment;
        let mut next = self.clone();
        let mut effects = Vec::new();
        let mut decision = None;
        match (&command, self.state) {
            (RequestCommand::Update(update), S::Draft | S::InRevision) => {
                let update = update.clone();
                if let Some(v) = update.title {
                    next.title = v;
                }
                if let Some(v) = update.purpose {
                    next.purpose = v;
                }
                if let Some(v) = update.cohort {
                    next.cohort = v;
                }
                if let Some(v) = update.collections {
                    next.collections = v;
                }
                if let Some(v) = update.duration_days {
                    next.duration_days = v;
                }
                if next.cohort != self.cohort || next.collections != self.collections {
                    // what the last round resolved and counted no longer holds
                    next.selection = None;
                    next.cohort_size = None;
                }
                next.validate(env, false)?;
            }
            (RequestCommand::SetCollaborators(users), S::Draft | S::InRevision) => {
                next.collaborators = users.clone();
                next.validate(env, false)?;
            }
            (RequestCommand::Submit, S::Draft | S::InRevision) => {
                if env.state != EnvironmentState::Active {
                    return Err(DomainError::InvalidTransition {
                        object: "environment",
                        action: "submit requests to",
                        state: env.state.to_string(),
                    });
                }
                next.validate(env, true).map_err(DomainError::incomplete)?;
                if env.pipeline.stages.is_empty() {
                    return Err(DomainError::invalid(
                        "environment",
                        "the environment has no review stages",
                    )
                    .incomplete());
                }
                let inventory = env.inventory.as_ref().ok_or_else(|| {
                    DomainError::invalid("environment", "the environment has no inventory")
                        .incomplete()
                })?;
                next.round += 1;
                next.state = S::Checking;
                next.submitted_at = Some(ctx.now);
                next.inventory_version = Some(inventory.version);
                next.selection = Some(resolve(inventory, &next.collections)?);
                next.cohort_size = None;
                effects.push(Effect::CountCohort {
                    request: self.id.clone(),
                    round: next.round,
                });
            }
            (RequestCommand::RecordCohortCount { round, count }, S::Checking)
                if *round == self.round =>
            {
                let notify_owner = |outcome: &str| Effect::NotifyOwner {
                    request: self.id.clone(),
                    round: self.round,
                    outcome: outcome.to_owned(),
                };
                match count {
                    CohortCount::Counted(size)
                        if *size >= u64::from(env.policies.min_cohort_size) =>
                    {
                        next.state = S::InReview { stage: 0 };
                        next.cohort_size = Some(*size);
                        effects.extend(stage_opened(env, &self.id, self.round, 0, ctx.now));
                    }
                    CohortCount::Counted(_) => {
                        next.state = S::InRevision;
                        effects.push(notify_owner("cohort_too_small"));
                    }
                    CohortCount::Failed(_) => {
                        next.state = S::InRevision;
                        effects.push(notify_owner("cohort_not_counted"));
                    }
                }
            }
            (RequestCommand::Decide(input), S::InReview { stage }) => {
                self.check_stage_open(input.stage, &env.pipeline)?;
                let pipeline_stage = env.pipeline.stages.get(stage).ok_or_else(|| {
                    DomainError::Conflict(format!("the pipeline has no stage {}", stage + 1))
                })?;
                if !pipeline_stage.reviewers.contains(ctx.actor) {
                    return Err(DomainError::Conflict(format!(
                        "{} is not a reviewer of stage {:?}",
                        ctx.actor, pipeline_stage.id
                    )));
                }
                if ctx.stage_decisions.iter().any(|d| d.reviewer == *ctx.actor) {
                    return Err(DomainError::Conflict(format!(
                        "{} has already decided stage {:?} in this round",
                        ctx.actor, pipeline_stage.id
                    )));
                }
                check_text(
                    "comment",
                    &input.comment,
                    MAX_TEXT,
                    input.verdict != Verdict::Approve,
                )?;
                if input.is_final && input.verdict != Verdict::Reject {
                    return Err(DomainError::invalid(
                        "final",
                        "only a rejection can be final",
                    ));
                }
                let recorded = Decision {
                    round: self.round,
                    stage,
                    stage_id: pipeline_stage.id.clone(),
                    reviewer: ctx.actor.clone(),
                    verdict: input.verdict,
                    is_final: input.is_final,
                    comment: input.comment.clone(),
                    at: ctx.now,
                };
                let votes = ctx
                    .stage_decisions
                    .iter()
                    .chain(std::iter::once(&recorded))
                    .map(|d| (&d.reviewer, d.vote()));
                let outcome = tally(&pipeline_stage.eligible(|u| self.is_requester(u)), votes);
                let notify_owner = |outcome: &str| Effect::NotifyOwner {
                    request: self.id.clone(),
                    round: self.round,
                    outcome: outcome.to_owned(),
                };
                match outcome {
                    StageOutcome::Open => {}
                    StageOutcome::Approved if stage + 1 < env.pipeline.stages.len() => {
                        next.state = S::InReview { stage: stage + 1 };
                        effects.extend(stage_opened(env, &self.id, self.round, stage + 1, ctx.now));
                    }
                    StageOutcome::Approved => {
                        let expires_at = ctx.now.plus_days(self.duration_days);
                        next.state = S::Approved;
                        next.approved_at = Some(ctx.now);
                        next.expires_at = Some(expires_at);
                        effects.push(notify_owner("approved"));
                        effects.push(Effect::ScheduleExpiry {
                            request: self.id.clone(),
                            at: expires_at,
                        });
                    }
                    StageOutcome::Returned => {
                        next.state = S::InRevision;
                        effects.push(notify_owner("returned"));
                        // out of reach only because some reviewers may not
                        // decide: the pipeline needs the admins
                        let counting_all = ctx
                            .stage_decisions
                            .iter()
                            .chain(std::iter::once(&recorded))
                            .map(|d| (&d.reviewer, d.vote()));
                        if tally(pipeline_stage, counting_all) == StageOutcome::Open {
                            effects.push(out_of_reach(env, &self.id, stage, ctx.now));
                        }
                    }
                    StageOutcome::Rejected => {
                        next.state = S::Rejected;
                        effects.push(notify_owner("rejected"));
                    }
                }
                decision = Some(recorded);
            }
            (&RequestCommand::Retally { round, stage }, S::InReview { stage: open })
                if round == self.round && stage == open =>
            {
                let pipeline_stage = env.pipeline.stages.get(stage).ok_or_else(|| {
                    DomainError::Conflict(format!("the pipeline has no stage {}", stage + 1))
                })?;
                let votes = ctx.stage_decisions.iter().map(|d| (&d.reviewer, d.vote()));
                let eligible = pipeline_stage.eligible(|u| self.is_requester(u));
                if tally(&eligible, votes) != StageOutcome::Returned {
                    return Err(DomainError::Conflict(format!(
                        "stage {:?} can still be decided by its reviewers",
                        pipeline_stage.id
                    )));
                }
                next.state = S::InRevision;
                effects.push(Effect::NotifyOwner {
                    request: self.id.clone(),
                    round: self.round,
                    outcome: "returned".into(),
                });
                effects.push(out_of_reach(env, &self.id, stage, ctx.now));
            }
            (
                RequestCommand::Withdraw,
                S::Draft | S::Checking | S::InReview { .. } | S::InRevision,
            ) => {
                next.state = S::Withdrawn;
            }
            (RequestCommand::Revoke { reason }, S::Approved) => {
                check_text("reason", reason, MAX_TEXT, true)?;
                next.state = S::Revoked;
                effects.push(Effect::RevokeProjects {
                    request: self.id.clone(),
                });
            }
            (RequestCommand::Expire, S::Approved) => {
                if self.expires_at.is_some_and(|at| ctx.now < at) {
                    return Err(DomainError::Conflict(format!(
                        "request {} has not reached its expiry yet",
                        self.id
                    )));
                }
                next.state = S::Expired;
                effects.push(Effect::RevokeProjects {
                    request: self.id.clone(),
                });
            }
            _ => return Err(self.refuse(&command)),
        }
        Ok(RequestTransition {
            request: next,
            decision,
            effects,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;
    use crate::environment::tests::active;
    use crate::{EnvironmentCommand, Visibility};

    pub(crate) fn draft(env: &Environment) -> AccessRequest {
        AccessRequest::create(
            "req".into(),
            env,
            &"owner".into(),
            NewRequest {
                title: "Obesity and diabetes".into(),
                purpose: "Study BMI trajectories".into(),
                cohort: json!({"field": "age", "op": ">=", "value": 40}),
                collections: BTreeSet::from(["demographics".into()]),
                collaborators: BTreeSet::from(["collab".into()]),
                duration_days: 30,
            },
            Timestamp(1_000),
        )
        .unwrap()
    }

    pub(crate) struct Walk {
        pub(crate) env: Environment,
        pub(crate) request: AccessRequest,
        pub(crate) decisions: Vec<Decision>,
        pub(crate) effects: Vec<Effect>,
    }

    impl Walk {
        pub(crate) fn new() -> Self {
            let env = active();
            let request = draft(&env);
            Self {
                env,
                request,
                decisions: vec![],
                effects: vec![],
            }
        }

        pub(crate) fn run(
            &mut self,
            actor: &str,
            command: RequestCommand,
        ) -> Result<(), DomainError> {
            let actor = UserId::from(actor);
            let stage_decisions: Vec<Decision> = match self.request.state {
                RequestState::InReview { stage } => self
                    .decisions
                    .iter()
                    .filter(|d| d.round == self.request.round && d.stage == stage)
                    .cloned()
                    .collect(),
                _ => vec![],
            };
            let t = self.request.apply(
                command,
                RequestContext {
                    environment: &self.env,
                    actor: &actor,
                    now: Timestamp(10_000),
                    stage_decisions: &stage_decisions,
                },
            )?;
            self.request = t.request;
            self.decisions.extend(t.decision);
            self.effects = t.effects;
            Ok(())
        }

        /// Submits as the owner, then records the count job's outcome: a
        /// cohort of 100, enough for the default minimum.
        pub(crate) fn submit(&mut self) {
            self.run("owner", RequestCommand::Submit).unwrap();
            self.count(CohortCount::Counted(100)).unwrap();
        }

        /// Records the count job's outcome for the current round.
        pub(crate) fn count(&mut self, count: CohortCount) -> Result<(), DomainError> {
            let round = self.request.round;
            self.run("system", RequestCommand::RecordCohortCount { round, count })
        }

        pub(crate) fn decide(
            &mut self,
            reviewer: &str,
            stage: usize,
            verdict: Verdict,
            is_final: bool,
        ) -> Result<(), DomainError> {
            self.run(
                reviewer,
                RequestCommand::Decide(DecisionInput {
                    stage,
                    verdict,
                    is_final,
                    comment: if verdict == Verdict::Approve {
                        String::new()
                    } else {
                        "needs work".into()
                    },
                }),
            )
        }
    }

    fn in_state(state: &str) -> Walk {
        let mut w = Walk::new();
        let approve_all = |w: &mut Walk| {
            w.decide("rev1", 0, Verdict::Approve, false).unwrap();
            w.decide("rev2a", 1, Verdict::Approve, false).unwrap();
            w.decide("rev2b", 1, Verdict::Approve, false).unwrap();
        };
        match state {
            "draft" => {}
            "checking" => w.run("owner", RequestCommand::Submit).unwrap(),
            "in_review" => w.submit(),
            "in_revision" => {
                w.submit();
                w.decide("rev1", 0, Verdict::Return, false).unwrap();
            }
            "approved" => {
                w.submit();
                approve_all(&mut w);
            }
            "rejected" => {
                w.submit();
                w.decide("rev1", 0, Verdict::Reject, true).unwrap();
            }
            "withdrawn" => w.run("owner", RequestCommand::Withdraw).unwrap(),
            "revoked" | "expired" => {
                w.submit();
                approve_all(&mut w);
                let cmd = if state == "revoked" {
                    RequestCommand::Revoke {
                        reason: "breach".into(),
                    }
                } else {
                    RequestCommand::Expire
                };
                w.request.expires_at = Some(Timestamp(0));
                w.run("admin", cmd).unwrap();
            }
            other => panic!("{other}"),
        }
        assert_eq!(w.request.state.name(), state);
        w
    }

    fn alerts_out_of_reach(effects: &[Effect], stage: usize) -> bool {
        effects.iter().any(|e| {
            matches!(e, Effect::AlertAdmins {
                alert: crate::AdminAlert::StageOutOfReach { stage: s, .. }, ..
            } if *s == stage)
        })
    }

    /// Attack: stage 2 is quorum(2) of rev2a, rev2b, rev2c. rev2a returns,
    /// rev2b approves, and then the admins remove rev2c, the only one who
    /// could still approve. Counted again, the stage closes as returned and
    /// the admins are told; while it could still pass, counting again
    /// changes nothing; and counting again never approves.
    #[test]
    fn a_stage_counted_again_after_reviewers_change_closes_when_out_of_reach() {
        let mut w = Walk::new();
        w.submit();
        w.decide("rev1", 0, Verdict::Approve, false).unwrap();
        w.decide("rev2a", 1, Verdict::Return, false).unwrap();
        w.decide("rev2b", 1, Verdict::Approve, false).unwrap();
        let round = w.request.round;
        let retally = |stage| RequestCommand::Retally { round, stage };
        assert!(
            matches!(w.run("system", retally(1)), Err(DomainError::Conflict(_))),
            "rev2c may still approve"
        );
        assert_eq!(w.request.state, RequestState::InReview { stage: 1 });

        // a looser rule would pass on the votes cast, but only a decision approves
        let mut looser = w.env.clone();
        looser.pipeline.stages[1].rule = crate::DecisionRule::Any;
        let strict = std::mem::replace(&mut w.env, looser);
        assert!(matches!(
            w.run("system", retally(1)),
            Err(DomainError::Conflict(_))
        ));
        assert_eq!(w.request.state, RequestState::InReview { stage: 1 });
        w.env = strict;

        w.env.pipeline.stages[1]
            .reviewers
            .remove(&UserId::from("rev2c"));
        for stale in [
            RequestCommand::Retally { round, stage: 0 },
            RequestCommand::Retally {
                round: round + 1,
                stage: 1,
            },
        ] {
            assert!(matches!(
                w.run("system", stale),
                Err(DomainError::InvalidTransition { .. })
            ));
        }
        w.run("system", retally(1)).unwrap();
        assert_eq!(w.request.state, RequestState::InRevision);
        assert!(w.effects.contains(&Effect::NotifyOwner {
            request: w.request.id.clone(),
            round,
            outcome: "returned".into(),
        }));
        assert!(alerts_out_of_reach(&w.effects, 1));
        assert!(
            matches!(
                w.run("system", retally(1)),
                Err(DomainError::InvalidTransition { .. })
            ),
            "decided: a second count is refused"
        );
    }

    /// A reviewer who collaborates on the request cannot vote, so one
    /// return puts quorum(2) of the other two out of reach at once: the
    /// stage closes, and the admins are told the pipeline needs reviewers.
    /// An ordinary return alerts nobody.
    #[test]
    fn a_return_that_only_ineligible_reviewers_could_outweigh_alerts_the_admins() {
        let mut w = Walk::new();
        w.run(
            "owner",
            RequestCommand::SetCollaborators(BTreeSet::from(["rev2c".into()])),
        )
        .unwrap();
        w.submit();
        w.decide("rev1", 0, Verdict::Approve, false).unwrap();
        w.decide("rev2a", 1, Verdict::Return, false).unwrap();
        assert_eq!(w.request.state, RequestState::InRevision);
        assert!(alerts_out_of_reach(&w.effects, 1));

        let mut plain = Walk::new();
        plain.submit();
        plain.decide("rev1", 0, Verdict::Return, false).unwrap();
        assert_eq!(plain.request.state, RequestState::InRevision);
        assert!(!alerts_out_of_reach(&plain.effects, 0));
    }

    /// Every (state, command) pair; decisions use the reviewer of stage 1.
    #[test]
    fn transition_table() {
        let states = [
            "draft",
            "checking",
            "in_review",
            "in_revision",
            "approved",
            "rejected",
            "withdrawn",
            "revoked",
            "expired",
        ];
        let commands: Vec<(RequestCommand, [&str; 9])> = vec![
            (
                RequestCommand::Update(RequestUpdate {
                    title: Some("New".into()),
                    ..Default::default()
                }),
                ["draft", "-", "-", "in_revision", "-", "-", "-", "-", "-"],
            ),
            (
                RequestCommand::SetCollaborators(BTreeSet::new()),
                ["draft", "-", "-", "in_revision", "-", "-", "-", "-", "-"],
            ),
            (
                RequestCommand::Submit,
                ["checking", "-", "-", "checking", "-", "-", "-", "-", "-"],
            ),
            (
                RequestCommand::RecordCohortCount {
                    round: 1,
                    count: CohortCount::Counted(100),
                },
                ["-", "in_review", "-", "-", "-", "-", "-", "-", "-"],
            ),
            (
                RequestCommand::Decide(DecisionInput {
                    stage: 0,
                    verdict: Verdict::Approve,
                    is_final: false,
                    comment: String::new(),
                }),
                ["-", "-", "in_review", "-", "-", "-", "-", "-", "-"],
            ),
            (
                RequestCommand::Withdraw,
                [
                    "withdrawn",
                    "withdrawn",
                    "withdrawn",
                    "withdrawn",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                ],
            ),
            (
                RequestCommand::Revoke {
                    reason: "misuse".into(),
                },
                ["-", "-", "-", "-", "revoked", "-", "-", "-", "-"],
            ),
            (
                RequestCommand::Expire,
                ["-", "-", "-", "-", "expired", "-", "-", "-", "-"],
            ),
        ];
        for (command, expected) in commands {
            for (state, expected) in states.iter().zip(expected) {
                let mut w = in_state(state);
                w.request.expires_at = Some(Timestamp(0));
                let actor = match command {
                    RequestCommand::Decide(_) => "rev1",
                    RequestCommand::Revoke { .. } | RequestCommand::Expire => "admin",
                    RequestCommand::RecordCohortCount { .. } => "system",
                    _ => "owner",
                };
                let result = w.run(actor, command.clone());
                if expected == "-" {
                    assert!(
                        matches!(result, Err(DomainError::InvalidTransition { .. })),
                        "{} from {state} should be refused: {result:?}",
                        command.action()
                    );
                } else {
                    result.unwrap_or_else(|e| panic!("{} from {state}: {e}", command.action()));
                    assert_eq!(
                        w.request.state.name(),
                        expected,
                        "{} from {state}",
                        command.action()
                    );
                }
            }
        }
    }

    #[test]
    fn two_stage_review_to_approval_with_effects() {
        let mut w = Walk::new();
        w.submit();
        assert_eq!(w.request.state, RequestState::InReview { stage: 0 });
        assert_eq!(w.request.round, 1);
        assert_eq!(w.request.inventory_version, Some(1));
        assert_eq!(w.effects[0].key(), "notify_reviewers:req:1:0");
        w.decide("rev1", 0, Verdict::Approve, false).unwrap();
        assert_eq!(w.request.state, RequestState::InReview { stage: 1 });
        assert_eq!(w.effects[0].key(), "notify_reviewers:req:1:1");
        w.decide("rev2a", 1, Verdict::Approve, false).unwrap();
        assert_eq!(
            w.request.state,
            RequestState::InReview { stage: 1 },
            "quorum(2) needs two"
        );
        assert!(w.effects.is_empty());
        w.decide("rev2c", 1, Verdict::Approve, false).unwrap();
        assert_eq!(w.request.state, RequestState::Approved);
        assert_eq!(w.request.expires_at, Some(Timestamp(10_000).plus_days(30)));
        let keys: Vec<String> = w.effects.iter().map(Effect::key).collect();
        assert_eq!(keys, ["notify_owner:req:1:approved", "schedule_expiry:req"]);
        assert_eq!(w.decisions.len(), 3);
    }

    #[test]
    fn return_then_resubmit_restarts_at_stage_one_in_a_new_round() {
        let mut w = Walk::new();
        w.submit();
        w.decide("rev1", 0, Verdict::Approve, false).unwrap();
        w.decide("rev2a", 1, Verdict::Return, false).unwrap();
        assert_eq!(
            w.request.state,
            RequestState::InReview { stage: 1 },
            "one return of three"
        );
        w.decide("rev2b", 1, Verdict::Reject, false).unwrap();
        assert_eq!(
            w.request.state,
            RequestState::InRevision,
            "quorum(2) unreachable"
        );
        assert_eq!(w.effects[0].key(), "notify_owner:req:1:returned");
        w.run(
            "owner",
            RequestCommand::Update(RequestUpdate {
                purpose: Some("Clarified".into()),
                ..Default::default()
            }),
        )
        .unwrap();
        w.submit();
        assert_eq!(w.request.state, RequestState::InReview { stage: 0 });
        assert_eq!(w.request.round, 2);
        // rev1 decided in round 1; may decide again in round 2
        w.decide("rev1", 0, Verdict::Approve, false).unwrap();
        assert_eq!(w.request.state, RequestState::InReview { stage: 1 });
    }

    #[test]
    fn a_review_sla_schedules_a_reminder_for_each_stage_opened() {
        let mut w = Walk::new();
        w.env.policies.review_sla_hours = Some(48);
        w.submit();
        let keys: Vec<String> = w.effects.iter().map(Effect::key).collect();
        assert_eq!(keys, ["notify_reviewers:req:1:0", "stage_reminder:req:1:0"]);
        assert_eq!(
            w.effects[1].due_at(),
            Some(Timestamp(10_000 + 48 * 3_600_000))
        );
        w.decide("rev1", 0, Verdict::Approve, false).unwrap();
        let keys: Vec<String> = w.effects.iter().map(Effect::key).collect();
        assert_eq!(keys, ["notify_reviewers:req:1:1", "stage_reminder:req:1:1"]);
        // without an SLA there is no reminder
        let mut w = Walk::new();
        w.submit();
        assert_eq!(w.effects.len(), 1);
    }

    #[test]
    fn final_rejection_ends_the_request() {
        let mut w = Walk::new();
        w.submit();
        w.decide("rev1", 0, Verdict::Approve, false).unwrap();
        w.decide("rev2a", 1, Verdict::Reject, true).unwrap();
        assert_eq!(w.request.state, RequestState::Rejected);
        assert_eq!(w.effects[0].key(), "notify_owner:req:1:rejected");
        assert!(matches!(
            w.run("owner", RequestCommand::Submit),
            Err(DomainError::InvalidTransition { .. })
        ));
    }

    #[test]
    fn closed_stage_double_vote_and_wrong_reviewer_are_conflicts() {
        let mut w = Walk::new();
        w.submit();
        w.decide("rev1", 0, Verdict::Approve, false).unwrap();
        // stage 1 closed: deciding it again is a conflict naming the stages
        let err = w.decide("rev1", 0, Verdict::Approve, false).unwrap_err();
        assert!(
            matches!(&err, DomainError::Conflict(m) if m.contains("stage \"committee\" (0) is not open for decisions: the request waits at stage \"custodian\" (1)")),
            "{err}"
        );
        w.decide("rev2a", 1, Verdict::Approve, false).unwrap();
        let err = w.decide("rev2a", 1, Verdict::Approve, false).unwrap_err();
        assert!(
            matches!(&err, DomainError::Conflict(m) if m.contains("already decided")),
            "{err}"
        );
        let err = w.decide("rev1", 1, Verdict::Approve, false).unwrap_err();
        assert!(
            matches!(&err, DomainError::Conflict(m) if m.contains("not a reviewer")),
            "{err}"
        );
    }

    #[test]
    fn stages_close_for_good() {
        let w = in_state("approved");
        let pipeline = &w.env.pipeline;
        let err = w.request.check_stage_open(1, pipeline).unwrap_err();
        assert!(
            matches!(&err, DomainError::Conflict(m) if m.contains("stage \"custodian\" (1) is closed: the request is approved")),
            "{err}"
        );
        let w = in_state("in_review");
        assert!(w.request.check_stage_open(0, pipeline).is_ok());
        assert!(matches!(
            w.request.check_stage_open(1, pipeline),
            Err(DomainError::Conflict(m)) if m.contains("not open for decisions: the request waits at stage \"committee\" (0)")
        ));
    }

    #[test]
    fn decision_input_is_validated() {
        let mut w = Walk::new();
        w.submit();
        let err = w
            .run(
                "rev1",
                RequestCommand::Decide(DecisionInput {
                    stage: 0,
                    verdict: Verdict::Return,
                    is_final: false,
                    comment: " ".into(),
                }),
            )
            .unwrap_err();
        assert_eq!(err.field(), Some("comment"), "a return must explain itself");
        let err = w
            .run(
                "rev1",
                RequestCommand::Decide(DecisionInput {
                    stage: 0,
                    verdict: Verdict::Approve,
                    is_final: true,
                    comment: String::new(),
                }),
            )
            .unwrap_err();
        assert_eq!(err.field(), Some("final"));
        assert_eq!(w.request.state, RequestState::InReview { stage: 0 });
    }

    #[test]
    fn submission_checks_environment_and_contents() {
        let mut w = Walk::new();
        w.env = w.env.apply(EnvironmentCommand::EnterMaintenance).unwrap();
        let err = w.run("owner", RequestCommand::Submit).unwrap_err();
        assert!(
            matches!(
                err,
                DomainError::InvalidTransition {
                    object: "environment",
                    ..
                }
            ),
            "{err}"
        );

        let mut w = Walk::new();
        w.request.duration_days = 0;
        assert_eq!(
            w.run("owner", RequestCommand::Submit).unwrap_err().field(),
            Some("duration_days")
        );
        w.request.duration_days = 366;
        assert_eq!(
            w.run("owner", RequestCommand::Submit).unwrap_err().field(),
            Some("duration_days")
        );
        w.request.duration_days = 30;
        w.request.collections.clear();
        assert_eq!(
            w.run("owner", RequestCommand::Submit).unwrap_err().field(),
            Some("collections")
        );
        w.request.collections.insert("genomes".into());
        assert_eq!(
            w.run("owner", RequestCommand::Submit).unwrap_err().field(),
            Some("collections")
        );
        w.request.collections = BTreeSet::from(["demographics".into()]);
        w.request.purpose.clear();
        assert_eq!(
            w.run("owner", RequestCommand::Submit).unwrap_err().field(),
            Some("purpose")
        );
        w.request.purpose = "ok".into();
        w.request.cohort = json!({"field": "nope", "op": "is_null"});
        assert_eq!(
            w.run("owner", RequestCommand::Submit).unwrap_err().field(),
            Some("cohort.field")
        );
        assert_eq!(w.request.state, RequestState::Draft);
    }

    #[test]
    fn drafts_need_a_published_environment_and_sane_fields() {
        let env = crate::environment::tests::draft();
        let err = AccessRequest::create(
            "r".into(),
            &env,
            &"o".into(),
            NewRequest {
                title: "t".into(),
                ..Default::default()
            },
            Timestamp(0),
        )
        .unwrap_err();
        assert!(matches!(err, DomainError::InvalidTransition { .. }));
        let env = active()
            .apply(EnvironmentCommand::SetVisibility(Visibility::Public))
            .unwrap();
        let create = |new: NewRequest| {
            AccessRequest::create("r".into(), &env, &"o".into(), new, Timestamp(0))
        };
        assert_eq!(
            create(NewRequest::default()).unwrap_err().field(),
            Some("title")
        );
        let err = create(NewRequest {
            title: "x".repeat(301),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.field(), Some("title"));
        let err = create(NewRequest {
            title: "t".into(),
            collaborators: BTreeSet::from(["o".into()]),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.field(), Some("collaborators"));
        let ok = create(NewRequest {
            title: "Ünïcödé ✓ 研究".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ok.state, RequestState::Draft);
    }

    #[test]
    fn expiry_waits_for_the_date() {
        let mut w = in_state("approved");
        w.request.expires_at = Some(Timestamp(20_000));
        let err = w.run("system", RequestCommand::Expire).unwrap_err();
        assert!(matches!(err, DomainError::Conflict(_)));
        w.request.expires_at = Some(Timestamp(10_000));
        w.run("system", RequestCommand::Expire).unwrap();
        assert_eq!(w.request.state, RequestState::Expired);
        assert_eq!(w.effects[0].key(), "revoke_projects:req");
    }

    /// Submission counts the cohort before anyone reviews: a cohort below
    /// the environment's minimum (or one that cannot be counted) goes back
    /// to its owner, who is told so but not the number.
    #[test]
    fn a_cohort_below_the_minimum_is_refused_before_review() {
        let mut w = Walk::new();
        w.run("owner", RequestCommand::Submit).unwrap();
        assert_eq!(w.request.state, RequestState::Checking);
        let keys: Vec<String> = w.effects.iter().map(Effect::key).collect();
        assert_eq!(keys, ["count_cohort:req:1"], "no reviewer is told yet");
        w.count(CohortCount::Counted(9)).unwrap();
        assert_eq!(w.request.state, RequestState::InRevision);
        assert_eq!(w.request.cohort_size, None, "the small number is not kept");
        assert_eq!(w.effects[0].key(), "notify_owner:req:1:cohort_too_small");
        w.run("owner", RequestCommand::Submit).unwrap();
        w.count(CohortCount::Failed("unreadable".into())).unwrap();
        assert_eq!(w.request.state, RequestState::InRevision);
        assert_eq!(w.effects[0].key(), "notify_owner:req:2:cohort_not_counted");
        w.run("owner", RequestCommand::Submit).unwrap();
        // a count of an earlier round is stale
        let stale = w.run(
            "system",
            RequestCommand::RecordCohortCount {
                round: 2,
                count: CohortCount::Counted(50),
            },
        );
        assert!(matches!(stale, Err(DomainError::InvalidTransition { .. })));
        w.count(CohortCount::Counted(10)).unwrap();
        assert_eq!(w.request.state, RequestState::InReview { stage: 0 });
        assert_eq!(w.request.cohort_size, Some(10));
        assert_eq!(w.effects[0].key(), "notify_reviewers:req:3:0");
        // the policy decides: 0 turns the check off
        let mut w = Walk::new();
        w.env.policies.min_cohort_size = 0;
        w.run("owner", RequestCommand::Submit).unwrap();
        w.count(CohortCount::Counted(0)).unwrap();
        assert_eq!(w.request.state, RequestState::InReview { stage: 0 });
    }

    /// What reviewers approve is frozen at submission: the collections
    /// resolved to fields of the inventory version then current.
    #[test]
    fn submission_freezes_the_selection_and_an_edit_forgets_it() {
        let mut w = Walk::new();
        assert_eq!(w.request.selection, None);
        w.submit();
        let selection = w.request.selection.clone().unwrap();
        assert_eq!(selection.inventory_version, 1);
        assert_eq!(selection.collections[0].name, "demographics");
        let fields: Vec<&str> = selection.datasets[0]
            .fields
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(fields, ["sex", "age"]);
        w.decide("rev1", 0, Verdict::Return, false).unwrap();
        w.run(
            "owner",
            RequestCommand::Update(RequestUpdate {
                purpose: Some("Clarified".into()),
                ..Default::default()
            }),
        )
        .unwrap();
        assert!(
            w.request.selection.is_some(),
            "an edit of the text keeps it"
        );
        w.run(
            "owner",
            RequestCommand::Update(RequestUpdate {
                cohort: Some(json!({"field": "age", "op": ">=", "value": 50})),
                ..Default::default()
            }),
        )
        .unwrap();
        assert_eq!(w.request.selection, None, "a new cohort is resolved anew");
        assert_eq!(w.request.cohort_size, None);
    }

    /// Attacks: a cohort of one picked by the participant key; a filter on
    /// a field outside the showcase and the selected collections.
    #[test]
    fn cohort_filters_use_only_allowed_fields() {
        let env = active();
        let create = |cohort: Value, collections: &[&str]| {
            AccessRequest::create(
                "r".into(),
                &env,
                &"owner".into(),
                NewRequest {
                    title: "t".into(),
                    cohort,
                    collections: collections.iter().map(|c| (*c).to_owned()).collect(),
                    ..Default::default()
                },
                Timestamp(0),
            )
        };
        let err = create(
            json!({"field": "participant_id", "op": "=", "value": 1000001}),
            &["demographics"],
        )
        .unwrap_err();
        assert_eq!(err.field(), Some("cohort.field"));
        // bmi is in no collection and not in the showcase
        let err = create(
            json!({"field": "bmi", "op": ">", "value": 40}),
            &["demographics"],
        )
        .unwrap_err();
        assert_eq!(err.field(), Some("cohort.field"));
        // age is only allowed once its collection is selected
        let by_age = json!({"field": "age", "op": ">", "value": 40});
        assert_eq!(
            create(by_age.clone(), &["hospital"]).unwrap_err().field(),
            Some("cohort.field")
        );
        create(by_age, &["demographics"]).unwrap();
        // showcase fields always are
        create(json!({"field": "sex", "op": "=", "value": "F"}), &[]).unwrap();
        // and dropping the collection later is refused too
        let mut w = Walk::new();
        let err = w
            .run(
                "owner",
                RequestCommand::Update(RequestUpdate {
                    collections: Some(BTreeSet::from(["hospital".into()])),
                    ..Default::default()
                }),
            )
            .unwrap_err();
        assert_eq!(err.field(), Some("cohort.field"));
    }

    #[test]
    fn the_selection_digest_binds_the_selection_and_redaction_removes_it() {
        let mut w = Walk::new();
        let draft_digest = w.request.selection_digest();
        assert_eq!(draft_digest.len(), 64);
        w.submit();
        assert_ne!(
            w.request.selection_digest(),
            draft_digest,
            "resolution counts"
        );
        let mut other = w.request.clone();
        other.cohort = json!({"field": "age", "op": ">=", "value": 41});
        assert_ne!(other.selection_digest(), w.request.selection_digest());
        let redacted = w.request.clone().redacted();
        assert_eq!(redacted.cohort, json!({"redacted": true}));
        assert!(redacted.collections.is_empty());
        assert_eq!((redacted.selection, redacted.cohort_size), (None, None));
    }
}
