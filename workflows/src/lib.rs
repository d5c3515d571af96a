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
pub mod kinds;
mod notify;
mod showcase;

use tre_app::{App, System};
use tre_domain::{DomainError, ProjectCommand, ProjectId, ProjectState, RequestId, RequestState};
use tre_jobs::ClaimedJob;
use tre_jobs::{Handler, HandlerFuture, JobContext, JobError};
use tre_store::StoreError;

pub use cohort::CohortCounter;
pub use dispense::{DEFAULT_UNIT_BYTES, DEFAULT_UNIT_ROWS, DispenseConfig, DispenseWorkflow};
pub use files::FileChecker;
pub use notify::{EmailConfig, Notifier, WebhookConfig, signature};
pub use showcase::ShowcaseComputer;

/// Handlers of the request workflow.
#[derive(Debug, Clone)]
pub struct RequestWorkflow {
    app: App,
    notifier: Notifier,
}

impl RequestWorkflow {
    pub fn new(app: App, notifier: Notifier) -> Self {
        Self { app, notifier }
    }
}

/// The error of a handler given a job of a kind it does not handle (the
/// registry test keeps this from happening).
/// A state change that already happened (or can no longer happen) is done.
fn already_done(e: &StoreError) -> bool {
    matches!(e, StoreError::Domain(DomainError::InvalidTransition { .. }))
}

/// Moves a project for the job runtime; a move that already happened (or
/// can no longer happen) counts as done.
async fn move_project(
    app: &App,
    project: &ProjectId,
    command: ProjectCommand,
    trace_id: &str,
) -> Result<(), StoreError> {
    match app
        .project_command(&System::new(trace_id), project, command)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if already_done(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn expire(app: &App, job: &ClaimedJob, request: &RequestId) -> Result<(), JobError> {
    match app.expire_request(&System::new(&job.key), request).await {
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
    app: &App,
    job: &ClaimedJob,
    request: &RequestId,
    round: u32,
    stage: usize,
) -> Result<(), JobError> {
    match app
        .retally_request(&System::new(&job.key), request, round, stage)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if already_done(&e) => Ok(()),
        Err(StoreError::Domain(DomainError::Conflict(_))) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn revoke_projects(app: &App, job: &ClaimedJob, request: &RequestId) -> Result<(), JobError> {
    let system = System::new(&job.key);
    let Some(project) = app.project_of_request(&system, request).await? else {
        return Ok(());
    };
    let command = match app.request(&system, request).await?.state {
        RequestState::Expired => ProjectCommand::Expire,
        _ => ProjectCommand::Revoke,
    };
    if matches!(project.state, ProjectState::Revoked | ProjectState::Expired) {
        return Ok(());
    }
    Ok(move_project(app, &project.id, command, &job.key).await?)
}

/// Implements [`Handler`] of kind `$args` for the request workflow: the
/// arguments bound by the pattern, then the work.
macro_rules! request_job {
    ($args:ident { $($field:ident),* }, |$app:ident, $job:ident, $this:ident| $work:expr) => {
        impl Handler<kinds::$args> for RequestWorkflow {
            fn run<'a>(
                &'a self,
                args: kinds::$args,
                $job: &'a ClaimedJob,
                _ctx: &'a JobContext,
            ) -> HandlerFuture<'a, Result<(), JobError>> {
                Box::pin(async move {
                    let kinds::$args { $($field,)* .. } = args;
                    let ($app, $this) = (&self.app, self);
                    $work.await
                })
            }
        }
    };
}

request_job!(
    NotifyReviewers {
        request,
        round,
        stage
    },
    |app, job, this| { this.notifier.reviewers(app, job, &request, round, stage) }
);
request_job!(
    StageReminder {
        request,
        round,
        stage
    },
    |app, job, this| { this.notifier.remind(app, job, &request, round, stage) }
);
request_job!(
    NotifyOwner {
        request,
        round,
        outcome
    },
    |app, job, this| { this.notifier.owner(app, job, &request, round, &outcome) }
);
request_job!(AlertAdmins { environment, alert }, |app, job, this| {
    this.notifier.admins(app, job, &environment, &alert)
});
request_job!(ScheduleExpiry { request }, |app, job, _this| {
    expire(app, job, &request)
});
request_job!(RevokeProjects { request }, |app, job, _this| {
    revoke_projects(app, job, &request)
});
request_job!(
    RetallyStage {
        request,
        round,
        stage
    },
    |app, job, _this| { retally(app, job, &request, round, stage) }
);
