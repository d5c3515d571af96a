//! The request workflow as jobs: what happens after each command of an
//! access request. See `README.md` in this folder for the graph.
//!
//! | job kind | made by | does |
//! |---|---|---|
//! | `notify_reviewers` | submit; a stage approved | asks the stage's reviewers (minus requesters) to review; alerts the environment's admins when the stage cannot pass |
//! | `stage_reminder` | a stage opened, with a review SLA (due when it ends) | reminds the stage's reviewers who have not decided, if the stage is still open |
//! | `notify_owner` | a round's outcome | tells owner and collaborators: approved, returned, rejected, cohort too small or not counted |
//! | `count_cohort` | submit | counts the cohort from the environment's source; to review, or back to the owner below the minimum |
//! | `alert_admins` | a member change that leaves an approved request's owner unauthorized; reviewers changed on a stage where requests wait; a stage closed out of reach | tells the environment's admins |
//! | `schedule_expiry` | approval (due at the end date) | moves the request to `expired` |
//! | `revoke_projects` | revocation, expiry | revokes the request's project (which queues `deprovision`) |
//! | `retally_stage` | reviewers changed on a stage where the request waits | counts the stage's votes again: out of reach, it closes as returned and the admins are alerted |
//! | `compute_showcase` | an inventory version becomes current (publish, reactivate) | computes its showcase aggregates from the Parquet files into SQL |
//! | `check_files` | an admin uploads a file inventory | checks every row against the source (object, size, entity in the cohort dataset), computes missing SHA-256s, then makes it part of a new inventory version or rejects it with its first bad rows |
//!
//! Every handler is idempotent: inbox rows and deliveries are keyed by the
//! job key, and state changes that already happened are treated as done.

mod cohort;
mod dispense;
mod files;
mod notify;
mod showcase;

use std::future::Future;
use std::pin::Pin;

use serde::Deserialize;
use tre_domain::{
    DomainError, Effect, ProjectCommand, ProjectId, ProjectState, RequestId, RequestState,
};
use tre_jobs::{JobContext, JobError, JobHandler};
use tre_store::{ClaimedJob, Store, StoreError};

pub use cohort::CohortCounter;
pub use dispense::{DEFAULT_UNIT_BYTES, DEFAULT_UNIT_ROWS, DispenseConfig, DispenseWorkflow};
pub use files::FileChecker;
pub use notify::{EmailConfig, Notifier, WebhookConfig, signature};
pub use showcase::ShowcaseComputer;

/// Handlers of the request workflow.
#[derive(Debug, Clone)]
pub struct RequestWorkflow {
    store: Store,
    notifier: Notifier,
}

impl RequestWorkflow {
    pub fn new(store: Store, notifier: Notifier) -> Self {
        Self { store, notifier }
    }

    pub const KINDS: [&'static str; 7] = [
        "notify_reviewers",
        "stage_reminder",
        "notify_owner",
        "alert_admins",
        "schedule_expiry",
        "revoke_projects",
        "retally_stage",
    ];
}

/// The error of a handler given a job of a kind it does not handle (the
/// registry test keeps this from happening).
pub(crate) fn not_handled(effect: &Effect, what: &str) -> JobError {
    JobError::Permanent(format!("{} is not {what}", effect.kind()))
}

fn payload(job: &ClaimedJob) -> Result<Effect, JobError> {
    Effect::deserialize(&job.payload)
        .map_err(|e| JobError::Permanent(format!("unreadable job payload: {e}")))
}

/// A state change that already happened (or can no longer happen) is done.
fn already_done(e: &StoreError) -> bool {
    matches!(e, StoreError::Domain(DomainError::InvalidTransition { .. }))
}

/// Moves a project for the job runtime; a move that already happened (or
/// can no longer happen) counts as done.
async fn move_project(
    store: &Store,
    project: &ProjectId,
    command: ProjectCommand,
    trace_id: &str,
) -> Result<(), StoreError> {
    match store.project_command(project, command, trace_id).await {
        Ok(_) => Ok(()),
        Err(e) if already_done(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn expire(store: &Store, job: &ClaimedJob, request: &RequestId) -> Result<(), JobError> {
    match store.expire_request(request, &job.key).await {
        Ok(_) => Ok(()),
        Err(e) if already_done(&e) => Ok(()),
        // not yet due (clocks differ): try again later
        Err(StoreError::Domain(DomainError::Conflict(m))) => Err(JobError::Transient(m)),
        Err(e) => Err(e.into()),
    }
}

/// Counts a stage's votes again; a stage that can still pass, or that was
/// decided meanwhile, leaves nothing to do.
async fn retally(
    store: &Store,
    job: &ClaimedJob,
    request: &RequestId,
    round: u32,
    stage: usize,
) -> Result<(), JobError> {
    match store.retally_request(request, round, stage, &job.key).await {
        Ok(_) => Ok(()),
        Err(e) if already_done(&e) => Ok(()),
        Err(StoreError::Domain(DomainError::Conflict(_))) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn revoke_projects(
    store: &Store,
    job: &ClaimedJob,
    request: &RequestId,
) -> Result<(), JobError> {
    let Some(project) = store.system_project_of_request(request).await? else {
        return Ok(());
    };
    let command = match store.system_request(request).await?.state {
        RequestState::Expired => ProjectCommand::Expire,
        _ => ProjectCommand::Revoke,
    };
    if matches!(project.state, ProjectState::Revoked | ProjectState::Expired) {
        return Ok(());
    }
    Ok(move_project(store, &project.id, command, &job.key).await?)
}

impl JobHandler for RequestWorkflow {
    fn kinds(&self) -> Vec<&'static str> {
        Self::KINDS.to_vec()
    }

    fn handle<'a>(
        &'a self,
        job: &'a ClaimedJob,
        _ctx: &'a JobContext,
    ) -> Pin<Box<dyn Future<Output = Result<(), JobError>> + Send + 'a>> {
        Box::pin(async move {
            let store = &self.store;
            match payload(job)? {
                Effect::NotifyReviewers {
                    request,
                    round,
                    stage,
                } => {
                    self.notifier
                        .reviewers(store, job, &request, round, stage)
                        .await
                }
                Effect::StageReminder {
                    request,
                    round,
                    stage,
                    ..
                } => {
                    self.notifier
                        .remind(store, job, &request, round, stage)
                        .await
                }
                Effect::NotifyOwner {
                    request,
                    round,
                    outcome,
                } => {
                    self.notifier
                        .owner(store, job, &request, round, &outcome)
                        .await
                }
                Effect::AlertAdmins {
                    environment, alert, ..
                } => self.notifier.admins(store, job, &environment, &alert).await,
                Effect::ScheduleExpiry { request, .. } => expire(store, job, &request).await,
                Effect::RevokeProjects { request } => revoke_projects(store, job, &request).await,
                Effect::RetallyStage {
                    request,
                    round,
                    stage,
                    ..
                } => retally(store, job, &request, round, stage).await,
                other => Err(not_handled(&other, "a request workflow job")),
            }
        })
    }
}
